"""DDP under torchrun: preempted in the middle of an epoch, resumed bit for bit, and on 3 ranks.

    # 2 ranks (gloo, CPU), killed at step 7; the last checkpoint is step 4's
    torchrun --standalone --nproc_per_node=2 examples/ddp_torchrun.py \\
        --workdir runs/a --preempt-at 7
    # resumed from it on 2 ranks: the losses of an uninterrupted run, bit for bit
    torchrun --standalone --nproc_per_node=2 examples/ddp_torchrun.py \\
        --workdir runs/b --resume-from runs/a/checkpoint.pt
    # or on 3 ranks: ranks 0 and 1 continue their own streams, rank 2 gets a new one
    torchrun --standalone --nproc_per_node=3 examples/ddp_torchrun.py \\
        --workdir runs/c --resume-from runs/a/checkpoint.pt --on-world-size-change derive

    python examples/ddp_torchrun.py     # without torchrun: one process trains, then resumes

Under ``torchrun`` (``python -m torch.distributed.run``) each rank trains a tiny model with
dropout under ``DistributedDataParallel`` for ``--steps`` steps on its share of one global
order (a ``ReproducibleSampler``), saving model, optimizer, step, the sampler's position and
``get_rng_state()`` every
``--checkpoint-every`` steps (``DIR/checkpoint.pt``). ``--preempt-at STEP`` kills every rank
with SIGKILL when it reaches that step, as a preempted job dies; ``--resume-from`` continues
from a checkpoint. Every rank writes ``DIR/report.rank{N}.json``: its losses, and a fingerprint
of its torch stream (the one dropout draws from) at the start of each step.

The recipe:

* ``set_seed()`` with no seed: every rank uses ``REPRODUCIBLE_BLOCK_SEED`` when the launcher
  exports it, else rank 0 draws one and shares it (``set_seed`` is a collective under a process
  group). A resume passes the checkpoint's seed.
* The data and the model are built in blocks: the same on every rank.
* The dataset is wrapped in ``ReproducibleDataset``: each sample's augmentation is drawn in the
  block ``("sample", epoch, index)``, the same whichever rank loads it, for any number of ranks.
* The training function runs in ``ReproducibleBlock("train", per_rank=True)``: dropout differs
  per rank. It saves ``get_rng_state()`` (a collective) inside the block and loads it inside
  the block, with ``on_world_size_change="derive"`` on another number of ranks: ranks the
  checkpoint has continue their own streams, new ranks get streams derived from the seed.
* The order of an epoch depends only on (seed, "order", epoch) (``ReproducibleSampler``),
  and each rank takes every ``W``-th sample of it. The checkpoint holds the sampler's global
  position, so a resume in the middle of an epoch starts at the first sample not trained on,
  without replaying the epoch; on 3 ranks it continues the same global sequence of samples,
  shared among 3 (so each rank's batches differ from the 2-rank run's), and the dropout
  streams of ranks 0 and 1 continue as saved.

Without ``torchrun`` one process trains and then resumes from its last checkpoint (exit status
1 if the losses differ). tests/public/test_torchrun.py runs the commands above and compares
the runs.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleDataset,
    ReproducibleSampler,
    get_rng_state,
    load_rng_state,
    set_seed,
)

SAMPLES, FEATURES, BATCH = 24, 8, 4  # 3 batches per epoch on 2 ranks, 2 on 3 ranks


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A fixed data set (built in a block); each sample gets noise, drawn from the global
    generator: ``ReproducibleDataset`` draws it in the sample's block."""

    def __init__(self) -> None:
        with ReproducibleBlock("dataset"):
            self.inputs = torch.randn(SAMPLES, FEATURES)
            self.targets = self.inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(SAMPLES, 1)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = self.inputs[index] + 0.1 * torch.randn(FEATURES)
        return noisy, self.targets[index]


def stream_fingerprint() -> str:
    """A short digest of torch's CPU generator state: the stream dropout draws from."""
    return hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]


def fingerprints() -> dict[str, str]:
    """Digests of the three global generators' states."""
    words, position = np.random.get_state()[1:3]
    return {
        "torch": stream_fingerprint(),
        "numpy": hashlib.sha256(words.tobytes() + str(position).encode()).hexdigest()[:16],
        "random": hashlib.sha256(repr(random.getstate()).encode()).hexdigest()[:16],
    }


