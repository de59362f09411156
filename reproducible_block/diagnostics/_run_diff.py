"""Reading block ledgers and finding the first record where two runs part.

A run is a ledger file, a folder of ledger files (one per rank), or the path given to
``record_blocks``/``REPRODUCIBLE_BLOCK_LEDGER`` when the ranks wrote ``.rank{N}`` files next to
it. Ledgers are paired by rank and compared record by record. The ``.pid{PID}`` ledgers of child
processes are paired within their rank: each run's children of a rank are ordered by their first
record (then by their number of records, then by file name), and the n-th child of A is compared
with the n-th child of B. When a Mersenne Twister's state
differs, each run's block is replayed from its derived entry state to count the 32-bit numbers it
drew (at most :data:`MAX_REPLAYED_DRAWS`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from reproducible_block._streams.derivation import MT_WORDS
from reproducible_block._streams.keys import validate_key
from reproducible_block._streams.root import MAX_SEED
from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block.diagnostics._ledger import (
    DERIVATION,
    LEDGER_FORMAT,
    LEDGER_VERSION,
    entry_state_images,
    key_from_json,
    mt_key_digest,
)

__all__ = ["MAX_REPLAYED_DRAWS", "LedgerFile", "RunDiff", "diff_runs", "read_ledger"]

#: The most 32-bit numbers the diff replays per block to say how many it drew.
MAX_REPLAYED_DRAWS = 10**7

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
        raise _unreadable(
            location, f"it has format version {header.get('version')!r} and this "
            f"reproducible_block reads version {LEDGER_VERSION}; use the version that wrote it"
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
    _check(field, value, value is None or _is_int(value, 0, MAX_SEED),
           f"a root seed (an int from 0 to {MAX_SEED}, or null)")


def _check_header(header: Mapping[str, Any]) -> None:
    for name in ("digest", "derivation"):
        _check(name, header.get(name), isinstance(header.get(name), str), "a str")
    _check_seed("root_seed", header.get("root_seed"))
    rank = header.get("rank")
    _check("rank", rank, rank is None or _is_int(rank), "a rank (an int >= 0, or null)")
    _check("world_size", header.get("world_size"), _is_int(header.get("world_size"), 1),
           "a world size (an int >= 1)")
    _check("pid", header.get("pid"), _is_int(header.get("pid")), "a process id (an int)")
    parent = header.get("parent")
    _check("parent", parent, parent is None or _is_int(parent), "a process id, or null")
    versions = header.get("versions", {})
    _check("versions", versions, isinstance(versions, dict) and all(
        isinstance(version, str) for version in versions.values()), "a map of names to str")


def _check_named(field: str, values: object) -> None:
    """Watched values or notes: {name: [fingerprint]} or {name: [fingerprint, number]}."""
    if not isinstance(values, dict):
        raise _Invalid(field, values, "a map of names to [fingerprint, value]")
    for name, entry in values.items():
        _check(f"{field}.{name}", entry, isinstance(entry, list) and 1 <= len(entry) <= 2
               and isinstance(entry[0], str) and (len(entry) == 1 or (
                   type(entry[1]) in (int, float, str))),
               "[fingerprint] or [fingerprint, number] (a str, then an int, float or str)")


def _check_state(states: object) -> None:
    if not isinstance(states, dict):
        raise _Invalid("state", states, "a map of generator names to entries")
    for name, entry in states.items():
        field = f"state.{name}"
        _check(field, entry, isinstance(entry, list) and len(entry) in (1, 3),
               "[fingerprint] or [fingerprint, position, key digest]")
        _check(f"{field}[0]", entry[0], isinstance(entry[0], str), "a fingerprint (a str)")
        if len(entry) == 3:
            _check(f"{field}[1]", entry[1], _is_int(entry[1], 0, MT_WORDS),
                   f"a position in the key (an int from 0 to {MT_WORDS})")
            digest = entry[2]
            _check(f"{field}[2]", digest, isinstance(digest, str) and len(digest) == 16
                   and all(c in "0123456789abcdef" for c in digest),
                   "a key digest (16 hex digits)")


def _check_record(record: Mapping[str, Any]) -> None:
    """Every field of one record after the header (a block, a root or a stand-alone note)."""
    if "root" in record:
        _check_seed("root", record["root"])
        return
    if "key" not in record and "notes" not in record:
        raise _Invalid("key", None, "a block record's key (or a root or notes record)")
    rank = record.get("rank")
    _check("rank", rank, _is_int(rank), "a rank (an int >= 0)")
    if "notes" in record:
        _check_named("notes", record["notes"])
    if "key" not in record:
        return
    try:
        validate_key(key_from_json(record["key"]))
    except (TypeError, ValueError) as error:
        raise _Invalid("key", record["key"], f"a block key ({error})") from None
    _check("entry", record.get("entry"), _is_int(record.get("entry"), 1),
           "the count of this key's exits (an int >= 1)")
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
    except OSError:  # pragma: no cover - a file that vanished or cannot be read
        return False


def _run_files(run: str | os.PathLike[str]) -> list[Path]:
    """The ledger files of a run: a file, a folder's ledgers, or a base path's rank files."""
    location = Path(run)
    if location.is_file():
        return [location]
    if location.is_dir():
        found = sorted(path for path in location.iterdir() if path.is_file() and _is_ledger(path))
        where = f"the folder {str(location)!r} holds no ledger file"
    else:
        stem, suffix = (location.stem, location.suffix) if location.suffix else (location.name, "")
        pattern = f"{stem}.rank*{suffix}"
        found = sorted({
            path for kind in ("rank", "pid")
            for path in location.parent.glob(f"{stem}.{kind}*{suffix}") if path.is_file()
        }) if location.parent.is_dir() else []
        where = f"{str(location)!r} does not exist, nor do rank files {pattern!r} next to it"
    if not found:
        raise ReproducibleBlockValueError(
            f"no block ledger found: {where}. Pass a ledger file, a folder of ledgers, or the "
            "path given to record_blocks() / REPRODUCIBLE_BLOCK_LEDGER."
        )
    return found


#: Where a ledger sits in its run: (rank, 0) for a rank's own ledger, (rank, n) for its n-th
#: child process's.
_Slot = tuple[int | None, int]


def _child_order(ledger: LedgerFile) -> tuple[str, int, str]:
    """What orders a rank's child ledgers in both runs alike: the first record, then the
    number of records (a pid, or when a child started, differs from run to run)."""
    first = json.dumps(ledger.records[0], sort_keys=True) if ledger.records else ""
    return first, len(ledger.records), ledger.path.name


def _read_run(run: str | os.PathLike[str]) -> dict[_Slot, LedgerFile]:
    by_slot: dict[_Slot, LedgerFile] = {}
    children: dict[int | None, list[LedgerFile]] = {}
    for path in _run_files(run):
        ledger = read_ledger(path)
        if ledger.is_child:
            children.setdefault(ledger.rank, []).append(ledger)
            continue
        other = by_slot.get((ledger.rank, 0))
        if other is not None:
            raise ReproducibleBlockValueError(
                f"{str(run)!r} holds two ledgers for rank {ledger.rank}: {str(other.path)!r} and "
                f"{str(path)!r}. Keep one run's ledgers per folder, or pass the files."
            )
        by_slot[(ledger.rank, 0)] = ledger
    for rank, found in children.items():
        for number, ledger in enumerate(sorted(found, key=_child_order), start=1):
            by_slot[(rank, number)] = ledger
    return by_slot


# --- Counting what a block drew ------------------------------------------------------------------


def count_draws(entry_key: bytes, exit_key_digest: str, position: int) -> int | None:
    """How many 32-bit numbers take a fresh Mersenne Twister key to the recorded exit state.

    ``entry_key`` holds the 624 key words a block starts from (its next draw twists), the exit
    state is the key's id (see ``mt_key_digest``) and the position in it. Returns None when no count
    up to :data:`MAX_REPLAYED_DRAWS` reaches it (more were drawn, or the
    block reseeded the generator).

    >>> import numpy as np
    >>> bits = np.random.MT19937(5)
    >>> start = bits.state["state"]["key"].astype("<u4").tobytes()
    >>> bits.state = {"bit_generator": "MT19937", "state": {"key": bits.state["state"]["key"],
    ...                                                     "pos": 624}}
    >>> _ = bits.random_raw(1000)
    >>> after = bits.state["state"]
    >>> count_draws(start, mt_key_digest(after["key"].astype("<u4").tobytes()), after["pos"])
    1000
    """
    limit = MAX_REPLAYED_DRAWS
    if mt_key_digest(entry_key) == exit_key_digest:
        return 0 if position == MT_WORDS else None
    bits = np.random.MT19937(0)
    bits.state = {"bit_generator": "MT19937",
                  "state": {"key": np.frombuffer(entry_key, dtype="<u4"), "pos": MT_WORDS}}
    for twists in range(1, (limit + MT_WORDS - 1) // MT_WORDS + 2):
        bits.random_raw(MT_WORDS)  # one twist: the key becomes the next one
        key = bits.state["state"]["key"]
        if mt_key_digest(key.astype("<u4").tobytes()) == exit_key_digest:
            drawn = MT_WORDS * (twists - 1) + position
            return drawn if drawn <= limit else None
    return None


@dataclass
class _Context:
    """What a ledger's records derive from, as the walk reaches them."""

    ledger: LedgerFile
    root_seed: int | None

    def drawn(self, record: Mapping[str, Any], source: str) -> int | str:
        """How many numbers the block of ``record`` drew from ``source``, or why not counted."""
        entry = record["state"][source]
        if self.root_seed is None or self.ledger.header.get("derivation") != DERIVATION:
            return "no root seed, or another derivation scheme"
        images = entry_state_images(self.root_seed, key_from_json(record["key"]),  # checked
                                    record.get("per_rank"), (source,), record.get("per_worker"))
        image = images.get(source)
        if image is None:
            return "the draws of registered generators are not replayed"
        drawn = count_draws(image, entry[2], int(entry[1]))
        if drawn is None:
            return f"more than {MAX_REPLAYED_DRAWS:,} numbers, or a reseeded generator"
        return drawn


