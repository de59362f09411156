"""A training loop over a plain DataLoader with persistent workers, for the SIGKILL test.

``python _sampler_resume_run.py WORKDIR [KILL_AT]``: three epochs (2 workers; ``main`` with
``num_workers=0`` gives the same file in the test's process) of ``ReproducibleSampler`` and
``ReproducibleDataset``; after each batch it appends the batch to ``WORKDIR/batches.txt`` and
saves the sampler's state (``state_dict(consumed=...)``: the workers prefetch) with
``torch.save``. With ``KILL_AT`` (a global batch count) it SIGKILLs itself after that batch. It
resumes from ``WORKDIR/checkpoint.pt`` when there is one, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from reproducible_block import (
    ReproducibleDataset,
    ReproducibleSampler,
    seed_worker,
    set_seed,
)
from tests._sampler_datasets import Augmented

EPOCHS = 3
BATCH = 4


def main(workdir: Path, kill_at: int | None, num_workers: int = 2) -> None:
    set_seed(99)
    sampler = ReproducibleSampler(Augmented())
    loader = DataLoader(
        ReproducibleDataset(Augmented()),
        sampler=sampler,
        batch_size=BATCH,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker,
    )
    checkpoint = workdir / "checkpoint.pt"
    done = 0
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        sampler.load_state_dict(saved["sampler"])
        done = saved["batches"]
    first_epoch = sampler.epoch
    with (workdir / "batches.txt").open("a") as log:
        for epoch in range(first_epoch, EPOCHS):
            sampler.set_epoch(epoch)  # keeps a loaded position in the loaded epoch
            consumed = 0
            for indices, draws in loader:
                consumed += len(indices)
                done += 1
                rows = [
                    f"{epoch} {i} {d.tolist()}"
                    for i, d in zip(indices.tolist(), draws, strict=True)
                ]
                log.write("\n".join(rows) + "\n")
                log.flush()
                state = {"sampler": sampler.state_dict(consumed=consumed), "batches": done}
                torch.save(state, checkpoint)
                if done == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
