"""Reading block ledgers: one file, checked field by field, and the files of a run.

A run is a ledger file, a folder of ledger files (one per rank), or the path given to
``record_blocks``/``REPRODUCIBLE_BLOCK_LEDGER`` when the ranks wrote ``.rank{N}`` files next to
it. A run's ledgers are grouped by rank: the rank's own, its DataLoader workers' and its other
child processes' (``.pid{PID}``); the diff pairs their records by key. Child and worker files
that carry another recording's token than the run's own ledgers (an earlier run's, left in the
same folder) are left out. Every field is checked here: the diff trusts what passes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproducible_block._streams.derivation import MT_WORDS
from reproducible_block._streams.keys import validate_key
from reproducible_block._streams.root import MAX_SEED
from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block.diagnostics._format import LEDGER_FORMAT, LEDGER_VERSION, key_from_json

__all__ = ["LedgerFile", "Run", "read_ledger", "read_run"]

#: A child process's ledger name (``ledger.pid123.jsonl``, ``ledger.pid123-1.jsonl``), for
#: ledgers whose header does not name the parent.
_CHILD_NAME = re.compile(r"\.pid\d+(-\d+)?(\.|$)")


@dataclass(frozen=True)
class LedgerFile:
    """One ledger as read: its header, its records, and whether its last line was torn."""

    path: Path
    header: dict[str, Any]
    records: list[dict[str, Any]]
    #: The last line had no newline (the run was killed while writing it); it was skipped.
    torn: bool = False

    @property
    def rank(self) -> int | None:
        rank = self.header.get("rank")
        return rank if isinstance(rank, int) else None

    @property
    def is_child(self) -> bool:
        """Whether a child process wrote it (its own ``.pid{PID}`` file)."""
        return self.header.get("parent") is not None or bool(_CHILD_NAME.search(self.path.name))

    @property
    def worker(self) -> dict[str, int] | None:
        """The DataLoader worker that wrote it (``id``, ``num_workers``, ``loader``), or None."""
        worker = self.header.get("worker")
        return worker if isinstance(worker, dict) else None

    @property
    def stopped(self) -> str | None:
        """Why a failure stopped this ledger (its records end there), or None."""
        for record in self.records:
            if "stopped" in record:
                return str(record["stopped"])
        return None

    @property
    def process(self) -> str:
        """Which process wrote it, in words: "the main process", "DataLoader worker 1 (pid
        42)" or "child process 42"."""
        worker, pid = self.worker, self.header.get("pid")
        if worker is not None:
            return f"DataLoader worker {worker['id']} (pid {pid})"
        return f"child process {pid}" if self.is_child else "the main process"


def _unreadable(path: Path, why: str) -> ReproducibleBlockValueError:
    return ReproducibleBlockValueError(
        f"{str(path)!r} is not a readable block ledger: {why}. Pass a file written by "
        "record_blocks() or REPRODUCIBLE_BLOCK_LEDGER, a folder of them, or the path given there."
    )


def read_ledger(path: str | os.PathLike[str]) -> LedgerFile:
    """Read a ledger file; a torn last line (a killed run) is skipped, any other error raises.

    >>> import tempfile, pathlib
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> from reproducible_block.diagnostics import record_blocks
    >>> _ = set_seed(0)
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "ledger.jsonl"
    >>> with record_blocks(target):
    ...     with ReproducibleBlock("init"):
    ...         pass
    >>> with open(target, "a") as file:  # as if killed in the middle of a line
    ...     _ = file.write('{"key":"tr')
    >>> ledger = read_ledger(target)
    >>> len(ledger.records) == 1 and ledger.torn
    True
    """
    location = Path(path)
    try:
        data = location.read_bytes()
    except OSError as error:
        raise _unreadable(location, f"{type(error).__name__}: {error.strerror or error}") from None
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # every record ends with a newline; a line without one was cut
    complete = lines[:-1]
    if not complete or not _is_header(complete[0]):
        raise _unreadable(location, "its first line is not a ledger header")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise _unreadable(location, f"line {number} is not JSON ({line[:60]!r})") from None
        if not isinstance(record, dict):
            raise _unreadable(location, f"line {number} is not a JSON object")
        records.append(record)
    header = records.pop(0)
    if header.get("version") != LEDGER_VERSION:
        older = isinstance(header.get("version"), int) and header["version"] < LEDGER_VERSION
        raise _unreadable(
            location,
            f"it has format version {header.get('version')!r} and this "
            f"reproducible_block reads version {LEDGER_VERSION}; "
            + (
                "record the run again with this version (version 1 kept one note per name "
                "and block, and no DataLoader worker's records), or diff it with the version "
                "that wrote it"
                if older
                else "use the version that wrote it"
            ),
        )
    number = 1
    try:
        _check_header(header)
        for record in records:
            number += 1
            _check_record(record)
    except _Invalid as invalid:
        where = f"line {number}, field {invalid.field}: {invalid.why}"
        raise _unreadable(location, where) from None
    return LedgerFile(location, header, records, torn)