# --- Comparing two ledgers ------------------------------------------------------------------------


def _show_key(key: object) -> str:
    return repr(key_from_json(key))


def _describe(record: Mapping[str, Any]) -> str:
    """What a record says a run did, e.g. "exited ('sample', 5)" or "called set_seed(3)"."""
    if "root" in record:
        return f"called set_seed({record['root']})"
    if "key" in record:
        return f"exited {_show_key(record['key'])}"
    return f"noted {', '.join(map(repr, record.get('notes', {})))} outside every block"


def _value_text(entry: object) -> str:
    if isinstance(entry, list) and len(entry) > 1:
        return repr(entry[1])
    return "fingerprint " + (str(entry[0]) if isinstance(entry, list) and entry else repr(entry))


def _named_differences(kind: str, first: object, second: object) -> list[str]:
    """Differences between two {name: [fingerprint, number?]} maps (watched values, notes)."""
    a = first if isinstance(first, dict) else {}
    b = second if isinstance(second, dict) else {}
    reasons = []
    for name in list(a) + [name for name in b if name not in a]:
        if name not in b:
            reasons.append(f"only A {kind} {name!r}")
        elif name not in a:
            reasons.append(f"only B {kind} {name!r}")
        elif a[name] != b[name]:
            label = "watched" if kind == "watched" else "noted"
            reasons.append(f"the {label} {name} differs (A {_value_text(a[name])}, "
                           f"B {_value_text(b[name])})")
    return reasons


