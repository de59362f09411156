"""Datasets for the DataLoader tests, in a module of their own that spawned workers can import."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from reproducible_block import ReproducibleBlock, set_seed

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
            augmentation = torch.cat([
                torch.rand(DRAWS, dtype=torch.float64),
                torch.from_numpy(np.random.rand(DRAWS)),
                torch.tensor([random.random() for _ in range(DRAWS)], dtype=torch.float64),
            ])
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
            samples.append({
                "index": index,
                "worker": int(batch["worker"][position]),
                "torch_seed": int(batch["torch_seed"][position]),
                "augmentation": batch["augmentation"][position],
                "outside": batch["outside"][position],
            })
    return samples


class SeedsInWorker(Dataset[torch.Tensor]):
    """Each sample calls ``set_seed(index)`` in the worker, then draws: set_seed in a DataLoader
    worker must not communicate, even when the parent has a process group."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        set_seed(index)
        return torch.rand(2, dtype=torch.float64)
