"""Datasets for the DataLoader tests, in a module of their own that spawned workers can import."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from reproducible_block import (
    ReproducibleBlock,
    set_seed,
    torch_generator,
)

LENGTH = 16
DRAWS = 3

Row = dict[str, Any]


class AugmentedSamples(Dataset[Row]):
    """Each sample draws an augmentation in ``ReproducibleBlock(("sample", index))`` from torch,
    NumPy's global RNG and Python ``random``, then one value from each global generator outside
    any block; it also reports which worker loaded it and that worker's torch seed.
    ``per_rank=True`` draws the augmentation in a per-rank block instead."""

    def __init__(self, per_rank: bool = False) -> None:
        self.per_rank = per_rank

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, index: int) -> Row:
        with ReproducibleBlock(("sample", index), per_rank=self.per_rank):
            augmentation = torch.cat(
                [
                    torch.rand(DRAWS, dtype=torch.float64),
                    torch.from_numpy(np.random.rand(DRAWS)),
                    torch.tensor([random.random() for _ in range(DRAWS)], dtype=torch.float64),
                ]
            )
        outside = torch.tensor(
            [torch.rand((), dtype=torch.float64).item(), np.random.rand(), random.random()],
            dtype=torch.float64,
        )
        info = get_worker_info()
        return {
            "index": index,
            "worker": -1 if info is None else info.id,
            # The seed the DataLoader gave this worker (base seed + worker id).
            "torch_seed": -1 if info is None else info.seed,
            "augmentation": augmentation,
            "outside": outside,
        }


def unbatch(batches: Iterable[Row]) -> list[Row]:
    """The samples of collated batches, in the order the loader yielded them."""
    samples = []
    for batch in batches:
        for position, index in enumerate(batch["index"].tolist()):
            samples.append(
                {
                    "index": index,
                    "worker": int(batch["worker"][position]),
                    "torch_seed": int(batch["torch_seed"][position]),
                    "augmentation": batch["augmentation"][position],
                    "outside": batch["outside"][position],
                }
            )
    return samples


class SeedsInWorker(Dataset[torch.Tensor]):
    """Each sample calls ``set_seed(index)`` in the worker, then draws: set_seed in a DataLoader
    worker must not communicate, even when the parent has a process group."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        set_seed(index)
        return torch.rand(2, dtype=torch.float64)


class PerWorkerStreams(IterableDataset[tuple[int, float]]):
    """Each worker iterates the whole dataset: (worker id, a draw), from a decorated
    ``__iter__`` whose block folds in the worker id."""

    @ReproducibleBlock("worker-stream", per_worker=True)
    def __iter__(self) -> Iterator[tuple[int, float]]:
        yield from _draws()


class SharedStreams(IterableDataset[tuple[int, float]]):
    """The same, without ``per_worker``: every worker draws the same stream."""

    @ReproducibleBlock("worker-stream")
    def __iter__(self) -> Iterator[tuple[int, float]]:
        yield from _draws()


def _draws() -> Iterator[tuple[int, float]]:
    info = get_worker_info()
    for _ in range(DRAWS):
        yield (0 if info is None else info.id), torch.rand(()).item()


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Inputs drawn per sample in ``ReproducibleBlock(("sample", index))``, with their sum as
    the target: a tiny regression task for the Lightning and accelerate recipes."""

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The sample itself (data, not augmentation): the same every epoch, on purpose.
        with ReproducibleBlock(("sample", index), replay=True):
            inputs = torch.randn(4)
        return inputs, inputs.sum(0, keepdim=True)


class EpochShuffle(Sampler[int]):
    """A shuffle per epoch, from ``torch_generator(("data-order", epoch))``:
    ``set_epoch(epoch)`` picks the epoch (Lightning calls it before every epoch)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        generator = torch_generator(("data-order", self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())


class EpochSamples(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs in the epoch's order: the epoch reaches every worker with
    each index, persistent workers included (a sampler runs in the main process)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch_generator(("data-order", self.epoch))
        order = torch.randperm(self.length, generator=generator).tolist()
        return iter([(self.epoch, index) for index in order])


class EpochAugmented(Dataset[tuple[int, int, torch.Tensor]]):
    """Augments sample ``index`` of ``epoch`` in ``ReproducibleBlock(("sample", epoch, index))``.

    Given an (epoch, index) pair it uses that epoch; given a plain index it uses ``self.epoch``,
    which the main process may set, but which persistent workers never see change."""

    def __init__(self) -> None:
        self.epoch = 0

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[int, int, torch.Tensor]:
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        with ReproducibleBlock(("sample", epoch, index)):
            return epoch, index, torch.rand(2)


class InitialSeeds(Dataset[int]):
    """PyTorch's own test pattern: each sample is the worker's ``torch.initial_seed()``."""

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, index: int) -> int:
        return torch.initial_seed()