def _state_differences(a: Mapping[str, Any], b: Mapping[str, Any],
                       context_a: _Context, context_b: _Context) -> list[str]:
    states_a, states_b = a.get("state", {}), b.get("state", {})
    if list(states_a) != list(states_b):
        return [f"the block managed different generators (A {list(states_a)}, "
                f"B {list(states_b)})"]
    reasons = []
    for source in states_a:
        entry_a, entry_b = states_a[source], states_b[source]
        if entry_a == entry_b:
            continue
        if len(entry_a) == 1 or len(entry_b) == 1:
            reasons.append(f"{source} state differs at exit")
            continue
        drawn_a, drawn_b = context_a.drawn(a, source), context_b.drawn(b, source)
        if isinstance(drawn_a, int) and isinstance(drawn_b, int):
            if drawn_a == drawn_b:
                reasons.append(f"{source} state differs at exit although both drew {drawn_a:,} "
                               "numbers (other kinds of draws, or a cached normal)")
            else:
                reasons.append(f"{source} stream consumed differently (A drew {drawn_a:,} "
                               f"numbers, B {drawn_b:,})")
        elif drawn_a == drawn_b:
            reasons.append(f"{source} stream consumed differently (not counted: {drawn_a})")
        else:
            described = [f"{run} drew {drawn:,} numbers" if isinstance(drawn, int)
                         else f"{run} not counted: {drawn}"
                         for run, drawn in (("A", drawn_a), ("B", drawn_b))]
            reasons.append(f"{source} stream consumed differently ({'; '.join(described)})")
    return reasons