# --- Checking every field of every record (one place: the diff trusts what passes) ----------------


class _Invalid(Exception):
    """A field that no ledger writer writes: where it is and what was expected."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(field)
        shown = json.dumps(value)
        self.field = field
        self.why = f"{shown[:60]}{'...' if len(shown) > 60 else ''} where {expected} belongs"


def _is_int(value: object, low: int = 0, high: int | None = None) -> bool:
    return type(value) is int and low <= value and (high is None or value <= high)


def _check(field: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise _Invalid(field, value, expected)


def _check_seed(field: str, value: object) -> None:
    _check(
        field,
        value,
        value is None or _is_int(value, 0, MAX_SEED),
        f"a root seed (an int from 0 to {MAX_SEED}, or null)",
    )


def _check_header(header: Mapping[str, Any]) -> None:
    for name in ("digest", "derivation"):
        _check(name, header.get(name), isinstance(header.get(name), str), "a str")
    _check_seed("root_seed", header.get("root_seed"))
    rank = header.get("rank")
    _check("rank", rank, rank is None or _is_int(rank), "a rank (an int >= 0, or null)")
    _check(
        "world_size",
        header.get("world_size"),
        _is_int(header.get("world_size"), 1),
        "a world size (an int >= 1)",
    )
    _check("pid", header.get("pid"), _is_int(header.get("pid")), "a process id (an int)")
    parent = header.get("parent")
    _check("parent", parent, parent is None or _is_int(parent), "a process id, or null")
    _check("run", header.get("run"), isinstance(header.get("run"), str), "a run token (a str)")
    worker = header.get("worker")
    _check(
        "worker",
        worker,
        worker is None
        or (
            isinstance(worker, dict)
            and set(worker) == {"id", "num_workers", "loader"}
            and all(type(value) is int for value in worker.values())
        ),
        "a DataLoader worker ({id, num_workers, loader}: ints), or null",
    )
    versions = header.get("versions", {})
    _check(
        "versions",
        versions,
        isinstance(versions, dict)
        and all(isinstance(version, str) for version in versions.values()),
        "a map of names to str",
    )


def _is_value(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and 1 <= len(entry) <= 2
        and isinstance(entry[0], str)
        and (len(entry) == 1 or (type(entry[1]) in (int, float, str)))
    )


def _check_named(field: str, values: object, *, several: bool = False) -> None:
    """Watched values, {name: [fingerprint, number?]}, or notes (``several``): {name: a list
    of [fingerprint, number?], in the order noted}."""
    if not isinstance(values, dict):
        raise _Invalid(field, values, "a map of names to values")
    value = "[fingerprint] or [fingerprint, number] (a str, then an int, float or str)"
    for name, entry in values.items():
        if several:
            _check(
                f"{field}.{name}",
                entry,
                isinstance(entry, list) and bool(entry) and all(map(_is_value, entry)),
                f"a non-empty list of {value}",
            )
        else:
            _check(f"{field}.{name}", entry, _is_value(entry), value)


def _check_state(states: object) -> None:
    if not isinstance(states, dict):
        raise _Invalid("state", states, "a map of generator names to entries")
    for name, entry in states.items():
        field = f"state.{name}"
        _check(
            field,
            entry,
            isinstance(entry, list) and len(entry) in (1, 3),
            "[fingerprint] or [fingerprint, position, key digest]",
        )
        _check(f"{field}[0]", entry[0], isinstance(entry[0], str), "a fingerprint (a str)")
        if len(entry) == 3:
            _check(
                f"{field}[1]",
                entry[1],
                _is_int(entry[1], 0, MT_WORDS),
                f"a position in the key (an int from 0 to {MT_WORDS})",
            )
            digest = entry[2]
            _check(
                f"{field}[2]",
                digest,
                isinstance(digest, str)
                and len(digest) == 16
                and all(c in "0123456789abcdef" for c in digest),
                "a key digest (16 hex digits)",
            )


def _check_record(record: Mapping[str, Any]) -> None:
    """Every field of one record after the header (a block, a root or a stand-alone note)."""
    if "stopped" in record:
        _check("stopped", record["stopped"], isinstance(record["stopped"], str), "a str")
    elif "root" in record:
        _check_seed("root", record["root"])
    elif "key" not in record and "notes" not in record:
        raise _Invalid("key", None, "a block record's key (or a root, notes or stopped record)")
    _check("t", record.get("t"), _is_int(record.get("t")), "a time (an int, in ns)")
    if "stopped" in record or "root" in record:
        return
    rank = record.get("rank")
    _check("rank", rank, _is_int(rank), "a rank (an int >= 0)")
    if "notes" in record:
        _check_named("notes", record["notes"], several=True)
    if "key" not in record:
        return
    try:
        validate_key(key_from_json(record["key"]))
    except (TypeError, ValueError) as error:
        raise _Invalid("key", record["key"], f"a block key ({error})") from None
    _check(
        "entry",
        record.get("entry"),
        _is_int(record.get("entry"), 1),
        "the count of this key's exits (an int >= 1)",
    )
    _check_state(record.get("state"))
    for fold in ("per_rank", "per_worker"):
        if fold in record:
            _check(fold, record[fold], _is_int(record[fold]), "a rank or worker id (an int >= 0)")
    if "watch" in record:
        _check_named("watch", record["watch"])


def _is_header(line: bytes) -> bool:
    try:
        header = json.loads(line)
    except ValueError:
        return False
    return isinstance(header, dict) and header.get("format") == LEDGER_FORMAT


def _is_ledger(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return _is_header(file.readline(1 << 16))
    except OSError:  # a file that vanished or cannot be read
        return False


def _run_files(run: str | os.PathLike[str]) -> list[Path]:
    """The ledger files of a run: a file, a folder's ledgers, or a base path's rank files."""
    location = Path(run)
    if location.is_file():  # with its children's and DataLoader workers' files beside it
        stem, suffix = (location.stem, location.suffix) if location.suffix else (location.name, "")
        beside = {
            path
            for kind in ("pid", "worker")
            for path in location.parent.glob(f"{stem}.{kind}*{suffix}")
            if path.is_file()
        }
        return [location, *sorted(beside)]
    if location.is_dir():
        found = sorted(path for path in location.iterdir() if path.is_file() and _is_ledger(path))
        where = f"the folder {str(location)!r} holds no ledger file"
    else:
        stem, suffix = (location.stem, location.suffix) if location.suffix else (location.name, "")
        pattern = f"{stem}.rank*{suffix}"
        found = (
            sorted(
                {
                    path
                    for kind in ("rank", "pid", "worker")
                    for path in location.parent.glob(f"{stem}.{kind}*{suffix}")
                    if path.is_file()
                }
            )
            if location.parent.is_dir()
            else []
        )
        where = f"{str(location)!r} does not exist, nor do rank files {pattern!r} next to it"
    if not found:
        raise ReproducibleBlockValueError(
            f"no block ledger found: {where}. Pass a ledger file, a folder of ledgers, or the "
            "path given to record_blocks() / REPRODUCIBLE_BLOCK_LEDGER."
        )
    return found


@dataclass(frozen=True)
class Run:
    """A run's ledgers: by rank, the rank's own first (None: it has none), then its children's
    and DataLoader workers' in file name order; and the files left out (another recording's)."""

    ranks: dict[int | None, list[LedgerFile]]
    left_out: tuple[Path, ...] = ()


def read_run(run: str | os.PathLike[str]) -> Run:
    """Every ledger of a run, by rank (see :class:`Run`)."""
    own: dict[int | None, LedgerFile] = {}
    children: list[LedgerFile] = []
    for path in _run_files(run):
        ledger = read_ledger(path)
        if ledger.is_child:
            children.append(ledger)
            continue
        other = own.get(ledger.rank)
        if other is not None:
            raise ReproducibleBlockValueError(
                f"{str(run)!r} holds two ledgers for rank {ledger.rank}: {str(other.path)!r} and "
                f"{str(path)!r}. Keep one run's ledgers per folder, or pass the files."
            )
        own[ledger.rank] = ledger
    tokens = {ledger.header.get("run") for ledger in own.values()}
    ranks: dict[int | None, list[LedgerFile]] = {rank: [ledger] for rank, ledger in own.items()}
    left_out = []
    for ledger in children:
        if own and ledger.header.get("run") not in tokens:
            left_out.append(ledger.path)
            continue
        ranks.setdefault(ledger.rank, []).append(ledger)
    return Run(ranks, tuple(left_out))
