"""Fresh interpreters for tests: one Python process (``run_python``), or the ranks of a real gloo
group on 127.0.0.1 (``spawn_ranks``), each with a bounded wait."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def run_python(
    code: str | None = None,
    *,
    module: str | None = None,
    args: Sequence[str] = (),
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python [flags] -c code [args]`` (or ``-m module``, or neither: ``args`` starts with a
    script) in a fresh interpreter, stdout and stderr captured as text, killed after ``timeout``
    seconds. ``env`` replaces the environment (None: this process's); ``check`` fails the test
    with the child's stderr when it exits non-zero."""
    if code is not None and module is not None:
        raise TypeError("run_python takes code or module, not both")
    command = [sys.executable, *flags]
    if code is not None:
        command += ["-c", code]
    elif module is not None:
        command += ["-m", module]
    result = subprocess.run(
        [*command, *args],
        env=None if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command[1:3]} exited with {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn_ranks(
    rank_main: Callable[..., None], world_size: int, workdir: Path, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Run ``rank_main(rank, world_size, port, workdir)`` per rank; each writes rank-N.json."""
    context = mp.start_processes(
        rank_main,
        args=(world_size, free_port(), str(workdir)),
        nprocs=world_size,
        join=False,
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
