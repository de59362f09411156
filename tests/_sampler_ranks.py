"""The ranks of tests/features/test_sampler_ranks.py: each in its own process, in a real gloo
group, writing rank-N.json. The sampler reads the world size and rank from the group."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from reproducible_block import ReproducibleSampler, set_seed

LENGTH = 23
SEED = 77
ROUNDS_ON_TWO = 3  # rounds of epoch 1 taken on 2 ranks before the state is saved


def _group(rank: int, world_size: int, port: int) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),
    )


def on_two(rank: int, world_size: int, port: int, workdir: str) -> None:
    """Epoch 0 whole, then ROUNDS_ON_TWO indices of epoch 1; save the state (rank 0)."""
    _group(rank, world_size, port)
    try:
        set_seed(SEED)
        sampler = ReproducibleSampler(LENGTH)
        epoch_zero = [int(index) for index in sampler]
        indices = iter(sampler)
        epoch_one = [int(next(indices)) for _ in range(ROUNDS_ON_TWO)]
        state = sampler.state_dict()
        if rank == 0:
            torch.save(state, Path(workdir) / "state.pt")
        results = {
            "replicas": sampler.num_replicas,
            "rank": sampler.rank,
            "epoch_zero": epoch_zero,
            "epoch_one": epoch_one,
            "state": state,
        }
        (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def on_three(rank: int, world_size: int, port: int, workdir: str) -> None:
    """Load the 2-rank state and take the rest of epoch 1."""
    _group(rank, world_size, port)
    try:
        set_seed(SEED)
        sampler = ReproducibleSampler(LENGTH)
        sampler.load_state_dict(torch.load(Path(workdir) / "state.pt", weights_only=True))
        rest = [int(index) for index in sampler]
        results = {"replicas": sampler.num_replicas, "rest": rest}
        (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()
