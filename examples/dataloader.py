"""Data loading, isolated: a shuffle a validation pass cannot move, augmentations workers cannot.

1. Creating a validation iterator draws a seed from torch's global generator (pytorch#80119), so
   the next training epoch is shuffled differently. A loader generator from
   ``torch_generator(("data", epoch))`` gives the order its own stream.
2. An augmentation drawn inside ``ReproducibleBlock(("sample", index))`` in ``__getitem__`` is
   the same for a sample whatever ``num_workers``, batch size or order;
   ``worker_init_fn=seed_worker`` gives the workers the root (and per-worker NumPy seeds).

Run: python examples/dataloader.py (exits non-zero if either property fails).
"""

from __future__ import annotations

import hashlib
import random
import sys
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reproducible_block import (
    ReproducibleBlock,
    seed_worker,
    set_seed,
    torch_generator,
)

SAMPLES = 16


class NoisySamples(Dataset[tuple[int, torch.Tensor]]):
    """Sample ``index`` plus noise from torch, NumPy and Python ``random``: an augmentation."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        with ReproducibleBlock(("sample", index)):
            noise = torch.randn(2) + float(np.random.uniform()) + random.random()
        return index, index + noise


def epoch_orders(validation_pass: bool, loader_generator: bool) -> list[list[int]]:
    """The training order of two epochs, with or without a validation pass after each."""
    set_seed(0)
    generator = torch.Generator() if loader_generator else None
    train = DataLoader(range(10), batch_size=5, shuffle=True, generator=generator)
    orders = []
    for epoch in range(2):
        if generator is not None:
            generator.set_state(torch_generator(("data", epoch)).get_state())
        orders.append([index for batch in train for index in batch.tolist()])
        if validation_pass:
            for _ in DataLoader(range(4), batch_size=2):  # unshuffled, yet it draws a seed
                pass
    return orders


def augmentation_digest(num_workers: int, batch_size: int, shuffle: bool) -> str:
    """A short digest of every sample's augmentation, in index order."""
    set_seed(0)
    loader = DataLoader(
        NoisySamples(),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
    )
    by_index = {}
    for indices, values in loader:
        for index, value in zip(indices.tolist(), values, strict=True):
            by_index[index] = value
    data = torch.stack([by_index[index] for index in range(SAMPLES)]).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:12]


def main() -> int:
    # Four workers on a two-core machine: torch warns, but the point here is the count.
    warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
    print("Epoch 2 training order (10 samples, shuffled)")
    print(f"  {'':24}{'no validation pass':24}{'validation pass after epoch 1':32}same")
    failures = []
    for label, library in (("global RNG (plain)", False), ("loader generator", True)):
        plain = epoch_orders(validation_pass=False, loader_generator=library)[1]
        validated = epoch_orders(validation_pass=True, loader_generator=library)[1]
        same = plain == validated
        if same != library:
            failures.append(label)
        print(
            f"  {label:24}{' '.join(map(str, plain)):24}"
            f"{' '.join(map(str, validated)):32}{'yes' if same else 'no'}"
        )

    print("\nPer-sample augmentations (16 samples)")
    print(f"  {'num_workers':>11} {'batch_size':>10} {'shuffle':>7}  digest        same as 0")
    reference = augmentation_digest(0, 1, False)
    for num_workers, batch_size, shuffle in (
        (0, 1, False),
        (1, 4, True),
        (2, 3, True),
        (4, 5, False),
    ):
        digest = augmentation_digest(num_workers, batch_size, shuffle)
        if digest != reference:
            failures.append(f"num_workers={num_workers}")
        print(
            f"  {num_workers:>11} {batch_size:>10} {shuffle!s:>7}  {digest}  "
            f"{'yes' if digest == reference else 'no'}"
        )
    if failures:
        print(f"\nunexpected: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