class Run:
    """One rank's training: model, optimizer and data, the same on every rank."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.saved: dict[str, Any] | None = None
        if arguments.resume_from is not None:
            self.saved = torch.load(arguments.resume_from, weights_only=True)
        # No seed: the launcher's REPRODUCIBLE_BLOCK_SEED, else rank 0's (a collective).
        self.seed = set_seed(None if self.saved is None else self.saved["seed"])
        self.dataset = ReproducibleDataset(NoisyRegression())  # ("sample", epoch, index)
        with ReproducibleBlock("model-init"):
            model = nn.Sequential(
                nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1)
            )
        self.model = DistributedDataParallel(model)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        # One global order per epoch, from (seed, "order", epoch); this rank takes its share.
        self.sampler = ReproducibleSampler(self.dataset)
        # Its own generator: iter(loader) draws a seed from it, not from the dropout stream.
        self.loader = DataLoader(
            self.dataset, batch_size=BATCH, sampler=self.sampler, generator=torch.Generator()
        )
        self.start = 0
        if self.saved is not None:
            model.load_state_dict(self.saved["model"])
            self.optimizer.load_state_dict(self.saved["optimizer"])
            self.start = self.saved["step"]
            self.sampler.load_state_dict(self.saved["sampler"])  # the next sample to train on
        self.report: dict[str, Any] = {
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self.seed,
            "batches_per_epoch": len(self.loader),
            "start": self.start,
            "losses": {},
            "streams": {},
            "batch_sizes": {},
            "at_checkpoint": {},
            "after_load": None,
        }

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every batch from the sampler's position on, epoch after epoch (each pass of the
        sampler takes the next epoch; a loaded state starts in the saved epoch, at the saved
        sample)."""
        while True:
            yield from self.loader

    def save(self, step: int) -> None:
        rng = get_rng_state()  # a collective: every rank's streams, inside the "train" block
        # Where the data stands: the next batch is not fetched yet (no workers prefetch).
        sampler = self.sampler.state_dict()
        self.report["at_checkpoint"][step] = fingerprints()
        if self.rank == 0:
            path = Path(self.arguments.workdir) / "checkpoint.pt"
            torch.save(
                {
                    "step": step,
                    "seed": self.seed,
                    "model": self.model.module.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": rng,
                    "sampler": sampler,
                },
                path.with_suffix(".tmp"),
            )
            os.replace(path.with_suffix(".tmp"), path)  # a kill never leaves half a checkpoint

    @ReproducibleBlock("train", per_rank=True)
    def train(self) -> None:
        arguments = self.arguments
        if self.saved is not None:
            load_rng_state(self.saved["rng"], on_world_size_change=arguments.on_world_size_change)
            self.report["after_load"] = fingerprints()
        self.model.train()
        batches = self.batches()
        for step in range(self.start, arguments.steps):
            if step == arguments.preempt_at:
                os.kill(os.getpid(), signal.SIGKILL)  # preempted: no clean-up, no last words
            if step != self.start and step % arguments.checkpoint_every == 0:
                self.save(step)  # before this step's batch is fetched
            inputs, targets = next(batches)
            self.report["batch_sizes"][step] = len(inputs)
            self.report["streams"][step] = stream_fingerprint()
            loss = nn.functional.mse_loss(self.model(inputs), targets)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.report["losses"][step] = loss.item()

    def write_report(self) -> None:
        path = Path(self.arguments.workdir) / f"report.rank{self.rank}.json"
        path.write_text(json.dumps(self.report, indent=1))


def rank_main(arguments: argparse.Namespace) -> None:
    """One rank, started by torchrun (which sets RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    Path(arguments.workdir).mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo")
    try:
        run = Run(arguments)
        run.train()
        run.write_report()
        dist.barrier()  # nobody leaves while another rank still needs the group
    finally:
        gc.collect()  # free DDP's reference cycles while the group exists
        dist.destroy_process_group()


def alone() -> int:
    """Not started by torchrun: one process (a gloo group of one) trains, then a fresh run
    resumes from the last checkpoint; its losses must be the uninterrupted run's."""
    with tempfile.TemporaryDirectory() as folder:
        arguments = argparse.Namespace(
            workdir=folder,
            resume_from=None,
            steps=12,
            checkpoint_every=4,
            preempt_at=None,
            on_world_size_change="error",
        )
        dist.init_process_group(
            "gloo", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1
        )
        try:
            full = Run(arguments)
            full.train()
            arguments.resume_from = str(Path(folder) / "checkpoint.pt")
            resumed = Run(arguments)
            resumed.train()
        finally:
            gc.collect()
            dist.destroy_process_group()
    expected = {step: loss for step, loss in full.report["losses"].items() if step >= resumed.start}
    same = resumed.report["losses"] == expected
    print(f"one process: resumed at step {resumed.start}, losses bit for bit: {same}")
    print("Under torchrun, as a preempted job on 2 ranks and resumed on 3: see this file's doc.")
    return 0 if same else 1


def main() -> int:
    if "LOCAL_RANK" not in os.environ:  # not started by torchrun
        return alone()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="checkpoints and reports go here")
    parser.add_argument("--resume-from", help="a checkpoint.pt to continue from")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--preempt-at", type=int, help="SIGKILL every rank at this step")
    parser.add_argument("--on-world-size-change", choices=("error", "derive"), default="error")
    rank_main(parser.parse_args())
    return 0


if __name__ == "__main__":
    sys.exit(main())