def _record_differences(a: Mapping[str, Any], b: Mapping[str, Any],
                        context_a: _Context, context_b: _Context) -> list[str]:
    kind_a, kind_b = _describe(a), _describe(b)
    if ("key" in a) != ("key" in b) or ("root" in a) != ("root" in b):
        return [f"A {kind_a} where B {kind_b}"]
    if "root" in a:
        return [] if a["root"] == b["root"] else [f"A {kind_a} where B {kind_b}"]
    if "key" in a:
        if a["key"] != b["key"]:
            return [f"A {kind_a} where B {kind_b}"]
        reasons = []
        for field_name, label in (("entry", "entry"), ("rank", "rank"), ("per_rank", "per_rank")):
            if a.get(field_name) != b.get(field_name):
                reasons.append(f"the {label} differs (A {a.get(field_name)!r}, "
                               f"B {b.get(field_name)!r})")
        reasons += _state_differences(a, b, context_a, context_b)
        reasons += _named_differences("watched", a.get("watch"), b.get("watch"))
        return reasons + _named_differences("noted", a.get("notes"), b.get("notes"))
    return _named_differences("noted", a.get("notes"), b.get("notes"))


@dataclass(frozen=True)
class _RankDiff:
    """How one rank's two ledgers compare."""

    rank: int | None
    agreed: int  # block records that agree before the first difference
    index: int | None = None  # the first differing record (None: identical)
    record: Mapping[str, Any] | None = None  # A's record there (B's if A has none)
    reasons: tuple[str, ...] = ()
    child: int = 0  # 0: the rank's own ledger; n: its n-th child process's

    @property
    def label(self) -> str:
        """"rank 1", "child 2 of rank 1", "child 2", or "" (one process, no rank)."""
        rank = "" if self.rank is None else f"rank {self.rank}"
        if not self.child:
            return rank
        return f"child {self.child}" + (f" of {rank}" if rank else "")

    @property
    def identical(self) -> bool:
        return self.index is None


