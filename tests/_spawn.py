"""Spawning the ranks of a real gloo group on 127.0.0.1, with bounded waits."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn_ranks(
    rank_main: Callable[..., None], world_size: int, workdir: Path, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Run ``rank_main(rank, world_size, port, workdir)`` per rank; each writes rank-N.json."""
    context = mp.start_processes(
        rank_main, args=(world_size, free_port(), str(workdir)), nprocs=world_size, join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the ranks did not finish within {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    return [json.loads((workdir / f"rank-{rank}.json").read_text()) for rank in range(world_size)]
