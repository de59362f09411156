"""Data loading, isolated: an order a validation pass cannot move, augmentations workers cannot.

1. Creating a validation iterator draws a seed from torch's global generator (pytorch#80119), so
   a plain ``shuffle=True`` loader shuffles the next epoch differently.
   ``ReproducibleSampler`` makes the order of each epoch a function of (root seed, "order",
   epoch): the same with a validation pass, with workers, persistent or not.
2. ``ReproducibleDataset`` runs each sample of a torchvision-style dataset (the augmentation is
   drawn inside ``__getitem__``, with no key) in a block keyed ("sample", epoch, index): the
   same augmentation whatever ``num_workers``, batch size or persistent workers, new each epoch.

Run: python examples/dataloader.py (exits non-zero if a property fails).
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
    ReproducibleDataset,
    ReproducibleSampler,
    seed_worker,
    set_seed,
)

SAMPLES = 16
EPOCHS = 2


class NoisySamples(Dataset[tuple[int, torch.Tensor]]):
    """Sample ``index`` plus noise from torch, NumPy and Python ``random``: an augmentation."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        noise = torch.randn(2) + float(np.random.uniform()) + random.random()
        return index, index + noise


def epoch_orders(validation_pass: bool, sampler: bool, num_workers: int) -> list[list[int]]:
    """The training order of two epochs, with or without a validation pass after each."""
    set_seed(0)
    order = ReproducibleSampler(10) if sampler else None
    train = DataLoader(
        range(10),
        batch_size=5,
        shuffle=not sampler,
        sampler=order,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    orders = []
    for epoch in range(EPOCHS):
        if order is not None:
            order.set_epoch(epoch)
        orders.append([index for batch in train for index in batch.tolist()])
        if validation_pass:
            for _ in DataLoader(range(4), batch_size=2):  # unshuffled, yet it draws a seed
                pass
    return orders


def augmentation_digest(num_workers: int, batch_size: int, persistent: bool) -> tuple[str, bool]:
    """A digest of every sample's augmentation in each epoch, and whether epochs differ."""
    set_seed(0)
    sampler = ReproducibleSampler(SAMPLES)
    loader = DataLoader(
        ReproducibleDataset(NoisySamples()),
        sampler=sampler,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=persistent,
        worker_init_fn=seed_worker,
    )
    epochs = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        by_index = {}
        for indices, values in loader:
            for index, value in zip(indices.tolist(), values, strict=True):
                by_index[index] = value
        epochs.append(torch.stack([by_index[index] for index in range(SAMPLES)]))
    data = torch.stack(epochs).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:12], not torch.equal(epochs[0], epochs[1])


def main() -> int:
    # Four workers on a two-core machine: torch warns, but the point here is the count.
    warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
    print("Epoch 2 training order (10 samples, shuffled)")
    print(f"  {'':28}{'no validation pass':22}{'validation pass':22}{'and 2 workers':22}same")
    failures = []
    for label, sampler in (("shuffle=True (global RNG)", False), ("ReproducibleSampler", True)):
        plain = epoch_orders(validation_pass=False, sampler=sampler, num_workers=0)[1]
        validated = epoch_orders(validation_pass=True, sampler=sampler, num_workers=0)[1]
        workers = epoch_orders(validation_pass=True, sampler=sampler, num_workers=2)[1]
        same = plain == validated == workers
        if same != sampler:
            failures.append(label)
        print(
            f"  {label:28}{' '.join(map(str, plain)):22}{' '.join(map(str, validated)):22}"
            f"{' '.join(map(str, workers)):22}{'yes' if same else 'no'}"
        )

    print(f"\nPer-sample augmentations ({SAMPLES} samples, {EPOCHS} epochs)")
    print(f"  {'num_workers':>11} {'batch_size':>10} {'persistent':>10}  digest        same  new")
    reference, _ = augmentation_digest(0, 1, False)
    for num_workers, batch_size, persistent in (
        (0, 1, False),
        (1, 4, True),
        (2, 3, False),
        (4, 5, True),
    ):
        digest, renewed = augmentation_digest(num_workers, batch_size, persistent)
        if digest != reference or not renewed:
            failures.append(f"num_workers={num_workers}")
        print(
            f"  {num_workers:>11} {batch_size:>10} {persistent!s:>10}  {digest}  "
            f"{'yes' if digest == reference else 'no':4}  {'yes' if renewed else 'no'}"
        )
    if failures:
        print(f"\nunexpected: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
