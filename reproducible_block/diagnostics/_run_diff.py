"""Finding the first record where two runs' block ledgers part, and why.

Ledgers are paired by rank (a child process's by its number within its rank, see ``_read``) and
compared record by record. When a Mersenne Twister's state differs, each run's block is replayed
from its derived entry state to count the 32-bit numbers it drew (see ``_replay``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block.diagnostics._format import key_from_json
from reproducible_block.diagnostics._read import LedgerFile, read_run
from reproducible_block.diagnostics._replay import replayed_draws

__all__ = ["RunDiff", "diff_runs"]


@dataclass
class _Context:
    """What a ledger's records derive from, as the walk reaches them."""

    ledger: LedgerFile
    root_seed: int | None

    def drawn(self, record: Mapping[str, Any], source: str) -> int | str:
        """How many numbers the block of ``record`` drew from ``source``, or why not counted."""
        return replayed_draws(self.ledger.header.get("derivation"), self.root_seed, record, source)


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
            reasons.append(
                f"the {label} {name} differs (A {_value_text(a[name])}, B {_value_text(b[name])})"
            )
    return reasons


def _state_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], context_a: _Context, context_b: _Context
) -> list[str]:
    states_a, states_b = a.get("state", {}), b.get("state", {})
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
        drawn_a, drawn_b = context_a.drawn(a, source), context_b.drawn(b, source)
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


def _record_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], context_a: _Context, context_b: _Context
) -> list[str]:
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
                reasons.append(
                    f"the {label} differs (A {a.get(field_name)!r}, B {b.get(field_name)!r})"
                )
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
        """ "rank 1", "child 2 of rank 1", "child 2", or "" (one process, no rank)."""
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
        return _RankDiff(
            a.rank,
            0,
            -1,
            None,
            (
                f"the runs start from different root seeds (A {context_a.root_seed}, "
                f"B {context_b.root_seed}): every block's stream differs",
            ),
        )
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
    return _RankDiff(
        a.rank,
        agreed,
        index,
        following,
        (f"{shorter} stops here{killed} where {longer} goes on: {longer} {_describe(following)}",),
    )


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
    return [
        f"{name} {first.get(name)} vs {second.get(name)}"
        for name in sorted(set(first) | set(second))
        if first.get(name) != second.get(name)
    ]


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
    ledgers_a, ledgers_b = read_run(run_a), read_run(run_b)
    any_a, any_b = next(iter(ledgers_a.values())), next(iter(ledgers_b.values()))
    if any_a.header.get("digest") != any_b.header.get("digest"):
        raise ReproducibleBlockValueError(
            f"the ledgers use different digests (A {any_a.header.get('digest')!r}, B "
            f"{any_b.header.get('digest')!r}): they were written by incompatible versions of "
            "reproducible_block. Record both runs with the same version."
        )
    context = tuple(_versions(any_a, any_b))
    diffs: list[_RankDiff] = []
    for slot in sorted(
        set(ledgers_a) | set(ledgers_b), key=lambda s: (-1 if s[0] is None else s[0], s[1])
    ):
        rank, child = slot
        if slot not in ledgers_b or slot not in ledgers_a:
            having = "A" if slot in ledgers_a else "B"
            what = f"rank {rank}" if not child else _RankDiff(rank, 0, child=child).label
            diffs.append(
                _RankDiff(rank, 0, -1, None, (f"only {having} has a ledger for {what}",), child)
            )
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
        return RunDiff(
            True,
            f"the runs agree: {blocks:,} blocks{ranks}, every record the same" + suffix,
            blocks,
            ranks=summaries,
            context=context,
        )
    first = min(differing, key=lambda diff: diff.index if diff.index is not None else 0)
    record = first.record or {}
    in_block = first.index is not None and first.index >= 0 and "key" in record
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
    return RunDiff(
        False,
        message + suffix,
        first.agreed,
        first.rank,
        key_from_json(record["key"]) if in_block else None,
        record.get("entry") if in_block else None,
        first.reasons,
        summaries,
        context,
        first.child or None,
    )
