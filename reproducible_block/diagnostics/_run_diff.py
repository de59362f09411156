"""Finding the first record where two runs' block ledgers part, and why.

A rank's records, from every process that wrote them (the rank's own, its DataLoader workers',
its other children's), are put in time order and paired with the other run's by (rank, block
key and ``per_worker`` fold, n-th entry of that key in the rank): a sample's block pairs with the
same sample's whatever worker, and however many, loaded it. A set_seed record pairs with the
n-th set_seed record, a note outside blocks with the n-th note of its name. The first differing
pair in the run's order leads the report. When a Mersenne Twister's state differs, each run's
block is replayed from its derived entry state to count the 32-bit numbers it drew (see
``_replay``). Records that were not made (a ledger stopped by a failure, a DataLoader worker
that left no ledger) are reported too: such a run is never called identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block.diagnostics._format import key_from_json
from reproducible_block.diagnostics._read import LedgerFile, Run, read_run
from reproducible_block.diagnostics._replay import replayed_draws

__all__ = ["RunDiff", "diff_runs"]


def _show_key(key: object) -> str:
    return repr(key_from_json(key))


def _value_text(entry: object) -> str:
    if isinstance(entry, list) and len(entry) > 1:
        return repr(entry[1])
    return "fingerprint " + (str(entry[0]) if isinstance(entry, list) and entry else repr(entry))


def _watched_differences(first: object, second: object) -> list[str]:
    """Differences between two {name: [fingerprint, number?]} maps of watched values."""
    a = first if isinstance(first, dict) else {}
    b = second if isinstance(second, dict) else {}
    reasons = []
    for name in list(a) + [name for name in b if name not in a]:
        if name not in b:
            reasons.append(f"only A watched {name!r}")
        elif name not in a:
            reasons.append(f"only B watched {name!r}")
        elif a[name] != b[name]:
            reasons.append(
                f"the watched {name} differs (A {_value_text(a[name])}, B {_value_text(b[name])})"
            )
    return reasons


def _note_differences(first: object, second: object, where: str) -> list[str]:
    """Differences between two {name: [values in order]} maps of notes: for each name, the
    first value that differs, by its position (#1, #2...), or how many each run noted."""
    a = first if isinstance(first, dict) else {}
    b = second if isinstance(second, dict) else {}
    reasons = []
    for name in list(a) + [name for name in b if name not in a]:
        values_a, values_b = a.get(name, []), b.get(name, [])
        for number, (value_a, value_b) in enumerate(zip(values_a, values_b), start=1):  # noqa: B905
            if value_a != value_b:
                reasons.append(
                    f"note {name!r} #{number}{where} differs (A {_value_text(value_a)}, "
                    f"B {_value_text(value_b)})"
                )
                break
        else:
            if len(values_a) != len(values_b):
                reasons.append(
                    f"A noted {name!r} {_times(len(values_a))}{where}, B {_times(len(values_b))}"
                )
    return reasons


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


@dataclass
class _Event:
    """One record of a run, placed in its rank: what it pairs by, and what it derives from."""

    record: dict[str, Any]
    ledger: LedgerFile
    root_seed: int | None  # the root its block derived from
    identity: tuple[Any, ...]  # ("block", key text, per_worker), ("root",) or ("note", names)
    number: int = 0  # the n-th record of its identity in the rank (from 1)
    position: int = 0  # its place in the rank's time order

    def drawn(self, source: str) -> int | str:
        """How many numbers the block drew from ``source``, or why not counted."""
        derivation = self.ledger.header.get("derivation")
        return replayed_draws(derivation, self.root_seed, self.record, source)

    @property
    def label(self) -> str:
        """How the report names it: "('sample', 13), entry #1", "set_seed call #2"..."""
        if self.identity[0] == "block":
            return f"{_show_key(self.record['key'])}, entry #{self.number}"
        if self.identity[0] == "root":
            return f"set_seed call #{self.number}"
        return f"note {', '.join(map(repr, self.identity[1]))} #{self.number} outside blocks"


def _events(ledgers: Iterable[LedgerFile]) -> list[_Event]:
    """A rank's records in time order, numbered within their identity."""
    events: list[tuple[int, int, _Event]] = []
    for order, ledger in enumerate(ledgers):
        root = ledger.header.get("root_seed")
        for record in ledger.records:
            if "stopped" in record:
                continue
            if "root" in record:
                root = record["root"]
                identity: tuple[Any, ...] = ("root",)
            elif "key" in record:
                key_text = json.dumps(record["key"])
                identity = ("block", key_text, record.get("per_worker"))
            else:
                identity = ("note", tuple(sorted(record.get("notes", {}))))
            events.append((record["t"], order, _Event(record, ledger, root, identity)))
    events.sort(key=lambda item: (item[0], item[1]))
    counts: dict[tuple[Any, ...], int] = {}
    placed = []
    for position, (_, _, event) in enumerate(events):
        counts[event.identity] = event.number = counts.get(event.identity, 0) + 1
        event.position = position
        placed.append(event)
    return placed


_NOT_COMPARED = frozenset({"t", "entry", "rank"})  # per process, or the pairing's own


def _same(a: _Event, b: _Event) -> bool:
    if a.root_seed != b.root_seed:
        return False
    first, second = a.record, b.record
    return len(first) == len(second) and all(
        name in _NOT_COMPARED or second.get(name, first) == value for name, value in first.items()
    )


def _state_differences(a: _Event, b: _Event) -> list[str]:
    states_a, states_b = a.record.get("state", {}), b.record.get("state", {})
    if list(states_a) != list(states_b):
        return [f"the block managed different generators (A {list(states_a)}, B {list(states_b)})"]
    reasons = []
    for source in states_a:
        entry_a, entry_b = states_a[source], states_b[source]
        if entry_a == entry_b:
            continue
        if len(entry_a) == 1 or len(entry_b) == 1:
            reasons.append(f"{source} state differs at exit")
            continue
        drawn_a, drawn_b = a.drawn(source), b.drawn(source)
        if isinstance(drawn_a, int) and isinstance(drawn_b, int):
            if drawn_a == drawn_b:
                reasons.append(
                    f"{source} state differs at exit although both drew {drawn_a:,} "
                    "numbers (other kinds of draws, or a cached normal)"
                )
            else:
                reasons.append(
                    f"{source} stream consumed differently (A drew {drawn_a:,} "
                    f"numbers, B {drawn_b:,})"
                )
        elif drawn_a == drawn_b:
            reasons.append(f"{source} stream consumed differently (not counted: {drawn_a})")
        else:
            described = [
                f"{run} drew {drawn:,} numbers"
                if isinstance(drawn, int)
                else f"{run} not counted: {drawn}"
                for run, drawn in (("A", drawn_a), ("B", drawn_b))
            ]
            reasons.append(f"{source} stream consumed differently ({'; '.join(described)})")
    return reasons


def _pair_differences(a: _Event, b: _Event) -> list[str]:
    """Why two paired records differ (both of one identity)."""
    first, second = a.record, b.record
    if "root" in first:
        return [f"A called set_seed({first['root']}) where B called set_seed({second['root']})"]
    if "key" not in first:
        return _note_differences(first.get("notes"), second.get("notes"), " outside blocks")
    reasons = []
    if a.root_seed != b.root_seed:
        reasons.append(
            f"the block derived from another root seed (A {a.root_seed}, B {b.root_seed})"
        )
    if first.get("per_rank") != second.get("per_rank"):
        reasons.append(
            f"the per_rank differs (A {first.get('per_rank')!r}, B {second.get('per_rank')!r})"
        )
    reasons += _state_differences(a, b)
    reasons += _watched_differences(first.get("watch"), second.get("watch"))
    where = f" in {_show_key(first['key'])}"
    reasons += _note_differences(first.get("notes"), second.get("notes"), where)
    return reasons or ["the records differ"]


def _missing(having: str, event: _Event, others: list[_Event]) -> str:
    """Why a record has no pair: the other run made fewer of its identity."""
    other = "B" if having == "A" else "A"
    made = event.number - 1
    torn = next(
        (ledger for ledger in {e.ledger.path: e.ledger for e in others}.values() if ledger.torn),
        None,
    )
    killed = (
        f" ({other}'s ledger {torn.path.name} is torn: it was killed while writing)"
        if torn is not None
        else ""
    )
    if event.identity[0] == "block":
        what = f"exited {_show_key(event.record['key'])}"
    elif event.identity[0] == "root":
        what = "called set_seed"
    else:
        what = f"noted {', '.join(map(repr, event.identity[1]))} outside blocks"
    return (
        f"only {having} has this record: {other} {what} "
        + ("never" if made == 0 else _times(made))
        + killed
    )


@dataclass(frozen=True)
class _RankDiff:
    """How one rank's records compare."""

    rank: int | None
    agreed: int  # paired block records that agree
    position: int | None = None  # the first difference's place in the rank's order (None: none)
    event: _Event | None = None  # A's record there (B's if A has none)
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """ "rank 1", or "" (no rank)."""
        return "" if self.rank is None else f"rank {self.rank}"

    @property
    def identical(self) -> bool:
        return self.position is None


def _diff_rank(rank: int | None, a: list[LedgerFile], b: list[LedgerFile]) -> _RankDiff:
    root_a, root_b = a[0].header.get("root_seed"), b[0].header.get("root_seed")
    if not a[0].is_child and not b[0].is_child and root_a != root_b:
        return _RankDiff(
            rank,
            0,
            -1,
            None,
            (
                f"the runs start from different root seeds (A {root_a}, B {root_b}): every "
                "block's stream differs",
            ),
        )
    events_a, events_b = _events(a), _events(b)
    paired_b = {(event.identity, event.number): event for event in events_b}
    agreeing: list[int] = []  # the positions of A's block records that agree
    first: tuple[int, _Event, _Event | None, str] | None = None  # (position, A's, B's, having)
    for event in events_a:
        other = paired_b.pop((event.identity, event.number), None)
        if other is not None and _same(event, other):
            if event.identity[0] == "block":
                agreeing.append(event.position)
        elif first is None or event.position < first[0]:
            first = (event.position, event, other, "A")
    for event in paired_b.values():  # only in B
        if first is None or event.position < first[0]:
            first = (event.position, event, None, "B")
    if first is None:
        return _RankDiff(rank, len(agreeing))
    position, event, other, having = first
    agreed = sum(place < position for place in agreeing)  # those before the first difference
    if other is not None:
        reasons = _pair_differences(event, other)
    else:
        reasons = [_missing(having, event, events_b if having == "A" else events_a)]
    return _RankDiff(rank, agreed, position, event, tuple(reasons))


def _where(diff: _RankDiff, *, with_rank: bool = True) -> str:
    if diff.event is None:
        place = "the start"
    else:
        place = diff.event.label
        process = diff.event.ledger.process
        if process != "the main process":
            place += f" (in {process})"
    return place + ("" if not diff.label or not with_rank else f", {diff.label}")


def _versions(a: LedgerFile, b: LedgerFile) -> list[str]:
    first, second = a.header.get("versions", {}), b.header.get("versions", {})
    return [
        f"{name} {first.get(name)} vs {second.get(name)}"
        for name in sorted(set(first) | set(second))
        if first.get(name) != second.get(name)
    ]


def _unrecorded(name: str, run: Run) -> list[str]:
    """What a run says it did not record: ledgers a failure stopped, and the DataLoader workers
    of a loader that left no ledger (every armed worker leaves one, see ``_arming``)."""
    found = []
    for rank, ledgers in run.ranks.items():
        of_rank = "" if rank is None else f" of rank {rank}"
        groups: dict[tuple[Any, ...], set[int]] = {}
        for ledger in ledgers:
            if ledger.stopped is not None:
                found.append(
                    f"{name}: {ledger.process}{of_rank} stopped recording ({ledger.stopped}); "
                    "its later blocks were not recorded"
                )
            worker = ledger.worker
            if worker is not None:
                group = (ledger.header.get("parent"), worker["loader"], worker["num_workers"])
                groups.setdefault(group, set()).add(worker["id"])
        for (parent, _, count), ids in groups.items():
            for missing in sorted(set(range(count)) - ids):
                found.append(
                    f"{name}: DataLoader worker {missing} of {count} (started by pid {parent}"
                    f"{of_rank}) left no ledger: its blocks were not recorded (it ran with "
                    "recording off, could not arm, or was killed)"
                )
    return found


@dataclass(frozen=True)
class RunDiff:
    """Where two runs' block ledgers part: what :func:`diff_runs` returns.

    ``identical`` is True when every rank's records pair and agree and both runs recorded
    everything. Otherwise ``message`` says where they first part and why, and ``rank``,
    ``key``, ``entry`` (the n-th entry of that key in the rank) and ``reasons`` locate it
    (``key`` is None when the difference is not a block's: a root seed, a note outside blocks);
    ``process`` names the process that wrote run A's record there when it is not the rank's
    own (a DataLoader worker, a child process). ``unrecorded`` lists what either run did not
    record (a ledger stopped by a failure, a DataLoader worker that left no ledger): then the
    runs are not called identical even when every recorded block agrees. ``str(diff)`` is the
    message; :meth:`as_dict` is the same as JSON data.
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
    process: str | None = None
    unrecorded: tuple[str, ...] = ()

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
            "process": self.process,
            "unrecorded": list(self.unrecorded),
        }


def _rank_summary(diff: _RankDiff) -> dict[str, Any]:
    event = diff.event
    block = event is not None and "key" in event.record
    return {
        "rank": diff.rank,
        "identical": diff.identical,
        "agreed_blocks": diff.agreed,
        "record": diff.position,
        "key": event.record["key"] if block and event is not None else None,
        "entry": event.number if block and event is not None else None,
        "reasons": list(diff.reasons),
    }


def diff_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]) -> RunDiff:
    """Compare two runs' block ledgers and say where they first part.

    Each run is a ledger file, a folder of ledgers (one per rank, paired by the rank in their
    headers), or the path given to ``record_blocks``/``REPRODUCIBLE_BLOCK_LEDGER`` (its
    ``.rank{N}``, DataLoader workers' and children's ``.pid{PID}`` files are found next to it).
    Block records are paired by (rank, key, n-th entry of that key in the rank), whatever
    process wrote them and in whatever order: runs with 0, 2 or 4 DataLoader workers pair
    sample by sample. Records of different ranks never pair. The first differing record in the
    run's order is reported with the block's key, its entry and the rank, and why: a
    generator's stream was consumed differently (with the count of 32-bit numbers each run
    drew, replayed from the block's derived entry state, up to 10**7), a watched value or a
    note differs (``note 'loss' #3 in ('train', 1)``: the third loss noted there), a block or
    a set_seed call exists in one run only. Under several ranks the rank whose difference
    comes earliest in its order is reported first. What a run did not record (a ledger that
    stopped, a worker that left no ledger) is listed in ``unrecorded`` and the message.

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
    read_a, read_b = read_run(run_a), read_run(run_b)
    any_a = next(iter(read_a.ranks.values()))[0]
    any_b = next(iter(read_b.ranks.values()))[0]
    if any_a.header.get("digest") != any_b.header.get("digest"):
        raise ReproducibleBlockValueError(
            f"the ledgers use different digests (A {any_a.header.get('digest')!r}, B "
            f"{any_b.header.get('digest')!r}): they were written by incompatible versions of "
            "reproducible_block. Record both runs with the same version."
        )
    context = _versions(any_a, any_b)
    for name, read in (("A", read_a), ("B", read_b)):
        if read.left_out:
            context.append(
                f"{name}: left out {len(read.left_out)} ledger file(s) of another recording in "
                f"the same folder, e.g. {read.left_out[0].name}"
            )
    unrecorded = tuple(_unrecorded("A", read_a) + _unrecorded("B", read_b))
    diffs: list[_RankDiff] = []
    for rank in sorted(set(read_a.ranks) | set(read_b.ranks), key=lambda r: -1 if r is None else r):
        if rank not in read_a.ranks or rank not in read_b.ranks:
            having = "A" if rank in read_a.ranks else "B"
            diffs.append(
                _RankDiff(rank, 0, -1, None, (f"only {having} has ledgers for rank {rank}",))
            )
            continue
        diffs.append(_diff_rank(rank, read_a.ranks[rank], read_b.ranks[rank]))
    summaries = tuple(_rank_summary(diff) for diff in diffs)
    suffix = f" (the runs used different versions: {'; '.join(context)})" if context else ""
    missing = f"; not every block was recorded: {'; '.join(unrecorded)}" if unrecorded else ""
    differing = [diff for diff in diffs if not diff.identical]
    if not differing:
        blocks = sum(diff.agreed for diff in diffs)
        ranks = "" if len(diffs) == 1 else f" on {len(diffs)} ranks"
        if unrecorded:
            message = f"the recorded blocks agree: {blocks:,} blocks{ranks}{missing}"
        else:
            message = f"the runs agree: {blocks:,} blocks{ranks}, every record the same"
        return RunDiff(
            not unrecorded,
            message + suffix,
            blocks,
            ranks=summaries,
            context=tuple(context),
            unrecorded=unrecorded,
        )
    first = min(differing, key=lambda diff: diff.position if diff.position is not None else 0)
    event = first.event
    in_block = event is not None and "key" in event.record
    message = (
        f"both runs agree for {first.agreed:,} blocks; they first differ at "
        f"{_where(first)}: {'; '.join(first.reasons)}"
    )
    others = [diff for diff in differing if diff is not first]
    if others:
        message += "; " + "; ".join(
            f"{diff.label or 'the parent'} also differs, first at {_where(diff, with_rank=False)}"
            for diff in others
        )
    process = None if event is None else event.ledger.process
    return RunDiff(
        False,
        message + missing + suffix,
        first.agreed,
        first.rank,
        key_from_json(event.record["key"]) if in_block and event is not None else None,
        event.number if in_block and event is not None else None,
        first.reasons,
        summaries,
        tuple(context),
        None if process == "the main process" else process,
        unrecorded,
    )
