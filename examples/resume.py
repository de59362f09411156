"""Checkpoint a training run at step SAVE_AT and resume it in a fresh process, bit-exactly.

    python examples/resume.py                 # one process, then 2 ranks under DDP (gloo, CPU)
    python examples/resume.py --world-size 2  # just the DDP run

Each run trains a tiny model with dropout on shuffled data for STEPS steps and saves model,
optimizer and RNG state at step SAVE_AT (in the middle of an epoch). Fresh processes then load
the checkpoint with ``torch.load(..., weights_only=True)`` and train on: their losses equal the
uninterrupted run's exactly. A control resumes without ``load_rng_state`` and differs.

The recipe:

* ``set_seed`` first; build the model (and the data) in blocks, so they do not depend on
  anything else the program draws. Every rank gets the same model.
* The training function is decorated with ``@ReproducibleBlock("train", per_rank=True)``:
  dropout differs per rank. It saves ``get_rng_state()`` inside the block and, on resume, loads
  it inside the block, where it was saved.
* Data order: the order of an epoch is a function of (seed, epoch) only, so a resume in the
  middle of an epoch re-creates the epoch's order and skips the batches already trained on.
  ``iter(loader)`` draws from the loader's generator (the order with ``shuffle=True``, and a base
  seed for workers even with a sampler); without ``generator=`` it would draw from torch's
  global generator, which the checkpoint holds as it is after the epoch's draw. So the loader
  has its own generator, set at each epoch from the block ``("data-order", epoch)``; with
  ``DistributedSampler``, ``set_epoch(epoch)`` gives every rank the same permutation.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from reproducible_block import ReproducibleBlock, get_rng_state, load_rng_state, set_seed

SEED = 1234
STEPS = 10
SAVE_AT = 4
SAMPLES = 24
BATCH = 4
JOIN_TIMEOUT_S = 120.0


def build(rank: int, world_size: int) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader[Any]]:
    """Model, optimizer and data: identical on every rank, whatever the program drew before."""
    with ReproducibleBlock("dataset"):
        inputs = torch.randn(SAMPLES, 8)
        targets = inputs.sum(dim=1, keepdim=True) + 0.1 * torch.randn(SAMPLES, 1)
    with ReproducibleBlock("model-init"):
        model: nn.Module = nn.Sequential(
            nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1)
        )
    dataset = TensorDataset(inputs, targets)
    if world_size > 1:
        model = DistributedDataParallel(model)
        sampler = DistributedSampler(dataset, shuffle=True, seed=SEED)
        loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, generator=torch.Generator())
    else:
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=torch.Generator())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, optimizer, loader


def epoch_batches(loader: DataLoader[Any], epoch: int) -> Iterator[Any]:
    """The batches of one epoch, in an order that depends only on (seed, epoch).

    ``iter(loader)`` draws from the loader's generator (a base seed for workers and, with
    ``shuffle=True``, the order); a loader without ``generator=`` would draw from torch's global
    generator and shift dropout after a resume. So the loader has its own, set at each epoch.
    """
    if loader.generator is None:
        raise ValueError("give the DataLoader its own generator: generator=torch.Generator()")
    with ReproducibleBlock(("data-order", epoch), per_rank=True):
        loader.generator.set_state(torch.get_rng_state())
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)  # one permutation on every rank, each takes its shard
    return iter(loader)


def batches_from(loader: DataLoader[Any], step: int) -> Iterator[Any]:
    """Every batch from global step ``step`` on: a resume skips what was trained on."""
    epoch, skip = divmod(step, len(loader))
    while True:
        yield from itertools.islice(epoch_batches(loader, epoch), skip, None)
        epoch, skip = epoch + 1, 0


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


@ReproducibleBlock("train", per_rank=True)
def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Any],
    *,
    start: int = 0,
    rng: list[dict[str, Any]] | None = None,
    save: Callable[[int], None] | None = None,
) -> list[float]:
    """Train from step ``start`` to STEPS; the losses of this rank, one per step."""
    if rng is not None:
        load_rng_state(rng)  # inside the block: where get_rng_state() was called
    model.train()
    losses = []
    batches = batches_from(loader, start)  # endless: zip stops at STEPS, before the next batch
    for step, (inputs, targets) in zip(range(start, STEPS), batches, strict=False):
        if save is not None and step == SAVE_AT:
            save(step)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def full_run(rank: int, world_size: int, checkpoint: Path) -> list[float]:
    """The uninterrupted run, saving a checkpoint at SAVE_AT on the way."""
    set_seed(SEED)
    model, optimizer, loader = build(rank, world_size)

    def save(step: int) -> None:
        rng = get_rng_state()  # a collective under torch.distributed: every rank calls it
        if rank == 0:
            torch.save(
                {
                    "step": step,
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                },
                checkpoint,
            )

    return train(model, optimizer, loader, save=save)


def resumed_run(rank: int, world_size: int, checkpoint: Path, *, load_rng: bool) -> list[float]:
    """A fresh start of the same program that continues from the checkpoint."""
    set_seed(SEED)
    model, optimizer, loader = build(rank, world_size)
    saved = torch.load(checkpoint, weights_only=True)
    unwrap(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return train(
        model, optimizer, loader, start=saved["step"], rng=saved["rng"] if load_rng else None
    )


def worker(rank: int, phase: str, world_size: int, port: int, workdir: str) -> None:
    """One rank of one phase ("full" or "resume"), in its own process."""
    checkpoint = Path(workdir) / "checkpoint.pt"
    if world_size > 1:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=60),
        )
    try:
        if phase == "full":
            result = {"full": full_run(rank, world_size, checkpoint)}
        else:
            result = {
                "resumed": resumed_run(rank, world_size, checkpoint, load_rng=True),
                "control": resumed_run(rank, world_size, checkpoint, load_rng=False),
            }
        if dist.is_initialized():
            dist.barrier()  # rank 0 holds the store: it must not leave before the others finish
    finally:
        if dist.is_initialized():
            gc.collect()  # free the DDP models (reference cycles) while their group still exists
            dist.destroy_process_group()
    (Path(workdir) / f"{phase}-{rank}.json").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(phase: str, world_size: int, workdir: str) -> None:
    """Run ``worker`` in ``world_size`` fresh processes; never wait longer than JOIN_TIMEOUT_S."""
    context = mp.start_processes(
        worker,
        args=(phase, world_size, free_port(), workdir),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the {phase} phase did not finish in {JOIN_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def run(world_size: int, workdir: str) -> dict[int, dict[str, list[float]]]:
    """Both phases; every rank's losses: "full", "resumed" and "control" (no RNG load)."""
    if world_size == 1:
        # The uninterrupted run in this process; the resume in a fresh one.
        losses = full_run(0, 1, Path(workdir) / "checkpoint.pt")
        (Path(workdir) / "full-0.json").write_text(json.dumps({"full": losses}))
    else:
        spawn("full", world_size, workdir)
    spawn("resume", world_size, workdir)
    results: dict[int, dict[str, list[float]]] = {}
    for rank in range(world_size):
        results[rank] = {}
        for phase in ("full", "resume"):
            results[rank].update(json.loads((Path(workdir) / f"{phase}-{rank}.json").read_text()))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-size", type=int, choices=(1, 2), action="append")
    world_sizes = parser.parse_args().world_size or [1, 2]
    exact = True
    for world_size in world_sizes:
        with tempfile.TemporaryDirectory() as workdir:
            results = run(world_size, workdir)
        for rank, losses in results.items():
            same = losses["resumed"] == losses["full"][SAVE_AT:]
            control = losses["control"] == losses["full"][SAVE_AT:]
            exact = exact and same and not control
            print(
                f"world size {world_size}, rank {rank}: resumed at step {SAVE_AT} "
                f"bit-exact: {same}; without load_rng_state: {control}"
            )
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
