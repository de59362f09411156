"""Which file a process's ledger goes to: its rank's, or a child process's own ``.pid`` file.

The process that records from ``REPRODUCIBLE_BLOCK_LEDGER`` owns the requested path (with
``.rank{N}`` inserted when it has a rank) and tells the children it starts, through
:data:`PARENT_VARIABLE`, that it records. A child of it (forked, or started with the variable
inherited) never writes a file its parent may own: it writes ``.pid{PID}`` (or the first free
``.pid{PID}-{n}``), unless it has a rank its parent did not have (ranks a launcher started).
A DataLoader worker writes ``.worker{ID}.pid{PID}`` beside its rank's file, with its parent's
rank. While :func:`record_blocks` records, :data:`WORKERS_VARIABLE` tells spawned loader workers
where (other child processes of it record nothing). Every file of one recording carries the
token of the process that armed it (``run`` in the header), so that the reader leaves out the
files an earlier run left in the same folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch.utils.data import get_worker_info

from reproducible_block._support.distributed import known_rank

__all__ = [
    "PARENT_VARIABLE",
    "WORKERS_VARIABLE",
    "announce",
    "file_rank",
    "in_loader_worker",
    "is_child",
    "ledger_path",
    "loader_worker",
    "new_run_token",
    "open_new",
    "parent_from_environment",
    "run_from_environment",
    "worker_path",
]

#: Set by a recording process, so that its children know it: ``"{pid}:{rank}:{run token}"``
#: (the rank empty when it has none).
PARENT_VARIABLE = "REPRODUCIBLE_BLOCK_LEDGER_PARENT"
#: Set while :func:`record_blocks` records, to its path: the DataLoader workers that a spawn or
#: forkserver start method starts record beside it.
WORKERS_VARIABLE = "REPRODUCIBLE_BLOCK_LEDGER_WORKERS"
#: The most ``.pid{PID}-{n}`` names a child tries when its ``.pid{PID}`` file exists.
_MAX_NAME_TRIES = 100


def file_rank() -> int | None:
    """The rank whose file this process writes: the group's, else the launcher's, else None."""
    return known_rank()


def parent_from_environment() -> tuple[int, int | None] | None:
    """The recording process this one inherited ``REPRODUCIBLE_BLOCK_LEDGER`` from, as (pid,
    its rank or None), or None when this process is that one (or nothing records above it).
    A value that cannot be read names no process: this one is then a child (it never writes a
    file that another process may own)."""
    value = os.environ.get(PARENT_VARIABLE)
    if value is None:
        return None
    pid, _, rest = value.partition(":")
    rank = rest.partition(":")[0]
    if pid == str(os.getpid()):
        return None
    return (int(pid) if pid.isdigit() else -1), (int(rank) if rank.isdigit() else None)


def run_from_environment() -> str | None:
    """The run token the recording parent announced, or None."""
    token = os.environ.get(PARENT_VARIABLE, "").split(":")[2:3]
    return token[0] if token and token[0] else None


def new_run_token() -> str:
    """A token for the files of one recording: the arming process's pid and the time."""
    return f"{os.getpid():x}-{time.time_ns():x}"


def announce(rank: int | None, run: str) -> None:
    """Tell the children this process starts that it records (see parent_from_environment)."""
    os.environ[PARENT_VARIABLE] = f"{os.getpid()}:{'' if rank is None else rank}:{run}"


def in_loader_worker() -> bool:
    return get_worker_info() is not None


def loader_worker() -> dict[str, int] | None:
    """This DataLoader worker's id, its loader's worker count and base seed (the same for the
    workers one iterator started), or None outside a loader worker."""
    info = get_worker_info()
    if info is None:
        return None
    return {"id": info.id, "num_workers": info.num_workers, "loader": info.seed - info.id}


def worker_path(requested: Path, rank: int | None, worker_id: int) -> Path:
    """A loader worker's file: ``ledger.rank1.worker0.pid123.jsonl`` (no rank: no ``.rank``)."""
    tag = f"worker{worker_id}.pid{os.getpid()}"
    return _with_suffix(requested, tag if rank is None else f"rank{rank}.{tag}")


def is_child(forked: bool, parent: tuple[int, int | None] | None, rank: int | None) -> bool:
    """Whether this process is a child of the recording process it inherited the ledger from
    (``forked``, or started with the variable inherited from ``parent``: (pid, rank)), rather
    than a rank of its own.

    A process that has a rank its parent did not have (ranks a launcher script started) owns
    that rank's file; any other child of a recorder writes a ``.pid{PID}`` file.

    >>> is_child(False, (100, None), 1), is_child(False, (100, 1), 1), is_child(True, None, 0)
    (False, True, True)
    """
    if forked:
        return True
    if parent is None:
        return False
    return rank is None or rank == parent[1]


def _with_suffix(path: Path, tag: str) -> Path:
    """``runs/ledger.jsonl`` with ``rank1`` inserted: ``runs/ledger.rank1.jsonl``."""
    if path.suffix:
        return path.with_name(f"{path.stem}.{tag}{path.suffix}")
    return path.with_name(f"{path.name}.{tag}")


def ledger_path(requested: Path, rank: int | None, child: bool) -> Path:
    """The file this process writes: a child's ``.pid{PID}`` file, a rank's ``.rank{N}`` file,
    or the requested path.

    >>> ledger_path(Path("runs/ledger.jsonl"), 1, False) == Path("runs/ledger.rank1.jsonl")
    True
    """
    if child:
        return _with_suffix(requested, f"pid{os.getpid()}")
    if rank is not None:
        return _with_suffix(requested, f"rank{rank}")
    return requested


def open_new(target: Path, flags: int) -> tuple[int, Path]:
    """Create ``target``, or the first of ``target`` with ``-1``, ``-2``... after the pid that
    does not exist yet (raises FileExistsError after _MAX_NAME_TRIES). A child's name is its
    pid's: a file there is another run's (pids are reused), and a recording never destroys
    records."""
    candidate = target
    for attempt in range(1, _MAX_NAME_TRIES + 1):
        try:
            return os.open(candidate, flags, 0o644), candidate
        except FileExistsError:
            stem = target.stem if target.suffix else target.name
            candidate = target.with_name(f"{stem}-{attempt}{target.suffix}")
    return os.open(candidate, flags, 0o644), candidate
