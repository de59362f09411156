"""The data-loading guide's recipes for the cases that used to go wrong silently.

Persistent workers and per-epoch augmentations, ``seed_worker`` under a forkserver started with
another root, NumPy generators created inside a block, and model initialisation on the meta
device. Real DataLoader workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from reproducible_block import (
    ReproducibleBlock,
    numpy_generator,
    register_generator,
    seed_worker,
    set_seed,
    unregister_generator,
)
from tests._worker_datasets import LENGTH, AugmentedSamples, EpochAugmented, EpochSamples, unbatch

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

Seen = dict[tuple[int, int], torch.Tensor]


def epochs(loader: DataLoader[Any], count: int, first: int = 0) -> Seen:
    """{(epoch, index): augmentation} over ``count`` epochs, setting the epoch as a loop does."""
    seen: Seen = {}
    for epoch in range(first, first + count):
        loader.dataset.epoch = epoch  # type: ignore[attr-defined]
        if isinstance(loader.sampler, EpochSamples):
            loader.sampler.set_epoch(epoch)
        for epochs_seen, indices, values in loader:
            for at, index in enumerate(indices.tolist()):
                seen[(int(epochs_seen[at]), index)] = values[at]
    return seen


def persistent(**options: Any) -> DataLoader[Any]:
    return DataLoader(
        EpochAugmented(),
        batch_size=4,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context="fork",
        worker_init_fn=seed_worker,
        timeout=120,
        **options,
    )


@pytest.mark.slow
def test_an_epoch_set_on_the_dataset_never_reaches_persistent_workers() -> None:
    # Shows the gap: the workers keep the dataset as it was when they started.
    set_seed(0)
    seen = epochs(persistent(shuffle=False), 2)
    assert sorted(seen) == [(0, index) for index in range(LENGTH)]  # epoch 1 is missing


@pytest.mark.slow
def test_a_sampler_that_yields_the_epoch_reaches_persistent_workers() -> None:
    set_seed(0)
    seen = epochs(persistent(sampler=EpochSamples(LENGTH)), 3)
    expected = epochs(DataLoader(EpochAugmented(), batch_size=4, sampler=EpochSamples(LENGTH)), 3)
    assert (
        sorted(seen)
        == sorted(expected)
        == [(epoch, index) for epoch in range(3) for index in range(LENGTH)]
    )
    assert all(torch.equal(seen[key], expected[key]) for key in expected)
    assert not torch.equal(seen[(0, 5)], seen[(1, 5)])  # a new augmentation every epoch
    resumed = epochs(persistent(sampler=EpochSamples(LENGTH)), 1, first=2)
    assert all(torch.equal(resumed[key], seen[key]) for key in resumed)


@pytest.mark.slow
def test_seed_worker_under_a_forkserver_sees_the_root_of_each_loader() -> None:
    # The forkserver starts with the first loader's root; the second loader's workers fork from
    # it, so their root must come from seed_worker, pickled when the loader starts them.
    def augmentations(seed: int, num_workers: int) -> dict[int, torch.Tensor]:
        set_seed(seed)
        workers = {}
        if num_workers:
            workers = {
                "multiprocessing_context": "forkserver",
                "worker_init_fn": seed_worker,
                "timeout": 120,
            }
        loader = DataLoader(AugmentedSamples(), batch_size=4, num_workers=num_workers, **workers)
        return {sample["index"]: sample["augmentation"] for sample in unbatch(loader)}

    for seed in (1, 2):
        expected = augmentations(seed, 0)
        got = augmentations(seed, 2)
        assert all(torch.equal(got[index], expected[index]) for index in range(LENGTH))
    assert not torch.equal(augmentations(1, 0)[0], augmentations(2, 0)[0])


def test_a_numpy_generator_created_inside_a_block_is_not_managed() -> None:
    set_seed(0)

    def draw(make: Any) -> float:
        with ReproducibleBlock("augment"):
            return float(make().random())

    assert draw(np.random.default_rng) != draw(np.random.default_rng)  # fresh OS entropy
    from_block = lambda: numpy_generator("augment")  # noqa: E731
    assert draw(from_block) == draw(from_block)
    mine = np.random.default_rng()
    register_generator(mine, name="mine")
    try:
        set_seed(0)
        assert draw(lambda: mine) == draw(lambda: mine)
    finally:
        unregister_generator("mine")


def test_meta_device_init_matches_when_reset_parameters_runs_in_the_same_block() -> None:
    set_seed(0)

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    with ReproducibleBlock("model-init"):
        eager = build()
    with torch.device("meta"):
        model = build()  # no memory, no draws
    model = model.to_empty(device="cpu")
    with ReproducibleBlock("model-init"):
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
    for mine, theirs in zip(model.parameters(), eager.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    reset_outside = build().to("meta").to_empty(device="cpu")
    for module in reset_outside.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()  # outside the block: the caller's stream
    assert not torch.equal(reset_outside[0].weight, eager[0].weight)
