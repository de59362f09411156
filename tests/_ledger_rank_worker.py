"""A rank of the gloo run in tests/diagnostics/test_run_diff.py: runs "a", "b" (rank 1 differs)."""

from __future__ import annotations

import gc
import json
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block.diagnostics import record_blocks

SAMPLES = 12
CHANGED_SAMPLE = 5  # samples are dealt round-robin: 5 is on rank 1


def record(run: str, workdir: Path, rank: int, world_size: int) -> str:
    set_seed(7)
    with record_blocks(workdir / run / "ledger.jsonl") as ledger:
        for index in range(rank, SAMPLES, world_size):
            with ReproducibleBlock(("sample", index)):
                torch.rand(4 + (run == "b" and index == CHANGED_SAMPLE))
        with ReproducibleBlock("dropout", per_rank=True):
            torch.rand(2)
    return str(ledger.path)


def rank_main(rank: int, world_size: int, port: int, workdir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        paths = [record(run, Path(workdir), rank, world_size) for run in ("a", "b")]
        dist.barrier()  # rank 0 holds the store: nobody leaves before everyone is done
    finally:
        gc.collect()
        dist.destroy_process_group()
    (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps({"paths": paths}))
