"""The block ledger: one line per block exit, to find where two runs part (see ``_run_diff``).

While a ledger records, every block exit appends one JSON line: the block's key, the rank, how
many times this key has exited so far, and a short fingerprint of each managed generator's state
at exit (what the block consumed). For the three Mersenne Twister generators (Python ``random``,
NumPy's global ``RandomState``, torch's CPU generator, and registered CPU ``torch.Generator``\\ s)
it also records the position in the key and a digest of the 624 key words, so the diff can replay
the block's stream from its derived entry state and count how many 32-bit numbers it drew.

The block machinery calls one hook, at block exit, while the block's states are still installed:
``_stack.exit_hook``, which :func:`set_recording` sets to the recording ledger's ``record_exit``.
It reads the frame's owner (its ``key``, ``per_rank`` and ``per_worker``), the frame's sources
(each source's ``name``, and its state through ``save()`` and ``twister_state()``) and
``_stack.open_count()`` (the blocks still open around the exiting one). Off, it costs one global
lookup.

Writing is crash-safe: every line goes out whole with one ``os.write`` on an ``O_APPEND`` file
descriptor, nothing is buffered in the process, so a killed run (even ``SIGKILL``) leaves every
record of the blocks that had exited, and at most one torn last line, which the reader skips.
Nothing is ``fsync``-ed: a power cut or an operating system crash can lose what the kernel had
not yet written to the disk.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn
from zlib import crc32

import numpy as np
import torch
from torch.utils.data import get_worker_info

from reproducible_block._blocks import stack as _stack
from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.registry import MERSENNE_TWISTER_SLOTS
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import (
    DERIVATION_VERSION,
    block_bits,
    block_message,
    encode_key,
    folds,
    mt_words,
    slot,
)
from reproducible_block._streams.keys import validate_key
from reproducible_block._support.distributed import (
    folded_rank,
    global_rank,
    is_distributed,
    world_size,
)
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from reproducible_block._support.fingerprint import fingerprint, plain_tensor
from reproducible_block._support.transforms import (
    dynamo_callback,
    is_dynamo_compiling,
    outside_functorch,
)
from reproducible_block._support.version import __version__
from reproducible_block._support.warnings import warn_at_user_line

__all__ = [
    "DERIVATION",
    "LEDGER_ENVIRONMENT_VARIABLE",
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "BlockLedger",
    "entry_state_images",
    "key_from_json",
    "key_to_json",
    "ledger_note",
    "mt_key_digest",
    "record_blocks",
    "recording",
    "set_recording",
]

#: Set it to a path to record the whole run's blocks (one file per rank under torch.distributed).
LEDGER_ENVIRONMENT_VARIABLE = "REPRODUCIBLE_BLOCK_LEDGER"
#: Set by a process that records from the environment variable, so that its children know it:
#: ``"{pid}:{rank}"``, or ``"{pid}"`` when it has no rank.
_PARENT_VARIABLE = "REPRODUCIBLE_BLOCK_LEDGER_PARENT"
#: The most ``.pid{PID}-{n}`` names a child tries when its ``.pid{PID}`` file exists.
_MAX_NAME_TRIES = 100
LEDGER_FORMAT = "reproducible_block-ledger"
LEDGER_VERSION = 1
#: The derivation scheme ``entry_state_images`` implements; the diff replays only ledgers of it.
DERIVATION = f"v{DERIVATION_VERSION}"
#: Keys are told apart by their 2nd and 3rd words; states by a CRC-32 of the rest (see _entry).
_DIGEST = "key-words-64+crc32"

#: The ledger being written to, or None. Change it with :func:`set_recording`, which also sets
#: the block exit hook.
recording: BlockLedger | None = None


def set_recording(ledger: BlockLedger | None) -> BlockLedger | None:
    """Make ``ledger`` the one that records (None: none) and return the previous one."""
    global recording
    previous, recording = recording, ledger
    _stack.exit_hook = None if ledger is None else ledger.record_exit
    return previous


def key_to_json(key: object) -> object:
    """A block key as JSON data: ints and str as they are, a tuple as a list (round-trips).

    >>> key_from_json(json.loads(json.dumps(key_to_json(("sample", 12))))) == ("sample", 12)
    True
    """
    return list(key) if isinstance(key, tuple) else key


def key_from_json(value: object) -> Any:
    """The block key a :func:`key_to_json` value stands for (a list becomes a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def mt_key_digest(key_words: bytes) -> str:
    """What the ledger records to tell one 624-word Mersenne Twister key from the next: its
    second and third words (``key_words`` is the key as uint32, little-endian), in hex."""
    return key_words[4:12].hex()


# --- Reading a generator's state at block exit -------------------------------------------------
# A reader returns the JSON text of one source's entry: ["fp"] for any source, or
# ["fp",position,"key digest"] for a Mersenne Twister, whose position counts the 32-bit words
# used from the current key (624: all of them, the next draw twists).

_Readers = tuple[tuple[str, Callable[[], Any], Callable[[Any], Any] | None,
                       GeneratorSource[Any]], ...]
#: Each block selection's readers, by the identity of its sources tuple (one per selection).
#: Sources need not be hashable (a user's dataclass source with eq=True is not); a value holds
#: its tuple, so the id is not reused while it is cached.
_reader_cache: dict[int, tuple[tuple[GeneratorSource[Any], ...], _Readers]] = {}


def _readers(sources: tuple[GeneratorSource[Any], ...]) -> _Readers:
    """Each source's JSON key and bound methods (a block's sources are one tuple per
    selection), so that a record reads them without a call of ours per source. A kind that is
    no Mersenne Twister gets no ``twister_state`` reader: its state is read once, whole."""
    cached = _reader_cache.get(id(sources))
    if cached is not None and cached[0] is sources:
        return cached[1]
    readers = tuple(
        (
            json.dumps(source.name) + ":",
            source.save,
            source.twister_state if source.mersenne_twister else None,
            source,
        )
        for source in sources
    )
    if len(_reader_cache) >= 64:
        _reader_cache.clear()
    _reader_cache[id(sources)] = (sources, readers)
    return readers


# --- The entry state a block derives -----------------------------------------------------------


def entry_state_images(
    root_seed: int,
    key: object,
    per_rank: int | None,
    source_names: Sequence[str],
    per_worker: int | None = None,
) -> dict[str, bytes]:
    """The 624 key words (uint32, little-endian) each built-in Mersenne Twister has on entry.

    A pure function of (root seed, key, the rank and worker id folded in with ``per_rank`` and
    ``per_worker``, the names of the sources the block manages): the derivation blocks use.
    Every entry state is a fresh key whose next draw twists. Sources other than ``"random"``,
    ``"numpy"`` and ``"torch"`` are left out.

    >>> images = entry_state_images(0, "train", None, ("random", "numpy", "torch"))
    >>> sorted(images) == ["numpy", "random", "torch"] and len(images["torch"]) == 2496
    True
    """
    bits = block_bits(block_message(root_seed, folds(per_rank, per_worker)
                                    + encode_key(validate_key(key))))
    return {
        name: mt_words(slot(bits, name)).astype("<u4").tobytes()
        for name in source_names
        if name in MERSENNE_TWISTER_SLOTS
    }


# --- The ledger --------------------------------------------------------------------------------


def _constant(value: object) -> Callable[[], object]:
    return lambda: value


def _watched(watch: object) -> list[tuple[str, Callable[[], object]]]:
    """``watch`` as (name, getter) pairs, checked."""
    if watch is None:
        return []
    allowed = (
        "a dict from names to tensors, nn.Modules (their state_dict is fingerprinted) or "
        "callables with no arguments, e.g. watch={'model': model, 'lr': lambda: scheduler.lr}"
    )
    if not isinstance(watch, Mapping):
        raise ReproducibleBlockTypeError(f"watch={watch!r} is not allowed; pass {allowed}.")
    pairs: list[tuple[str, Callable[[], object]]] = []
    for name, value in watch.items():
        if not isinstance(name, str) or not name:
            raise ReproducibleBlockTypeError(
                f"watch has the name {name!r}; names are non-empty str. Pass {allowed}."
            )
        if isinstance(value, torch.nn.Module):
            pairs.append((name, value.state_dict))
        elif isinstance(value, torch.Tensor):
            pairs.append((name, _constant(value)))
        elif callable(value):
            pairs.append((name, value))
        else:
            raise ReproducibleBlockTypeError(
                f"watch[{name!r}] is {type(value).__name__} {value!r}; pass {allowed}."
            )
    return pairs


def _size(value: torch.Tensor | np.ndarray) -> int:
    return value.numel() if isinstance(value, torch.Tensor) else value.size


def _noted(value: object) -> list[object]:
    """A watched or noted value as [fingerprint], or [fingerprint, number] for one number.

    A tensor under ``torch.func`` is read through its wrappers; a sparse one by its values.
    """
    entry: list[object] = [fingerprint(value)]
    number: object = None
    if isinstance(value, torch.Tensor):
        value = plain_tensor(value)
        if value.numel() == 1:
            with outside_functorch():
                number = (value if value.layout is torch.strided else value.to_dense()).item()
    elif isinstance(value, np.ndarray) and _size(value) == 1:
        number = value.item()
    elif isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, bool):
        number = int(number)
    if isinstance(number, float) and not math.isfinite(number):
        number = repr(number)  # JSON has no NaN or infinity: 'nan', 'inf', '-inf'
    if isinstance(number, (int, float, str)):
        entry.append(number)
    return entry


