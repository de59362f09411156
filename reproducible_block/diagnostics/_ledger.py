"""The block ledger's writer: one JSON line per block exit, to find where two runs part.

While a ledger records, every block exit appends one line (see ``_format``): the block's key, the
rank, how many times this key has exited so far, and a short fingerprint of each managed
generator's state at exit (what the block consumed). For the Mersenne Twister generators (Python
``random``, NumPy's global ``RandomState``, torch's CPU generator, and registered CPU
``torch.Generator``\\ s) it also records the position in the key and a digest of the 624 key
words, so the diff can replay the block's stream and count how many 32-bit numbers it drew.

The block machinery calls one hook, at block exit, while the block's states are still installed:
``_stack.exit_hook``, which :func:`set_recording` sets to the recording ledger's ``record_exit``.
It reads the frame's owner (its ``key``, ``per_rank`` and ``per_worker``), the frame's sources
(each source's ``name``; a Mersenne Twister's recorded fields through ``twister_now()``, which
the built-in ones read in place, without copying their state; any other generator's state
through ``get_state()``) and ``_stack.open_count()`` (the blocks still open around the exiting
one). Off, it costs one global lookup. On, a record costs the reads and one write (a few
microseconds each, as much again as the block it records, ``make bench``'s "block ledger on /
off"): what does not change between records is made once (a key's text, each selection's
reader, the text of the state entries for the same reading as the last record's).
Starting and stopping a recording is ``_arming``'s; which file a process writes,
``_processes``'.

Writing is crash-safe: every line goes out whole with one ``os.write`` on an ``O_APPEND`` file
descriptor, nothing is buffered in the process, so a killed run (even ``SIGKILL``) leaves every
record of the blocks that had exited, and at most one torn last line, which the reader skips.
Nothing is ``fsync``-ed: a power cut or an operating system crash can lose what the kernel had
not yet written to the disk.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from time import monotonic_ns
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import get_worker_info

from reproducible_block._blocks import stack as _stack
from reproducible_block._streams import root as _root
from reproducible_block._support.distributed import folded_rank, global_rank, world_size
from reproducible_block._support.errors import ReproducibleBlockTypeError
from reproducible_block._support.version import __version__
from reproducible_block._support.warnings import warn_at_user_line
from reproducible_block.diagnostics import _processes
from reproducible_block.diagnostics._format import (
    DERIVATION,
    DIGEST,
    LEDGER_FORMAT,
    LEDGER_VERSION,
    key_to_json,
    noted,
    watched,
)
from reproducible_block.diagnostics._state_text import reader_for

__all__ = ["BlockLedger", "recording", "set_recording"]

#: The ledger being written to, or None. Change it with :func:`set_recording`, which also sets
#: the block exit hook.
recording: BlockLedger | None = None


def set_recording(ledger: BlockLedger | None) -> BlockLedger | None:
    """Make ``ledger`` the one that records (None: none) and return the previous one."""
    global recording
    previous, recording = recording, ledger
    _stack.exit_hook = None if ledger is None else ledger.record_exit
    return previous


def _no_group() -> bool:
    return False


#: Whether a default process group is initialised: ``global_rank()``'s first question, bound
#: once (a record outside a rank's file asks it at every block exit).
_group_initialized: Callable[[], bool] = dist.is_initialized if dist.is_available() else _no_group


class BlockLedger:
    """A ledger being written: what :func:`record_blocks` yields (see there).

    ``path`` is the file written (the requested path, with ``.rank{N}`` inserted under
    ``torch.distributed``, ``.worker{ID}.pid{PID}`` in a DataLoader worker, or ``.pid{PID}`` in
    another child of the process that records from ``REPRODUCIBLE_BLOCK_LEDGER``), None until it
    is opened; ``records`` counts the lines written after the header. :func:`ledger_note` adds
    a value's fingerprint to the record of the innermost open block. It is a handle on a file
    this process writes: it cannot be copied or pickled (pass ``path``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        watch: object = None,
        *,
        from_environment: bool = False,
        parent: tuple[int, int | None] | None = None,
        forked: bool = False,
        workers_only: bool = False,
        run: str | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ReproducibleBlockTypeError(
                f"the ledger path must be a non-empty str or os.PathLike, such as "
                f"'runs/a/ledger.jsonl'; got {type(path).__name__} {path!r}."
            )
        self._requested = Path(path)
        self._watch = watched(watch)
        self._from_environment = from_environment
        # The recording process this one descends from (pid, rank), and whether it is a fork
        # of it: a child writes its own .pid{PID} file, never the file its parent owns.
        self._parent = parent
        self._forked = forked
        # A record_blocks ledger in a child process: it records in a DataLoader worker only.
        self._workers_only = workers_only
        # The token every file of this recording carries (see _processes).
        self.run = run if run is not None else _processes.new_run_token()
        self._worker: dict[str, int] | None = None
        self.path: Path | None = None
        self.records = 0
        self._fd: int | None = None
        self._stopped = False
        self._failed = False  # stopped by a failure (warned once)
        # Guards opening, the pending notes and stand-alone note lines: notes may come from
        # threads that do not hold the block lock (a note never waits for a block).
        self._lock = threading.Lock()
        self._counts: dict[tuple[type, object], list[Any]] = {}
        self._pending: list[tuple[int, str, list[object]]] = []
        self._root = -1  # the root generation last written (none yet)
        self._file_rank: int | None = None
        # The last record's key and its entry, and its sources' reader: a loop's blocks often
        # repeat both (the same objects), which then costs two identity checks.
        self._last_key: tuple[object, list[Any]] = (object(), [])
        self._reader = reader_for(())

    def __repr__(self) -> str:
        where = self.path if self.path is not None else self._requested
        return f"<BlockLedger {str(where)!r}, {self.records} records>"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # A copy would share (and could close) this process's file descriptor; in another
        # process the number names another file.
        raise ReproducibleBlockTypeError(
            f"{self!r} cannot be copied or pickled: it is a handle on a file this process "
            "writes. Pass its path (ledger.path) instead, and read the file with read_ledger()."
        )

    # Opening and writing.

    def _is_child(self, rank: int | None) -> bool:
        return _processes.is_child(self._forked, self._parent, rank)

    def _target(self) -> Path | None:
        """The file this process writes, or None when it should not record (a child of a
        record_blocks ledger that is no loader worker)."""
        self._worker = _processes.loader_worker()
        if self._worker is not None:  # the parent's rank: a spawned worker has no group
            parent_rank = None if self._parent is None else self._parent[1]
            rank = self._file_rank = (
                parent_rank if parent_rank is not None else _processes.file_rank()
            )
            return _processes.worker_path(self._requested, rank, self._worker["id"])
        if self._workers_only:
            return None
        rank = self._file_rank = _processes.file_rank()
        return _processes.ledger_path(self._requested, rank, self._is_child(rank))

    def _open(self) -> None:
        target = self._target()
        if target is None:
            self._stopped = True
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if self._worker is not None or self._is_child(self._file_rank):  # a free name
            self._fd, target = _processes.open_new(target, flags | os.O_EXCL)
        else:
            # The process that armed the ledger owns its file: a new run replaces the last.
            self._fd = os.open(target, flags | os.O_TRUNC, 0o644)
        self.path = target
        if self._from_environment:
            _processes.announce(self._file_rank, self.run)
        self._write_line(json.dumps(self._header(), separators=(",", ":")))

    def _header(self) -> dict[str, Any]:
        root = _root.peek_seed()
        self._root = _root.generation
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "digest": DIGEST,
            "derivation": DERIVATION,
            "root_seed": root,
            "rank": self._file_rank,
            "world_size": world_size(),
            "pid": os.getpid(),
            # The recording process this one is a child of (its own .pid file), or None.
            "parent": None
            if (self._worker is None and not self._is_child(self._file_rank))
            or self._parent is None
            else self._parent[0],
            "run": self.run,
            "worker": self._worker,
            "versions": {
                "python": platform.python_version(),
                "reproducible_block": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
        }

    def _write_line(self, line: str) -> None:
        """Write one line whole (callers have the file open)."""
        self._write((line + "\n").encode())

    def _write(self, data: bytes) -> None:
        """Write ``data`` (whole lines) with one ``os.write``, unless the file takes only part."""
        fd = self._fd if self._fd is not None else -1  # -1: os.write raises EBADF
        written = os.write(fd, data)
        while written < len(data):  # a pipe, or a disk that fills, may take part of it
            written += os.write(fd, data[written:])

    def _rank(self) -> int:
        """The rank a record carries: the group's, else the launcher's, else 0."""
        if self._file_rank is not None:
            return self._file_rank  # the file is this rank's
        return global_rank()

    def _ensure_open(self) -> bool:
        if self._fd is None and not self._stopped:
            with self._lock:
                if self._fd is None and not self._stopped:
                    self._open()
        return self._fd is not None

    def _stop(self, error: BaseException) -> None:
        """Stop recording after a failure: the program goes on, with one warning (at the
        user's line), however many threads fail at once."""
        with self._lock:
            if self._failed:
                return
            self._failed = self._stopped = True
        with suppress(Exception):  # say so in the file, if it can still be written
            stopped = json.dumps(f"{type(error).__name__}: {error}")
            self._write_line(f'{{"stopped":{stopped},"t":{time.monotonic_ns()}}}')
        self.close()
        if recording is self:
            set_recording(None)
        warn_at_user_line(
            f"the block ledger {str(self.path or self._requested)!r} stopped recording: "
            f"{type(error).__name__}: {error}. The run continues without it; check that the "
            "path is writable (and the disk not full), and that watched values can be "
            "fingerprinted.",
            RuntimeWarning,
        )

    def close(self) -> None:
        """Close the file (records already written stay)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):  # already closed, or its device is gone: nothing to keep
                os.close(fd)

    # Records.

    def _key_entry(self, key: object) -> list[Any]:
        """[exits so far, the record's text up to the count] for ``key`` (1 and 1.0 never share
        a counter): the key's text is made once per key."""
        key_text = json.dumps(key_to_json(key), separators=(",", ":"))
        entry = self._counts[type(key), key] = [0, f'{{"key":{key_text},"entry":']
        return entry

    def record_exit(self, frame: _stack.Frame) -> None:
        """Append the exiting block's record (called by the block machinery, under its lock).

        One function on this hot path (every block exit while recording): what does not change
        between records is made once (a key's text, each selection's reader, the rank when the
        file is a rank's) and the line is encoded and written in one piece.
        """
        try:
            if self._fd is None and not self._ensure_open():
                return
            owner, sources = frame[0], frame[1]
            if _root.generation != self._root:
                self._write_root()
            key = getattr(owner, "key", None)
            last = self._last_key
            if key is last[0]:  # the same object: the same type and value
                entry = last[1]
            else:
                entry = self._counts.get((type(key), key)) or self._key_entry(key)
                self._last_key = (key, entry)
            entry[0] += 1
            rank = self._file_rank  # the file is this rank's
            if rank is None:  # global_rank(), inlined: the group's, else 0
                rank = dist.get_rank() if _group_initialized() else 0
            reader = self._reader
            if reader.sources is not sources:
                reader = self._reader = reader_for(tuple(sources))
            line = (
                f'{entry[1]}{entry[0]},"rank":{rank},"t":{monotonic_ns()},'
                f'"state":{{{reader.text()}}}'
            )
            per_rank = getattr(owner, "per_rank", False)
            if per_rank is not False:  # True: the global rank; a process group: the rank in it
                line += f',"per_rank":{folded_rank(per_rank)}'
            if getattr(owner, "per_worker", False):
                info = get_worker_info()
                line += f',"per_worker":{0 if info is None else info.id}'
            if self._watch:  # read after the generators: a watched value may draw
                watched = {name: noted(get()) for name, get in self._watch}
                line += ',"watch":' + json.dumps(watched, separators=(",", ":"))
            if self._pending:
                with self._lock:
                    line += self._take_notes(_stack.open_count())
            data = (line + "}\n").encode()
            fd = self._fd  # _write(data), inlined
            written = os.write(-1 if fd is None else fd, data)  # -1: os.write raises EBADF
            if written < len(data):
                self._write(data[written:])  # a pipe, or a disk that fills, took part of it
            self.records += 1
        except Exception as error:  # a ledger never breaks the program it watches
            self._stop(error)

    def _take_notes(self, depth: int) -> str:
        """The notes made inside the exiting block (deeper than the blocks still open): each
        name's values in the order they were noted."""
        mine: dict[str, list[list[object]]] = {}
        for level, name, entry in self._pending:
            if level > depth:
                mine.setdefault(name, []).append(entry)
        if not mine:
            return ""
        self._pending = [item for item in self._pending if item[0] <= depth]
        return ',"notes":' + json.dumps(mine, separators=(",", ":"))

    def _write_root(self) -> None:
        """Write a root record: set_seed installed a new root since the last record."""
        self._root = _root.generation
        self._write_line(f'{{"root":{json.dumps(_root.peek_seed())},"t":{monotonic_ns()}}}')

    def _note(self, name: str, value: object) -> None:
        if self._stopped:
            return
        try:
            entry = noted(value)
            lock = _stack.lock
            if lock.acquire(False):  # free, or held by this thread: its blocks are the open ones
                try:
                    self._add_note(name, entry, _stack.open_count())
                finally:
                    lock.release()
            else:  # another thread is inside a block (never wait for it): a note for that block
                self._add_note(name, entry, _stack.open_count())
        except Exception as error:  # a ledger never breaks the program it watches
            self._stop(error)

    def _add_note(self, name: str, entry: list[object], depth: int) -> None:
        """Keep a note for the block open at ``depth`` (0: write it as a record of its own)."""
        if not self._ensure_open():
            return
        with self._lock:
            if depth:
                self._pending.append((depth, name, entry))
                return
            if _root.generation != self._root:
                self._write_root()
            notes = json.dumps({name: [entry]}, separators=(",", ":"))
            self._write_line(f'{{"notes":{notes},"rank":{self._rank()},"t":{monotonic_ns()}}}')
            self.records += 1
