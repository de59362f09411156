"""Module-level decorated functions and classes, importable by other processes (pickling tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from reproducible_block import ReproducibleBlock
from reproducible_block.compat import Reproducible_Block


@ReproducibleBlock("noise")
def noise(size: int) -> torch.Tensor:
    """Draws ``size`` numbers in the block "noise"."""
    return torch.rand(size)


@ReproducibleBlock("init")
class Net(torch.nn.Module):
    """A model whose construction runs in the block "init"."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, width)

    @ReproducibleBlock("forward-noise")
    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


class Wider(Net):
    """A subclass: its own __init__ runs outside the block, super().__init__() inside it."""

    def __init__(self) -> None:
        super().__init__(width=6)
        self.extra = torch.nn.Linear(2, 2)  # drawn from the caller's stream


class Same(Net):
    """A subclass without an __init__ of its own: construction runs in the block."""


@Reproducible_Block(block_seed=3)
def legacy_noise() -> torch.Tensor:
    """Draws in 0.0.1's block 3."""
    return torch.rand(2)


@ReproducibleBlock("step-noise", key_from="step")
def step_noise(step: int) -> torch.Tensor:
    """Draws in the block ("step-noise", step)."""
    return torch.rand(2)


@ReproducibleBlock("noise-table")
class NoiseTable(Dataset[torch.Tensor]):
    """A decorated Dataset class: its table is drawn at construction, in the block; each sample
    adds a draw of its own block."""

    def __init__(self, length: int = 8) -> None:
        self.table = torch.rand(length)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> torch.Tensor:
        with ReproducibleBlock(("noise-sample", index)):
            return self.table[index] + torch.rand(())


@ReproducibleBlock("collate-jitter")
def jitter_collate(batch: list[torch.Tensor]) -> torch.Tensor:
    """A decorated collate_fn: every batch gets the jitter of the block "collate-jitter"."""
    return torch.stack(batch) + torch.rand(len(batch))


@ReproducibleBlock("spawned", key_from="rank")
def spawned_draws(rank: int, folder: str) -> None:
    """The entry of torch.multiprocessing.spawn: draws in ("spawned", rank), saved to a file."""
    torch.save(torch.rand(3), Path(folder) / f"rank-{rank}.pt")