def _check_note_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ReproducibleBlockTypeError(
            f"a note's name must be a non-empty str, such as 'loss'; got "
            f"{type(name).__name__} {name!r}."
        )


def _launcher_rank() -> int | None:
    """The rank a launcher (torchrun) gave this process in ``RANK``/``WORLD_SIZE``, if any."""
    rank, size = os.environ.get("RANK", ""), os.environ.get("WORLD_SIZE", "")
    if rank.isdigit() and size.isdigit():
        return int(rank)
    return None


def _parent_from_environment() -> tuple[int, int | None] | None:
    """The recording process this one inherited ``REPRODUCIBLE_BLOCK_LEDGER`` from, as (pid,
    its rank or None), or None when this process is that one (or nothing records above it).
    A value that cannot be read names no process: this one is then a child (it never writes a
    file that another process may own)."""
    value = os.environ.get(_PARENT_VARIABLE)
    if value is None:
        return None
    pid, _, rank = value.partition(":")
    if pid == str(os.getpid()):
        return None
    return (int(pid) if pid.isdigit() else -1), (int(rank) if rank.isdigit() else None)


def _announce(rank: int | None) -> None:
    """Tell the children this process starts that it records (see _parent_from_environment)."""
    os.environ[_PARENT_VARIABLE] = str(os.getpid()) if rank is None else f"{os.getpid()}:{rank}"