def _diff_ledgers(a: LedgerFile, b: LedgerFile) -> _RankDiff:
    context_a = _Context(a, a.header.get("root_seed"))
    context_b = _Context(b, b.header.get("root_seed"))
    if context_a.root_seed != context_b.root_seed:
        return _RankDiff(a.rank, 0, -1, None, (
            f"the runs start from different root seeds (A {context_a.root_seed}, "
            f"B {context_b.root_seed}): every block's stream differs",))
    agreed = 0
    for index, (record_a, record_b) in enumerate(zip(a.records, b.records)):  # noqa: B905
        reasons = _record_differences(record_a, record_b, context_a, context_b)
        if reasons:
            return _RankDiff(a.rank, agreed, index, record_a, tuple(reasons))
        if "root" in record_a:
            context_a.root_seed = context_b.root_seed = record_a["root"]
        agreed += "key" in record_a
    if len(a.records) == len(b.records):
        return _RankDiff(a.rank, agreed)
    longer, shorter, cut = ("A", "B", b) if len(a.records) > len(b.records) else ("B", "A", a)
    index = len(cut.records)
    following = (a if longer == "A" else b).records[index]
    killed = " (its last line is torn: it was killed while writing)" if cut.torn else ""
    return _RankDiff(a.rank, agreed, index, following, (
        f"{shorter} stops here{killed} where {longer} goes on: {longer} "
        f"{_describe(following)}",))


def _where(diff: _RankDiff, *, with_rank: bool = True) -> str:
    record = diff.record or {}
    if diff.index == -1:
        place = "the start"
    elif "key" in record:
        place = f"{_show_key(record['key'])}, entry {record.get('entry')}"
    else:
        place = f"record {diff.index}"
    return place + ("" if not diff.label or not with_rank else f", {diff.label}")


def _versions(a: LedgerFile, b: LedgerFile) -> list[str]:
    first, second = a.header.get("versions", {}), b.header.get("versions", {})
    return [f"{name} {first.get(name)} vs {second.get(name)}"
            for name in sorted(set(first) | set(second)) if first.get(name) != second.get(name)]


@dataclass(frozen=True)
class RunDiff:
    """Where two runs' block ledgers part: what :func:`diff_runs` returns.

    ``identical`` is True when every rank's records are the same. Otherwise ``message`` says
    where they first part and why, and ``rank``, ``key``, ``entry`` and ``reasons`` locate it
    (``key`` is None when the difference is not a block's: a root seed, a note outside blocks,
    a shorter run). ``str(diff)`` is the message; :meth:`as_dict` is the same as JSON data.
    """

    identical: bool
    message: str
    agreed: int = 0
    rank: int | None = None
    key: Any = None
    entry: int | None = None
    reasons: tuple[str, ...] = ()
    ranks: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    context: tuple[str, ...] = ()
    #: The child process ledger where they first part (n: the n-th child of ``rank``, see the
    #: module's docstring), or None: a rank's own ledger.
    child: int | None = None

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, Any]:
        """The diff as JSON-ready data (``python -m reproducible_block diff --json`` prints it)."""
        key = self.key
        return {
            "identical": self.identical,
            "message": self.message,
            "agreed_blocks": self.agreed,
            "rank": self.rank,
            "key": list(key) if isinstance(key, tuple) else key,
            "entry": self.entry,
            "reasons": list(self.reasons),
            "ranks": list(self.ranks),
            "context": list(self.context),
            "child": self.child,
        }


def _rank_summary(diff: _RankDiff) -> dict[str, Any]:
    record = diff.record or {}
    return {
        "rank": diff.rank,
        "child": diff.child or None,
        "identical": diff.identical,
        "agreed_blocks": diff.agreed,
        "record": diff.index,
        "key": record.get("key") if diff.index is not None else None,
        "entry": record.get("entry") if diff.index is not None else None,
        "reasons": list(diff.reasons),
    }


