"""The data order of ``ReproducibleSampler``, pinned as literals.

The order of epoch ``e`` is ``torch.randperm(n, generator=torch_generator((key, e)))``: no new
derivation, so it moves only with ``DERIVATION_VERSION`` (and with ``torch.randperm`` itself).
These values were computed once and written here by hand; the tests never recompute them.
"""

from __future__ import annotations

import pytest
import torch

from reproducible_block import ReproducibleSampler, set_seed, torch_generator
from reproducible_block._blocks.states import clear_cache

#: (root seed, key, epoch) -> the global order of 12 samples.
GOLDEN = [
    (0, "order", 0, [1, 4, 3, 0, 11, 5, 7, 9, 10, 6, 2, 8]),
    (0, "order", 1, [0, 8, 11, 6, 7, 4, 1, 5, 10, 3, 9, 2]),
    (0, ("order", "val"), 0, [4, 11, 9, 6, 10, 3, 8, 5, 2, 0, 1, 7]),
    (2**32 - 1, "order", 7, [7, 3, 0, 6, 2, 4, 5, 10, 9, 11, 1, 8]),
]


@pytest.mark.parametrize(("seed", "key", "epoch", "expected"), GOLDEN)
def test_the_order_of_an_epoch_is_pinned(
    seed: int, key: str | tuple[str, str], epoch: int, expected: list[int]
) -> None:
    set_seed(seed)
    clear_cache()
    sampler = ReproducibleSampler(12, key)
    sampler.set_epoch(epoch)
    assert [int(index) for index in sampler] == expected
    assert sampler.order(epoch) == expected


@pytest.mark.parametrize(("seed", "key", "epoch", "expected"), GOLDEN)
def test_the_order_is_the_documented_torch_generator_permutation(
    seed: int, key: str | tuple[str, str], epoch: int, expected: list[int]
) -> None:
    set_seed(seed)
    epoch_key = (*key, epoch) if isinstance(key, tuple) else (key, epoch)
    generator = torch_generator(epoch_key)
    assert torch.randperm(12, generator=generator).tolist() == expected
