"""per_rank=True: a stream per global rank (rank 0 outside torch.distributed), off by default.

The 2-rank behaviour (shared by default, different per rank when asked) is checked under a real
gloo group in test_distributed_rng_state.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from reproducible_block import ReproducibleBlock, ReproducibleBlockTypeError, set_seed


def test_a_per_rank_stream_is_reproducible_and_not_the_shared_one() -> None:
    set_seed(0)
    with ReproducibleBlock("dropout", per_rank=True):
        first = torch.rand(4)
    torch.rand(10)
    with ReproducibleBlock("dropout", per_rank=True):
        again = torch.rand(4)
    with ReproducibleBlock("dropout"):
        shared = torch.rand(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, shared)


def test_decorated_functions_and_generators_take_per_rank_too() -> None:
    set_seed(0)
    with ReproducibleBlock("augment", per_rank=True):
        expected = torch.rand(2)

    @ReproducibleBlock("augment", per_rank=True)
    def draw() -> torch.Tensor:
        return torch.rand(2)

    @ReproducibleBlock("augment", per_rank=True)
    def draws() -> Iterator[torch.Tensor]:
        yield torch.rand(2)

    assert torch.equal(draw(), expected)
    assert torch.equal(next(draws()), expected)


def test_per_rank_shows_in_repr_and_is_checked() -> None:
    block = ReproducibleBlock("x", per_rank=True)
    assert block.per_rank
    assert not ReproducibleBlock("x").per_rank
    assert repr(block) == "ReproducibleBlock('x', per_rank=True)"
    with pytest.raises(ReproducibleBlockTypeError, match="per_rank must be True or False"):
        ReproducibleBlock("x", per_rank=1)  # type: ignore[arg-type]