def diff_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]) -> RunDiff:
    """Compare two runs' block ledgers and say where they first part.

    Each run is a ledger file, a folder of ledgers (one per rank, paired by the rank in their
    headers), or the path given to ``record_blocks``/``REPRODUCIBLE_BLOCK_LEDGER`` (its
    ``.rank{N}`` and ``.pid{PID}`` files are found next to it). Child processes' ``.pid{PID}``
    ledgers are paired within their rank in the order of their first records (``child`` names
    the n-th). Records are compared in order; the first that
    differs is reported with the block's key, its entry (how many times that key had exited)
    and the rank, and why: another block ran, a generator's stream was consumed differently
    (with the count of 32-bit numbers each run drew, replayed from the block's derived entry
    state, up to 10**7), a watched or noted value differs, or one run stops early. Under several
    ranks the rank whose difference comes earliest in its ledger is reported first.

    Unreadable input raises :class:`ReproducibleBlockValueError`.

    >>> import tempfile, torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> from reproducible_block.diagnostics import diff_runs, record_blocks
    >>> folder = tempfile.mkdtemp()
    >>> for run, extra in (("a", 0), ("b", 1)):
    ...     _ = set_seed(0)
    ...     with record_blocks(f"{folder}/{run}.jsonl"):
    ...         for index in range(4):
    ...             with ReproducibleBlock(("sample", index)):
    ...                 _ = torch.rand(3 + (extra if index == 2 else 0))
    >>> found = diff_runs(f"{folder}/a.jsonl", f"{folder}/b.jsonl")
    >>> found.key == ("sample", 2) and "A drew 3 numbers, B 4" in found.message
    True
    """
    ledgers_a, ledgers_b = _read_run(run_a), _read_run(run_b)
    any_a, any_b = next(iter(ledgers_a.values())), next(iter(ledgers_b.values()))
    if any_a.header.get("digest") != any_b.header.get("digest"):
        raise ReproducibleBlockValueError(
            f"the ledgers use different digests (A {any_a.header.get('digest')!r}, B "
            f"{any_b.header.get('digest')!r}): they were written by incompatible versions of "
            "reproducible_block. Record both runs with the same version."
        )
    context = tuple(_versions(any_a, any_b))
    diffs: list[_RankDiff] = []
    for slot in sorted(set(ledgers_a) | set(ledgers_b),
                       key=lambda s: (-1 if s[0] is None else s[0], s[1])):
        rank, child = slot
        if slot not in ledgers_b or slot not in ledgers_a:
            having = "A" if slot in ledgers_a else "B"
            what = f"rank {rank}" if not child else _RankDiff(rank, 0, child=child).label
            diffs.append(_RankDiff(rank, 0, -1, None, (
                f"only {having} has a ledger for {what}",), child))
            continue
        diffs.append(replace(_diff_ledgers(ledgers_a[slot], ledgers_b[slot]), child=child))
    summaries = tuple(_rank_summary(diff) for diff in diffs)
    suffix = f" (the runs used different versions: {'; '.join(context)})" if context else ""
    differing = [diff for diff in diffs if not diff.identical]
    if not differing:
        blocks = sum(diff.agreed for diff in diffs)
        count = sum(not diff.child for diff in diffs)
        ranks = "" if count == 1 else f" on {count} ranks"
        children = len(diffs) - count
        ranks += f" and {children} child process ledger{'s' * (children > 1)}" if children else ""
        return RunDiff(True, f"the runs agree: {blocks:,} blocks{ranks}, every record the same"
                       + suffix, blocks, ranks=summaries, context=context)
    first = min(differing, key=lambda diff: (diff.index if diff.index is not None else 0))
    record = first.record or {}
    in_block = first.index is not None and first.index >= 0 and "key" in record
    message = (f"both runs agree for {first.agreed:,} blocks; they first differ at "
               f"{_where(first)}: {'; '.join(first.reasons)}")
    others = [diff for diff in differing if diff is not first]
    if others:
        message += "; " + "; ".join(
            f"{diff.label or 'the parent'} also differs, first at {_where(diff, with_rank=False)}"
            for diff in others
        )
    return RunDiff(
        False, message + suffix, first.agreed, first.rank,
        key_from_json(record["key"]) if in_block else None,
        record.get("entry") if in_block else None, first.reasons, summaries, context,
        first.child or None,
    )
