"""Pairing one rank's records between two runs, and saying why a pair differs.

A rank's records, from every process that wrote them (the rank's own, its DataLoader workers',
its other children's), are put in time order and paired with the other run's by (block key and
``per_worker`` fold, n-th entry of that key in the rank): a sample's block pairs with the same
sample's whatever worker, and however many, loaded it. A set_seed record pairs with the n-th
set_seed record, a note outside blocks with the n-th note of its name. :func:`diff_rank` finds
the first differing pair in the rank's order and why (a Mersenne Twister's state that differs
is explained by replaying each run's block to count what it drew, see ``_replay``); ``_run_diff``
puts the ranks' findings into one report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reproducible_block.diagnostics._format import key_from_json
from reproducible_block.diagnostics._read import LedgerFile
from reproducible_block.diagnostics._replay import replayed_draws

__all__ = ["Event", "RankDiff", "diff_rank"]


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
class Event:
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


def _events(ledgers: Iterable[LedgerFile]) -> list[Event]:
    """A rank's records in time order, numbered within their identity."""
    events: list[tuple[int, int, Event]] = []
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
            events.append((record["t"], order, Event(record, ledger, root, identity)))
    events.sort(key=lambda item: (item[0], item[1]))
    counts: dict[tuple[Any, ...], int] = {}
    placed = []
    for position, (_, _, event) in enumerate(events):
        counts[event.identity] = event.number = counts.get(event.identity, 0) + 1
        event.position = position
        placed.append(event)
    return placed


_NOT_COMPARED = frozenset({"t", "entry", "rank"})  # per process, or the pairing's own


def _same(a: Event, b: Event) -> bool:
    if a.root_seed != b.root_seed:
        return False
    first, second = a.record, b.record
    return len(first) == len(second) and all(
        name in _NOT_COMPARED or second.get(name, first) == value for name, value in first.items()
    )


def _state_differences(a: Event, b: Event) -> list[str]:
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


def _pair_differences(a: Event, b: Event) -> list[str]:
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


def _missing(having: str, event: Event, others: list[Event]) -> str:
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
class RankDiff:
    """How one rank's records compare."""

    rank: int | None
    agreed: int  # paired block records that agree
    position: int | None = None  # the first difference's place in the rank's order (None: none)
    event: Event | None = None  # A's record there (B's if A has none)
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """ "rank 1", or "" (no rank)."""
        return "" if self.rank is None else f"rank {self.rank}"

    @property
    def identical(self) -> bool:
        return self.position is None


def diff_rank(rank: int | None, a: list[LedgerFile], b: list[LedgerFile]) -> RankDiff:
    root_a, root_b = a[0].header.get("root_seed"), b[0].header.get("root_seed")
    if not a[0].is_child and not b[0].is_child and root_a != root_b:
        return RankDiff(
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
    first: tuple[int, Event, Event | None, str] | None = None  # (position, A's, B's, having)
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
        return RankDiff(rank, len(agreeing))
    position, event, other, having = first
    agreed = sum(place < position for place in agreeing)  # those before the first difference
    if other is not None:
        reasons = _pair_differences(event, other)
    else:
        reasons = [_missing(having, event, events_b if having == "A" else events_a)]
    return RankDiff(rank, agreed, position, event, tuple(reasons))
