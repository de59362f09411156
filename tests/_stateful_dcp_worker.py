"""One rank of tests/features/test_stateful.py's torch.distributed.checkpoint runs: rank-N.json.

``workdir/phase`` names the run: ``save`` (2 ranks: save with DCP, the refusals, then a resume
from another root and other streams), ``resume`` (a fresh group of 3 ranks loads the checkpoint,
with the default policy and with derive).
"""

from __future__ import annotations

import gc
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from reproducible_block import ReproducibleBlock, RNGState, get_rng_state, set_seed

SEED = 11


def draws() -> dict[str, Any]:
    """What this rank draws next: torch's global stream and a block's (from the root)."""
    with ReproducibleBlock("after-resume", per_rank=True):
        block = torch.rand(2).tolist()
    return {"global": torch.rand(3).tolist(), "block": block}


def refusal(load: Any) -> dict[str, Any]:
    """A load that should be refused: its message, and whether torch's stream stayed."""
    before = torch.get_rng_state()
    error = None
    try:
        load()
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    return {"error": error, "untouched": torch.equal(torch.get_rng_state(), before)}


def save(rank: int, checkpoint: str) -> dict[str, Any]:
    set_seed(SEED)
    torch.rand(rank + 1)  # the ranks' global streams part ways
    dcp.save({"rng": RNGState()}, checkpoint_id=checkpoint)
    results: dict[str, Any] = {"expected": draws()}

    only_rank_zero = io.BytesIO()
    torch.save(get_rng_state()[:1], only_rank_zero)  # a checkpoint without rank 1's entry
    lacking = {"format_version": 1, "states": only_rank_zero.getvalue()}
    results["lacking"] = refusal(lambda: RNGState().load_state_dict(lacking))

    first = RNGState().state_dict()
    torch.rand(1)
    later = RNGState().state_dict()
    given = first if rank == 0 else later  # rank 1 was handed another checkpoint
    results["disagree"] = refusal(lambda: RNGState().load_state_dict(given))

    damaged = {"format_version": 1, "states": b"not a checkpoint"} if rank == 1 else first
    results["damaged"] = refusal(lambda: RNGState().load_state_dict(damaged))

    set_seed(SEED + 1)  # another root, and other streams, until the load
    torch.rand(7)
    dcp.load({"rng": RNGState()}, checkpoint_id=checkpoint)
    results["resumed"] = draws()
    return results


def resume(rank: int, checkpoint: str) -> dict[str, Any]:
    set_seed(SEED + 1)  # another root, and other streams, until the load
    torch.rand(7)
    refused = refusal(lambda: dcp.load({"rng": RNGState()}, checkpoint_id=checkpoint))
    results: dict[str, Any] = {"default": refused}
    dcp.load({"rng": RNGState(on_world_size_change="derive")}, checkpoint_id=checkpoint)
    results["resumed"] = draws()
    dcp.load({"rng": RNGState(on_world_size_change="derive")}, checkpoint_id=checkpoint)
    results["again"] = draws()
    return results


def rank_main(rank: int, world_size: int, port: int, workdir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    phase = (Path(workdir) / "phase").read_text()
    checkpoint = str(Path(workdir) / "checkpoint")
    try:
        results = (save if phase == "save" else resume)(rank, checkpoint)
        dist.barrier()  # rank 0 holds the store: nobody leaves before everyone is done
    finally:
        gc.collect()
        dist.destroy_process_group()
    (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps(results))
