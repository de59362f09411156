"""Finding the first record where two runs' block ledgers part, and why: the report.

Each rank's records are paired with the other run's rank's (``_pairing``: by block key and
``per_worker`` fold, n-th entry of that key in the rank); records of different ranks never
pair. The rank whose first difference comes earliest in its order leads the report, the other
differing ranks follow. Records that were not made (a ledger stopped by a failure, a DataLoader
worker that left no ledger) are reported too: such a run is never called identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block.diagnostics._format import key_from_json
from reproducible_block.diagnostics._pairing import RankDiff, diff_rank
from reproducible_block.diagnostics._read import LedgerFile, Run, read_run

__all__ = ["RunDiff", "diff_runs"]


def _where(diff: RankDiff, *, with_rank: bool = True) -> str:
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


def _rank_summary(diff: RankDiff) -> dict[str, Any]:
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
    diffs: list[RankDiff] = []
    for rank in sorted(set(read_a.ranks) | set(read_b.ranks), key=lambda r: -1 if r is None else r):
        if rank not in read_a.ranks or rank not in read_b.ranks:
            having = "A" if rank in read_a.ranks else "B"
            diffs.append(
                RankDiff(rank, 0, -1, None, (f"only {having} has ledgers for rank {rank}",))
            )
            continue
        diffs.append(diff_rank(rank, read_a.ranks[rank], read_b.ranks[rank]))
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
