"""Repeated keys: a block entered again with a key it already used replays the same numbers.

A key names one stream per root seed (and rank or worker, with ``per_rank``/``per_worker``), so
a block entered again with it draws what it drew before: the promise when a run is repeated, a
silent bug within one run (a decorated per-step function, a ``with`` block in an epoch loop
whose key lacks the epoch, one key at two places). This module keeps a record of the keys
entered since the root was installed and warns, once per key, when an entry repeats a key and
draws.

The cost sits off the hot path. The record maps each key (its derivation tail: folds and the
encoded key) to the place of its first entry, or to :data:`SETTLED`. A block reads it once per
entry (``record.get(tail) is not SETTLED``, a dict lookup); only the first entry of a key (the
place is noted) and its first repeated entry (checked, then settled) come here. The check
reads each source's state just after the block installed it and again at the block's exit:
equal states mean the block drew nothing, and the key is settled silently.

A fresh record starts with each root: ``set_seed`` forgets everything (a new run in the same
process), and a root installed otherwise (``load_rng_state``, a worker's ``seed_worker``) drops
the record at the next entry of an unsettled key. A forked child starts with an empty record.
Blocks made with ``replay=True`` never come here; entries during autograd's backward
(activation checkpointing's recompute) are not checked.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from reproducible_block._blocks import stack as _stack
from reproducible_block._streams import root as _root
from reproducible_block._support.fingerprint import same_state
from reproducible_block._support.warnings import RepetitionWarning, user_place, warn_at_user_line

__all__ = [
    "LIMIT",
    "SETTLED",
    "checking",
    "entered",
    "forget",
    "leave",
    "record",
    "restore",
    "snapshot",
]

#: A key whose repetition was checked (warned, or found not to draw): entries cost a lookup.
SETTLED: Any = object()
#: The keys entered under the current root: their first place (file, line), or SETTLED. Read
#: directly on the hot path (never rebound: cleared in place).
record: dict[bytes, Any] = {}
#: The open blocks whose exit compares states: by the identity of their frame, what they
#: installed and where. Blocks test it for emptiness on exit (never rebound).
checking: dict[int, tuple[Any, bytes, list[Any], tuple[str, int], tuple[str, int]]] = {}
#: How many keys the record holds at most (a long run of per-sample keys would grow it without
#: bound): when it is full, the first places are dropped and the settled keys kept.
LIMIT = 1 << 15
_generation = -1  # the root generation the record belongs to
_warned: dict[str, object] = {}

_current_graph_task_id: Any = getattr(torch._C, "_current_graph_task_id", None)


def forget() -> None:
    """Start a fresh record (``set_seed``: a new run; a forked child)."""
    global _generation
    record.clear()
    _warned.clear()
    _generation = _root.generation


def snapshot() -> tuple[dict[bytes, Any], dict[str, object], bool]:
    """A copy of the record, for :func:`restore` (``testing.isolated_random_state``)."""
    return dict(record), dict(_warned), _generation == _root.generation


def restore(saved: tuple[dict[bytes, Any], dict[str, object], bool]) -> None:
    """Put back a record taken by :func:`snapshot`, once the root it belonged to is back (in
    place: blocks hold the dicts)."""
    global _generation
    entries, warned, current = saved
    record.clear()
    record.update(entries)
    _warned.clear()
    _warned.update(warned)
    _generation = _root.generation if current else -1


def _make_room() -> None:
    settled = [key for key, value in record.items() if value is SETTLED]
    record.clear()
    if len(settled) < LIMIT // 2:
        record.update(dict.fromkeys(settled, SETTLED))


def _in_backward() -> bool:
    """Whether autograd's backward is running (activation checkpointing recomputes blocks)."""
    return _current_graph_task_id is not None and _current_graph_task_id() != -1


def entered(
    block: Any, tail: bytes, frame: _stack.Frame, depth: int, place: tuple[str, int] | None = None
) -> None:
    """Note a block's entry (its stream installed, the lock held) whose key is not settled.

    ``depth`` is how many frames above the caller the user's code usually is (a guess: if it
    lands in the library or ``contextlib``, the walk goes on from there); ``place``, if given,
    is the user's place already found (a batch's blocks all enter at one line). Never raises.
    """
    global _generation
    try:
        if _root.generation != _generation:  # a root installed since: a fresh record
            record.clear()
            _generation = _root.generation
        first = record.get(tail)
        if first is None:
            if len(record) >= LIMIT:
                _make_room()
            record[tail] = place or user_place(depth + 2)
            return
        if first is SETTLED or _in_backward():  # a recompute in backward replays on purpose
            return
        record[tail] = SETTLED  # checked once: later entries cost a lookup
        installed = [source.get_state() for source in frame[1]]
        checking[id(frame)] = (block, tail, installed, first, place or user_place(depth + 2))
    except Exception:  # a check never breaks the block it watches
        checking.pop(id(frame), None)


def leave(frame: _stack.Frame) -> None:
    """``_stack.leave(frame)``, warning first if the block repeated a key and drew."""
    found = checking.pop(id(frame), None)
    if found is None:
        _stack.leave(frame)
        return
    drew = False
    try:
        drew = not all(
            same_state(source.get_state(), state)
            for source, state in zip(frame[1], found[2], strict=True)
        )
    finally:
        _stack.leave(frame)
    if drew:
        block, tail, _, first, again = found
        warn_at_user_line(
            _message(block, first, again), RepetitionWarning, once=tail.hex(), seen=_warned
        )


def _message(block: Any, first: tuple[str, int], again: tuple[str, int]) -> str:
    places = (
        f"again at {again[0]}:{again[1]}, first at the same line"
        if first == again
        else f"at {first[0]}:{first[1]} and again at {again[0]}:{again[1]}"
    )
    return (
        f"Repeated key: {block!r} was entered {places}, and drew the same numbers both times: "
        "a key names one "
        "stream per root seed, and every entry starts it afresh. A function called every step "
        "needs a key per call (@ReproducibleBlock(key, key_from='step')); a block in a loop "
        "needs the epoch or step in its key (ReproducibleBlock(('train', epoch))); two places "
        "need two keys. Comparing two variants in one process? Call set_seed(seed) before "
        "each, as a new run does. If the replay is deliberate (evaluation with a fixed mask, "
        "reproducing a result), say so with ReproducibleBlock(key, replay=True). Warned once "
        "per key; "
        "silence it with warnings.filterwarnings('ignore', "
        "category=reproducible_block.RepetitionWarning) (on the command line, "
        "-W 'ignore:Repeated key:UserWarning')."
    )


os.register_at_fork(after_in_child=forget)