def _in_loader_worker() -> bool:
    return get_worker_info() is not None


def _with_suffix(path: Path, tag: str) -> Path:
    """``runs/ledger.jsonl`` with ``rank1`` inserted: ``runs/ledger.rank1.jsonl``."""
    if path.suffix:
        return path.with_name(f"{path.stem}.{tag}{path.suffix}")
    return path.with_name(f"{path.name}.{tag}")


class BlockLedger:
    """A ledger being written: what :func:`record_blocks` yields (see there).

    ``path`` is the file written (the requested path, with ``.rank{N}`` inserted under
    ``torch.distributed``, or ``.pid{PID}`` in a child of the process that records from
    ``REPRODUCIBLE_BLOCK_LEDGER``), None until it is opened; ``records`` counts the lines
    written after the header. :meth:`note` adds a value's fingerprint to the record of the
    innermost open block. It is a handle on a file this process writes: it cannot be copied or
    pickled (pass ``path``).
    """

    def __init__(self, path: str | os.PathLike[str], watch: object = None, *,
                 from_environment: bool = False,
                 parent: tuple[int, int | None] | None = None, forked: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ReproducibleBlockTypeError(
                f"the ledger path must be a non-empty str or os.PathLike, such as "
                f"'runs/a/ledger.jsonl'; got {type(path).__name__} {path!r}."
            )
        self._requested = Path(path)
        self._watch = _watched(watch)
        self._from_environment = from_environment
        # The recording process this one descends from (pid, rank), and whether it is a fork
        # of it: a child writes its own .pid{PID} file, never the file its parent owns.
        self._parent = parent
        self._forked = forked
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
        """Whether this process is a child of the recording process it inherited the ledger
        from (forked, or started with the variable inherited), rather than a rank of its own.

        A process that has a rank its parent did not have (ranks a launcher script started)
        owns that rank's file; any other child of a recorder writes a ``.pid{PID}`` file.
        """
        if self._forked:
            return True
        if self._parent is None:
            return False
        return rank is None or rank == self._parent[1]

    def _target(self) -> Path | None:
        """The file this process writes, or None when it should not record (a loader worker)."""
        if _in_loader_worker():
            return None
        rank = global_rank() if is_distributed() else _launcher_rank()
        self._file_rank = rank
        if self._is_child(rank):
            return _with_suffix(self._requested, f"pid{os.getpid()}")
        if rank is not None:
            return _with_suffix(self._requested, f"rank{rank}")
        return self._requested

    def _open(self) -> None:
        target = self._target()
        if target is None:
            self._stopped = True
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if self._is_child(self._file_rank):
            # A child's name is its pid's: a file there is another run's (pids are reused),
            # and a recording never destroys records. Take the first free name.
            self._fd, target = self._open_new(target, flags | os.O_EXCL)
        else:
            # The process that armed the ledger owns its file: a new run replaces the last.
            self._fd = os.open(target, flags | os.O_TRUNC, 0o644)
        self.path = target
        if self._from_environment:
            _announce(self._file_rank)
        self._write_line(json.dumps(self._header(), separators=(",", ":")))

    @staticmethod
    def _open_new(target: Path, flags: int) -> tuple[int, Path]:
        """Create ``target``, or the first of ``target`` with ``-1``, ``-2``... after the pid
        that does not exist yet (raises FileExistsError after _MAX_NAME_TRIES)."""
        candidate = target
        for attempt in range(1, _MAX_NAME_TRIES + 1):
            try:
                return os.open(candidate, flags, 0o644), candidate
            except FileExistsError:
                stem = target.stem if target.suffix else target.name
                candidate = target.with_name(f"{stem}-{attempt}{target.suffix}")
        return os.open(candidate, flags, 0o644), candidate

    def _header(self) -> dict[str, Any]:
        root = _root.peek_seed()
        self._root = _root.generation
        return {
            "format": LEDGER_FORMAT,
            "version": LEDGER_VERSION,
            "digest": _DIGEST,
            "derivation": DERIVATION,
            "root_seed": root,
            "rank": self._file_rank,
            "world_size": world_size(),
            "pid": os.getpid(),
            # The recording process this one is a child of (its own .pid file), or None.
            "parent": None if not self._is_child(self._file_rank) or self._parent is None
            else self._parent[0],
            "versions": {
                "python": platform.python_version(),
                "reproducible_block": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
        }

    def _write_line(self, line: str) -> None:
        """Write one line whole (callers have the file open)."""
        data = (line + "\n").encode()
        fd = self._fd if self._fd is not None else -1  # -1: os.write raises EBADF
        written = os.write(fd, data)
        while written < len(data):  # pragma: no cover - regular files take whole writes
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
        """[exits so far, the key's JSON text] for ``key`` (1 and 1.0 never share a counter)."""
        slot = (type(key), key)
        entry = self._counts.get(slot)
        if entry is None:
            entry = self._counts[slot] = [0, json.dumps(key_to_json(key), separators=(",", ":"))]
        entry[0] += 1
        return entry

    def record_exit(self, frame: _stack.Frame) -> None:
        """Append the exiting block's record (called by the block machinery, under its lock)."""
        try:
            self._record_exit(frame)
        except Exception as error:  # a ledger never breaks the program it watches
            self._stop(error)

    def _record_exit(self, frame: _stack.Frame) -> None:
        if self._fd is None and not self._ensure_open():
            return
        owner, sources = frame[0], frame[1]
        if _root.generation != self._root:
            self._write_root()
        count, key_text = self._key_entry(getattr(owner, "key", None))
        rank = self._rank()
        parts = []
        for name, save, twister_state, source in _readers(tuple(sources)):  # _entry(), inlined
            twister = None if twister_state is None else twister_state(save())
            if twister is None:
                parts.append(f'{name}["{fingerprint(source.get_state())}"]')
            else:
                parts.append(
                    f'{name}["{crc32(twister[2]):08x}",{twister[1]},"{twister[0].hex()}"]'
                )
        line = f'{{"key":{key_text},"entry":{count},"rank":{rank},"state":{{{",".join(parts)}}}'
        per_rank = getattr(owner, "per_rank", False)
        if per_rank is not False:  # True: the global rank; a process group: the rank in it
            line += f',"per_rank":{folded_rank(per_rank)}'
        if getattr(owner, "per_worker", False):
            info = get_worker_info()
            line += f',"per_worker":{0 if info is None else info.id}'
        if self._watch:
            watched = {name: _noted(get()) for name, get in self._watch}
            line += ',"watch":' + json.dumps(watched, separators=(",", ":"))
        if self._pending:
            with self._lock:
                line += self._take_notes(_stack.open_count())
        self._write_line(line + "}")
        self.records += 1

    def _take_notes(self, depth: int) -> str:
        """The notes made inside the exiting block (deeper than the blocks still open)."""
        mine = [(name, entry) for level, name, entry in self._pending if level > depth]
        if not mine:
            return ""
        self._pending = [item for item in self._pending if item[0] <= depth]
        return ',"notes":' + json.dumps(dict(mine), separators=(",", ":"))

    def _write_root(self) -> None:
        """Write a root record: set_seed installed a new root since the last record."""
        self._root = _root.generation
        self._write_line(f'{{"root":{json.dumps(_root.peek_seed())}}}')

    def _note(self, name: str, value: object) -> None:
        if self._stopped:
            return
        try:
            entry = _noted(value)
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
            notes = json.dumps({name: entry}, separators=(",", ":"))
            self._write_line(f'{{"notes":{notes},"rank":{self._rank()}}}')
            self.records += 1


def ledger_note(name: str, value: object) -> None:
    """Note ``value`` (a tensor, array, number or a container of those) as ``name`` in the
    ledger that is recording, if any (else nothing happens).

    The ledger is the one :func:`record_blocks` (or the ``REPRODUCIBLE_BLOCK_LEDGER``
    environment variable) started: a training step can call ``ledger_note("loss", loss)``
    whether or not a run records. Inside a block the note goes into that block's record (the
    innermost open block, at its exit); outside every block it is written at once as a record
    of its own. A one-element value is also recorded as a number, so the diff can show both.

    A name that is not a non-empty str is refused either way; nothing else raises, nor waits:
    a note from another thread while a block is open goes into that block's record; under
    ``torch.compile`` it runs outside the graph; under ``torch.func`` it reads the wrapped
    values; a sparse tensor is noted by its values. A value that cannot be fingerprinted stops
    the ledger with one warning.

    >>> ledger_note("loss", 0.25) is None  # nothing records here: a no-op
    True
    """
    _check_note_name(name)
    active = recording
    if active is None:
        return
    if is_dynamo_compiling() or dynamo_callback() is not None:
        from reproducible_block._support.compiled import hidden_call

        hidden_call(active._note, name, value)
    else:
        active._note(name, value)


@contextmanager
def record_blocks(
    path: str | os.PathLike[str], *, watch: Mapping[str, object] | None = None
) -> Iterator[BlockLedger]:
    """Record every block exit in ``path`` (JSON lines) while the ``with`` section runs.

    Each record holds the block's key, the rank, a running count of this key's exits
    (``entry``), and a short fingerprint of each managed generator's state at exit, with the
    position and a key digest for the Mersenne Twister generators (so ``python -m
    reproducible_block diff`` can count what a block drew). ``watch`` maps names to values
    fingerprinted at every block exit: a tensor (its current values), an ``nn.Module`` (its
    ``state_dict()``) or a callable with no arguments (it must not draw random numbers).
    Watching a large model at every exit is slow; :func:`ledger_note` (or the yielded ledger's
    ``note``) records a value once, in the current block's record, e.g. the loss.

    The file is created (parent folders too) or truncated on entry, with a header line (format
    version, root seed, derivation scheme, library versions). Under an initialised
    ``torch.distributed`` group (or with a launcher's ``RANK``), ``.rank{N}`` is inserted
    before the suffix: ``ledger.jsonl`` becomes ``ledger.rank1.jsonl``. Blocks in DataLoader
    worker processes and in forked children are not recorded: record with ``num_workers=0``
    (per-sample blocks give the same numbers whatever ``num_workers``).

    Every line is written whole with one ``os.write`` on an ``O_APPEND`` descriptor, unbuffered:
    a killed run keeps every record of the blocks that had exited (at most the last line is
    torn; readers skip it). A failure to write stops the ledger with a ``RuntimeWarning``; the
    program goes on. For a whole run without code changes, set ``REPRODUCIBLE_BLOCK_LEDGER``.

    >>> import tempfile, torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> folder = tempfile.mkdtemp()
    >>> with record_blocks(f"{folder}/ledger.jsonl") as ledger:
    ...     for step in range(3):
    ...         with ReproducibleBlock(("step", step)):
    ...             ledger_note("loss", torch.rand(()))
    >>> ledger.records == 3
    True
    """
    ledger = BlockLedger(path, watch)
    with _stack.held("record_blocks()"):
        try:
            ledger._open()
        except OSError as error:
            raise ReproducibleBlockValueError(
                f"cannot write the block ledger at {str(path)!r}: {error}. Pass a path in a "
                "writable folder, such as 'runs/a/ledger.jsonl'."
            ) from None
        previous = set_recording(ledger)
    try:
        yield ledger
    finally:
        with _stack.held("record_blocks()"):
            set_recording(previous)
            ledger.close()


def _start_from_environment() -> None:
    """Arm a ledger for the whole run when ``REPRODUCIBLE_BLOCK_LEDGER`` is set (at import).

    The file opens at the first record, when ``torch.distributed`` is usually initialised.
    """
    path = os.environ.get(LEDGER_ENVIRONMENT_VARIABLE)
    if not path:
        return
    parent = _parent_from_environment()
    _announce(_launcher_rank())
    set_recording(BlockLedger(path, from_environment=True, parent=parent))


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children
    """A forked child never writes its parent's file (its lines would interleave).

    A ledger from the environment variable starts afresh in the child, lazily: a DataLoader
    worker records nothing, any other child writes its own ``.pid{PID}`` file (the rank file
    stays its parent's). A ledger from :func:`record_blocks` stops in the child.
    """
    if recording is None:
        return
    fd, recording._fd = recording._fd, None
    if fd is not None:
        os.close(fd)
    if recording._from_environment:
        parent_rank = recording._file_rank if recording.path is not None else _launcher_rank()
        set_recording(BlockLedger(recording._requested, from_environment=True,
                                  parent=(os.getppid(), parent_rank), forked=True))
        _announce(parent_rank)
    else:
        set_recording(None)


os.register_at_fork(after_in_child=_after_fork_in_child)
_start_from_environment()
