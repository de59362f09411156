"""When two runs do not match: find the block, the stream and the op where they part.

Run: python examples/when_runs_do_not_match.py   (guide: docs/guides/when-runs-do-not-match.md)

1. Two runs of a small training script are recorded with a block ledger; in the second, an
   augmentation was edited so that one sample draws one more random number.
2. The run diff names that sample's block, and how many numbers each run drew there.
3. find_nondeterminism names the first op whose outputs differ inside a model that uses an
   unseeded NumPy generator, with its module and line.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block.diagnostics import (
    diff_runs,
    find_nondeterminism,
    ledger_note,
    record_blocks,
)


def augment(image: torch.Tensor, index: int, edited: bool) -> torch.Tensor:
    """Per-sample augmentation, in a block of its own: its numbers depend only on the sample."""
    with ReproducibleBlock(("sample", index)):
        image = image + 0.1 * torch.randn_like(image)
        if random.random() < 0.5:
            image = image.flip(-1)
        if edited and index == 13 and torch.rand(()) < 2.0:  # the edit: one more draw
            image = image.flip(-2)
    return image


def train(ledger_path: Path, edited: bool) -> float:
    """A tiny training run, recorded: every block exit, and the loss of every step."""
    set_seed(0)
    with record_blocks(ledger_path):
        with ReproducibleBlock("init"):
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        images = torch.linspace(0, 1, 32 * 3 * 8 * 8).reshape(32, 3, 8, 8)
        labels = torch.arange(32) % 2
        for step in range(4):
            batch = torch.stack(
                [augment(images[i], i, edited) for i in range(step * 8, step * 8 + 8)]
            )
            with ReproducibleBlock(("train", step)):
                loss = torch.nn.functional.cross_entropy(
                    model(batch), labels[step * 8 : step * 8 + 8]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                ledger_note("loss", loss)
    return loss.item()


class Jitter(torch.nn.Module):
    """A layer with a bug: its noise comes from an unseeded NumPy generator."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()  # not seeded by set_seed: new numbers every run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_numpy(self.rng.normal(0, 0.01, x.shape).astype(np.float32))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        train(runs / "a" / "ledger.jsonl", edited=False)
        train(runs / "b" / "ledger.jsonl", edited=True)
        found = diff_runs(runs / "a" / "ledger.jsonl", runs / "b" / "ledger.jsonl")
        print("1. the run diff:")
        print("  ", found)
        print(
            f"   (same from a shell: python -m reproducible_block diff "
            f"{runs / 'a' / 'ledger.jsonl'} {runs / 'b' / 'ledger.jsonl'})"
        )

    set_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Jitter(), torch.nn.ReLU())
    print("2. the first op that differs between two calls:")
    print("  ", find_nondeterminism(model, torch.ones(2, 4)))


if __name__ == "__main__":
    main()
