"""Switching the global generators into a block's stream and back: the one place that does it.

A process-wide re-entrant lock serialises blocks: while a block is open in one thread, a block
entered from another thread waits until it closes, so two threads never share a stream. Other
modules use it as ``_activation.lock`` (never a copy): a forked child gets a fresh one (see
``_after_fork_in_child``). Within
a thread blocks nest; they must close in the reverse order they opened, and a block that does not
(two asyncio tasks interleaving ``with`` blocks across ``await``) raises :class:`BlockUsageError`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import _ledger
from ._derive import source_seed_words
from ._errors import BlockUsageError
from ._root import current_root
from ._sources import GeneratorSource, registry

__all__ = [
    "Frame",
    "_install_all",
    "cached_states",
    "clear_cache",
    "derive_states",
    "enter",
    "exit_",
    "lock",
    "open_frames",
    "open_labels",
    "refuse_inside_block",
]

lock = threading.RLock()
_open: list[Frame] = []
_owner = 0  # the thread that opened the frames in _open (they are serialised by the lock)


class Frame:
    """One open activation: its block (for messages), its sources and the caller's states."""

    __slots__ = ("owner", "saved", "sources")

    def __init__(
        self, owner: object, sources: Sequence[GeneratorSource[Any]], saved: list[Any]
    ) -> None:
        self.owner = owner
        self.sources = sources
        self.saved = saved


def open_frames() -> int:
    """How many blocks are open (in the thread that holds the lock)."""
    return len(_open)


def open_labels() -> tuple[str, ...]:
    """The labels of the open blocks, outermost first (in the thread that holds the lock)."""
    return tuple(repr(frame.owner) for frame in _open)


# Derived states are pure functions of (root seed, key, sources), so a block entered again with
# the same key reuses them. The cache is bounded: per-sample keys never make it grow past this.
CACHE_SIZE = 256
_cache: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()


def derive_states(
    key_words: tuple[int, ...],
    sources: Sequence[GeneratorSource[Any]],
    names: tuple[str, ...],
) -> list[Any]:
    """The fresh states of a block: a pure function of (root seed, key, source names)."""
    seed = current_root().seed
    cache_key = (seed, key_words, names, registry.version)
    states = _cache.get(cache_key)
    if states is not None:
        _cache.move_to_end(cache_key)
        return states
    words = source_seed_words(seed, key_words, names)
    states = [source.derive(seed) for source, seed in zip(sources, words, strict=True)]
    _cache[cache_key] = states
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return states


def clear_cache() -> None:
    """Forget every cached derived state (they are recomputed on demand)."""
    _cache.clear()


def cached_states() -> int:
    """How many blocks' derived states are cached (bounded by ``CACHE_SIZE``)."""
    return len(_cache)


def _restore_all(sources: Sequence[GeneratorSource[Any]], saved: Sequence[Any]) -> None:
    """Put back every saved state; one failure does not stop the others (the first is raised)."""
    error: BaseException | None = None
    for index in range(len(saved) - 1, -1, -1):
        try:
            sources[index].restore(saved[index])
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def _install_all(
    sources: Sequence[GeneratorSource[Any]],
    states: Sequence[Any],
    saved: Sequence[Any],
    *,
    saved_form: bool = False,
) -> None:
    """Install every state, or none: on failure the sources already switched get ``saved`` back.

    ``states`` are derived or captured states (``install``), or with ``saved_form`` states from
    ``save`` (``restore``); ``saved`` are the current states as ``save`` or ``capture`` gave them.
    """
    index = 0
    try:
        for index, source in enumerate(sources):
            if saved_form:
                source.restore(states[index])
            else:
                source.install(states[index])
    except BaseException:
        _restore_all(sources[: index + 1], saved[: index + 1])
        raise


def enter(
    owner: object,
    key_words: tuple[int, ...],
    sources: Sequence[GeneratorSource[Any]],
    names: tuple[str, ...],
    resume: list[Any] | None = None,
) -> Frame:
    """Save the caller's states and install the block's: fresh ones, or those saved by ``exit_``.

    Install is all or nothing: if a source fails, the sources already switched get the caller's
    state back and the lock is released before the error propagates.
    """
    lock.acquire()
    try:
        states = derive_states(key_words, sources, names) if resume is None else resume
        saved = [source.save() for source in sources]
        _install_all(sources, states, saved, saved_form=resume is not None)
        frame = Frame(owner, sources, saved)
        if not _open:
            global _owner
            _owner = threading.get_ident()
        _open.append(frame)
        return frame
    except BaseException:
        lock.release()
        raise


def exit_(frame: Frame, *, keep: bool = False) -> list[Any] | None:
    """Restore the caller's states; with ``keep``, first save the block's states to resume."""
    misuse: BlockUsageError | None = None
    try:
        if _open and _open[-1] is frame:
            _open.pop()
        else:
            misuse = BlockUsageError(
                f"block {frame.owner!r} is closing while a block opened after it is still open. "
                "Blocks must close in the reverse order they opened: do not keep a `with` block "
                "open across `await` or `yield`; decorate the async function or generator "
                "with @ReproducibleBlock(key) instead, which keeps its stream across them."
            )
            if frame in _open:
                _open.remove(frame)
        kept = [source.save() for source in frame.sources] if keep else None
        try:
            if _ledger.recording is not None:  # the block ledger: one lookup when it is off
                _ledger.recording.record_exit(frame)
        finally:
            _restore_all(frame.sources, frame.saved)
    finally:
        lock.release()
    if misuse is not None:
        raise misuse
    return kept


@contextmanager
def refuse_inside_block(action: str) -> Iterator[None]:
    """Hold the lock for a change of global set-up, refusing it while a block is open here."""
    with lock:
        if _open:
            raise BlockUsageError(
                f"{action} was called inside an open block ({_open[-1].owner!r}); the block would "
                "undo or miss it on exit. Call it outside every block, at the start of the program."
            )
        yield


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children (test_fork.py)
    """Give a forked child a lock it can use.

    A lock held by another thread at fork time would never be released in the child (that thread
    does not exist there), and every block in the child would wait forever. The child gets a new
    lock; if the forking thread itself had blocks open, the child continues them, so it holds
    the new lock once per open block and can close them; blocks of other threads are dropped.
    """
    global lock
    fresh = threading.RLock()
    if _open and _owner == threading.get_ident():
        for _ in _open:
            fresh.acquire()
    else:
        _open.clear()
    lock = fresh


os.register_at_fork(after_in_child=_after_fork_in_child)
