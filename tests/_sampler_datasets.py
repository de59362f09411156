"""Datasets for the sampler tests, in a module that spawned workers and ranks can import."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

LENGTH = 14


class Augmented(Dataset[tuple[int, torch.Tensor]]):
    """A torchvision-style dataset: the augmentation draws from the global generators inside
    ``__getitem__``, which never sees a key."""

    def __len__(self) -> int:
        return LENGTH

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        draws = [torch.rand(()).item(), float(np.random.rand()), random.random()]
        return index, torch.tensor(draws, dtype=torch.float64)


class Stream(IterableDataset[tuple[int, float]]):
    """Four draws per pass, tagged with the worker that made them."""

    def __iter__(self) -> Iterator[tuple[int, float]]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        for _ in range(4):
            yield worker, torch.rand(()).item()
