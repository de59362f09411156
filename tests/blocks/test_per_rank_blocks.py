"""per_rank=True: a stream per global rank (rank 0 outside torch.distributed), off by default;
per_rank=<process group>: a stream per rank within the group.

The 2-rank behaviour (shared by default, different per rank when asked) is checked under a real
gloo group in test_distributed_rng_state.py, process groups with 4 ranks in test_distributed.py;
here a real group of one rank in this process.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    set_seed,
    torch_generator,
)


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


@pytest.mark.parametrize("bad", [1, 0, None, "group", np.bool_(True), [0, 1]])
def test_per_rank_refuses_anything_but_a_flag_or_a_group(bad: object) -> None:
    with pytest.raises(ReproducibleBlockTypeError) as info:
        ReproducibleBlock("x", per_rank=bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert "per_rank must be True, False or a torch.distributed process group" in message
    assert repr(bad) in message


def draw(block: ReproducibleBlock) -> torch.Tensor:
    with block:
        return torch.rand(4)


@pytest.mark.usefixtures("single_rank_group")
def test_a_group_folds_the_rank_within_it_as_true_folds_the_global_rank() -> None:
    set_seed(0)
    group = dist.new_group([0])
    block = ReproducibleBlock("dropout", per_rank=group)
    assert block.per_rank is group
    assert repr(block) == "ReproducibleBlock('dropout', per_rank=<process group>)"
    # Rank 0 of the group gets the stream of global rank 0 with per_rank=True.
    assert torch.equal(draw(block), draw(ReproducibleBlock("dropout", per_rank=True)))
    assert not torch.equal(draw(block), draw(ReproducibleBlock("dropout")))
    loader_order = torch_generator("dropout", per_rank=group)
    assert torch.equal(
        torch.rand(4, generator=loader_order),
        torch.rand(4, generator=torch_generator("dropout", per_rank=True)),
    )


@pytest.mark.usefixtures("single_rank_group")
def test_copies_share_the_group_and_pickles_are_refused() -> None:
    set_seed(0)
    group = dist.new_group([0])
    block = ReproducibleBlock("dropout", per_rank=group)
    for clone in (copy.copy(block), copy.deepcopy(block)):
        assert clone is not block
        assert clone.per_rank is group
        assert torch.equal(draw(clone), draw(block))
    with pytest.raises(ReproducibleBlockTypeError, match=r"cannot pickle.*per_rank=True"):
        pickle.dumps(block)
    shared = ReproducibleBlock("dropout", per_rank=True)  # flags still pickle and copy as before
    assert pickle.loads(pickle.dumps(shared)).per_rank is True
    assert copy.deepcopy(shared).per_rank is True


@pytest.mark.usefixtures("single_rank_group")
def test_a_rank_outside_the_group_is_refused_at_entry() -> None:
    set_seed(0)
    outside = dist.GroupMember.NON_GROUP_MEMBER  # what dist.new_group returns to non-members
    block = ReproducibleBlock("dropout", per_rank=outside)  # built alike on every rank
    before = torch.get_rng_state()
    with pytest.raises(ReproducibleBlockValueError, match=r"global rank 0.*not a member"):
        draw(block)
    with pytest.raises(ReproducibleBlockValueError, match="not a member"):
        torch_generator("dropout", per_rank=outside)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_group_needs_its_process_group(tmp_path: Path, single_rank_group: None) -> None:
    set_seed(0)
    group = dist.new_group([0])
    block = ReproducibleBlock("dropout", per_rank=group)
    dist.destroy_process_group()
    try:
        with pytest.raises(ReproducibleBlockValueError, match="no initialised process group"):
            draw(block)
    finally:  # a new default group, which the fixture destroys
        dist.init_process_group(
            "gloo",
            init_method=f"file://{tmp_path}/again",
            rank=0,
            world_size=1,
            timeout=timedelta(seconds=60),
        )
    with pytest.raises(ReproducibleBlockValueError, match="gives no rank of this process"):
        draw(block)


@pytest.mark.parametrize(
    ("variable", "expected"),
    [(None, None), ("2", 2), ("", None), ("-1", None), ("x", None), ("²", None)],
)
def test_the_launchers_rank_is_read_one_way(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, expected: int | None
) -> None:
    # RANK alone (torchrun also sets WORLD_SIZE, other launchers may not): the streams, worker
    # seeding and the ledger's file names all read it through launcher_rank().
    from reproducible_block._support.distributed import known_rank, launcher_rank, process_rank

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    if variable is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", variable)
    assert launcher_rank() == known_rank() == expected
    assert process_rank() == (expected or 0)


def test_collectives_run_on_a_group_of_one(single_rank_group: None) -> None:
    from reproducible_block import get_rng_state, load_rng_state
    from reproducible_block._support.distributed import all_gather_objects

    assert all_gather_objects("mine") == ["mine"]
    set_seed(3)
    states = get_rng_state()
    first = torch.rand(2)
    load_rng_state(states)  # checked, installed, then agreed on with the (one) peer
    assert torch.equal(first, torch.rand(2))
