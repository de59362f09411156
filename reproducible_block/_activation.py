"""Switching the global generators into a block's stream and back: the one place that does it.

A process-wide re-entrant lock serialises blocks: while a block is open in one thread, a block
entered from another thread waits until it closes, so two threads never share a stream. Within
a thread blocks nest; they must close in the reverse order they opened, and a block that does not
(two asyncio tasks interleaving ``with`` blocks across ``await``) raises :class:`BlockUsageError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ._derive import block_sequence, source_sequence
from ._errors import BlockUsageError
from ._root import current_root
from ._sources import GeneratorSource

__all__ = ["Frame", "enter", "exit_", "lock", "open_frames", "open_labels", "refuse_inside_block"]

lock = threading.RLock()
_open: list[Frame] = []


@dataclass
class Frame:
    """One open activation: the block it belongs to and the caller states to put back."""

    label: str
    saved: list[tuple[GeneratorSource[Any], Any]]


def open_frames() -> int:
    """How many blocks are open (in the thread that holds the lock)."""
    return len(_open)


def open_labels() -> tuple[str, ...]:
    """The labels of the open blocks, outermost first (in the thread that holds the lock)."""
    return tuple(frame.label for frame in _open)


def derive_states(
    key_words: tuple[int, ...], sources: Sequence[GeneratorSource[Any]]
) -> list[Any]:
    """The fresh states of a block: a pure function of (root seed, key, source names)."""
    sequence = block_sequence(current_root().seed, key_words)
    return [source.derive(source_sequence(sequence, source.name)) for source in sources]


def _install_all(
    states: Sequence[Any], saved: Sequence[tuple[GeneratorSource[Any], Any]]
) -> None:
    """Install every state, or none: on failure the sources already switched get ``saved`` back."""
    installed = 0
    try:
        for (source, _), state in zip(saved, states, strict=True):
            source.install(state)
            installed += 1
    except BaseException:
        _restore_all(saved[: installed + 1])
        raise


def _restore_all(saved: Sequence[tuple[GeneratorSource[Any], Any]]) -> None:
    """Put back every saved state; one failure does not stop the others (the first is raised)."""
    error: BaseException | None = None
    for source, state in reversed(saved):
        try:
            source.install(state)
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def enter(
    label: str,
    key_words: tuple[int, ...],
    sources: Sequence[GeneratorSource[Any]],
    resume: list[Any] | None = None,
) -> Frame:
    """Save the caller's states and install the block's (fresh, or ``resume``d ones)."""
    lock.acquire()
    try:
        states = resume if resume is not None else derive_states(key_words, sources)
        saved = [(source, source.capture()) for source in sources]
        _install_all(states, saved)
        frame = Frame(label, saved)
        _open.append(frame)
        return frame
    except BaseException:
        lock.release()
        raise


def exit_(frame: Frame, *, keep: bool = False) -> list[Any] | None:
    """Restore the caller's states; with ``keep``, first return the block's states to resume."""
    misuse: BlockUsageError | None = None
    try:
        if not _open or _open[-1] is not frame:
            misuse = BlockUsageError(
                f"block {frame.label} is closing while a block opened after it is still open. "
                "Blocks must close in the reverse order they opened: do not keep a `with` block "
                "open across `await` or `yield`; decorate the async function or generator "
                "with @ReproducibleBlock(key) instead, which keeps its stream across them."
            )
        if frame in _open:
            _open.remove(frame)
        kept = [source.capture() for source, _ in frame.saved] if keep else None
        _restore_all(frame.saved)
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
                f"{action} was called inside an open block ({_open[-1].label}); the block would "
                "undo or miss it on exit. Call it outside every block, at the start of the program."
            )
        yield
