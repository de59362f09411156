"""Switching the generators into a block's stream and back: the one place that does it.

A process-wide re-entrant lock serialises blocks: while a block is open in one thread, a block
entered from another thread waits until it closes, so two threads never share a stream. The wait
is bounded (:func:`set_block_wait_timeout`, default 60 s): a thread that would wait forever (a
thread pool fed from inside a block) gets a :class:`BlockUsageError` naming the thread and the
block it waits for. Within a thread blocks nest; a block that closes out of order (two asyncio
tasks interleaving ``with`` blocks across ``await``) raises :class:`BlockUsageError`, after giving
every caller its exact state back.

A switch is all or nothing: if a source fails while a block installs its states, the sources
already switched get their state back before the error propagates (``atomic.apply_all`` is that
rule for every other change of every generator; block entry inlines it). A switch
holds ``_memory.switching``, which a fork waits for: a child never starts mid-switch. A forked
child gets a fresh lock, and the streams outside the blocks of other threads (see
:func:`_after_fork_in_child`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from threading import get_ident
from typing import Any, NoReturn

from reproducible_block._blocks.atomic import restore_all
from reproducible_block._fast import views as _memory
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block._streams import root as _root
from reproducible_block._streams.other_seeders import initial_seed
from reproducible_block._support.errors import (
    BlockUsageError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = [
    "WAIT_TIMEOUT_VARIABLE",
    "Frame",
    "enter",
    "get_block_wait_timeout",
    "held",
    "held_for_collective",
    "leave",
    "open_count",
    "open_labels",
    "refuse_inside_block",
    "set_block_wait_timeout",
    "switch",
]

#: The environment variable that sets the default wait (seconds, or ``none`` for no limit).
WAIT_TIMEOUT_VARIABLE = "REPRODUCIBLE_BLOCK_WAIT_TIMEOUT"
_DEFAULT_WAIT = 60.0

lock = threading.RLock()
_open: list[Frame] = []
#: Called with each frame a block closes (in order), before the caller's states come back: the
#: block ledger's hook (see ``_ledger``), or None. It must not raise.
exit_hook: Callable[[Frame], None] | None = None
_holder = 0  # the thread that opened the frames in _open (they are serialised by the lock)


#: One open block: (owner, for messages; its sources; the caller's saved states, a list that
#: an out-of-order close of an older block may update). A tuple: cheap to build on the hot path.
Frame = tuple[object, Sequence[GeneratorSource[Any]], list[Any]]


def _check_wait(seconds: object, where: str) -> float:
    """A wait in seconds for ``lock.acquire`` (-1 waits forever)."""
    if seconds is None:
        return -1.0
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ReproducibleBlockTypeError(
            f"{where} must be a number of seconds or None (wait forever); got "
            f"{type(seconds).__name__} {seconds!r}."
        )
    if not seconds > 0 or seconds == float("inf"):
        raise ReproducibleBlockValueError(
            f"{where} must be a positive, finite number of seconds, or None to wait forever; "
            f"got {seconds!r}."
        )
    return float(seconds)


def _wait_from_environment() -> float:
    text = os.environ.get(WAIT_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return _DEFAULT_WAIT
    if text.lower() == "none":
        return -1.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    return _check_wait(value, f"the environment variable {WAIT_TIMEOUT_VARIABLE}={text!r}")


_wait = _wait_from_environment()


def set_block_wait_timeout(seconds: float | None) -> float | None:
    """How long a block entered in one thread waits for another thread's block; returns the old.

    Blocks are serialised across threads (the global generators are process-wide). A wait
    longer than this raises :class:`~reproducible_block.BlockUsageError` naming the thread that
    holds a block and that block's key, instead of hanging: a thread pool whose tasks enter
    blocks, fed from inside a block, would otherwise wait forever. ``None`` waits forever. The
    default is 60 s, or the environment variable ``REPRODUCIBLE_BLOCK_WAIT_TIMEOUT`` (seconds,
    or ``none``) when set.

    >>> from reproducible_block import set_block_wait_timeout
    >>> previous = set_block_wait_timeout(5)
    >>> set_block_wait_timeout(previous)
    5.0
    """
    global _wait
    previous = None if _wait < 0 else _wait
    _wait = _check_wait(seconds, "set_block_wait_timeout(seconds)")
    return previous


def get_block_wait_timeout() -> float | None:
    """The current wait limit in seconds (None: no limit); see :func:`set_block_wait_timeout`."""
    return None if _wait < 0 else _wait


def _thread_name(ident: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return repr(thread.name)
    return f"ident {ident}"  # the thread ended while we looked


def _timed_out(owner: object) -> BlockUsageError:
    frames = list(_open)  # another thread's list: a snapshot, for the message only
    holding = f"the block {frames[0][0]!r}" if frames else "a switch of the generators"
    return BlockUsageError(
        f"{owner!r} waited {_wait:g} s for thread {_thread_name(_holder)}, which holds "
        f"{holding}. Blocks are serialised across threads (the global generators are shared); "
        "a thread pool fed from inside a block waits for that block forever. Give per-sample "
        "work its own generators instead (torch_generator(key) and numpy_generator(key) "
        "take no lock), run the pool outside the block, or raise the limit "
        "with set_block_wait_timeout(seconds) or REPRODUCIBLE_BLOCK_WAIT_TIMEOUT (None or "
        "'none': wait forever)."
    )


def _acquire(owner: object) -> None:
    if not lock.acquire(True, _wait):
        raise _timed_out(owner)


def enter(owner: object, sources: Sequence[GeneratorSource[Any]], states: Sequence[Any]) -> Frame:
    """Save the caller's states and install ``states`` (derived, or saved by :func:`leave`).

    All or nothing, as :func:`apply_all`, which it inlines (with ``swap``, one call per source):
    the hot path of every block, the ``make bench`` row "repeated key". If a source fails, the
    sources already switched get the caller's state back and the lock is released before the
    error propagates.
    """
    if not lock.acquire(False) and not lock.acquire(True, _wait):  # a wait only if contended
        raise _timed_out(owner)
    outermost = not _open
    if outermost and initial_seed() != _root.torch_seed:  # another seeder ran?
        try:
            _other_seeders.noticed()
        except BaseException:  # the warning raised (warnings as errors): nothing is open
            lock.release()
            raise
    saved: list[Any] = []
    with _memory.switching:  # no fork until the frame that undoes the switch is in _open
        try:
            for source, state in zip(sources, states, strict=True):
                saved.append(source.swap(state))  # the caller's state, then the block's
        except BaseException:
            try:
                restore_all(sources, saved)
            finally:
                lock.release()
            raise
        if outermost:
            global _holder
            _holder = get_ident()
        frame = (owner, sources, saved)
        _open.append(frame)
    return frame


def leave(frame: Frame, *, keep: bool = False) -> list[Any] | None:
    """Restore the caller's states; with ``keep``, first save the block's states to resume."""
    if not _open or _open[-1] is not frame:
        return _leave_out_of_order(frame, keep)
    sources, saved = frame[1], frame[2]
    try:
        with _memory.switching:  # no fork between the pop and the last restore
            _open.pop()
            try:
                kept = None
                if keep:  # a loop, not a comprehension: no frame of its own on this hot path
                    kept = []
                    for source in sources:
                        kept.append(source.save())
                if exit_hook is not None:
                    exit_hook(frame)
            finally:  # the caller's states come back even if the hook or a save raised (Ctrl-C)
                index = len(saved)
                try:
                    while index:
                        index -= 1
                        sources[index].restore(saved[index])
                except BaseException:
                    restore_all(sources[:index], saved[:index])  # the others get theirs back
                    raise
    finally:
        lock.release()
    return kept


def switch(
    frame: Frame,
    owner: object,
    states: Sequence[Any],
    installs: Sequence[Callable[[Any], None]],
) -> Frame:
    """Close ``frame`` and open ``owner``'s block over the same sources in one step.

    What :func:`leave` then :func:`enter` do, without putting the caller's states back in
    between only to save them again: the exit hook sees ``frame`` (its block's states still
    installed, the block no longer counted open), then each source gets ``states`` (derived,
    installed with ``installs``: each source's ``installer()``, or ``restore``, in the order of
    the sources); the caller's saved states carry over to the new frame, and the
    lock stays held. ``frame`` must be the innermost open frame and the next block must manage
    its sources, in order (``_blocks.batch`` checks both, and that no other seeder ran). All or
    nothing: if the hook or a source fails, every source gets the caller's state back and the
    lock is released, as :func:`leave` does, before the error propagates.
    """
    if not _open or _open[-1] is not frame:
        _leave_out_of_order(frame, False)  # raises, as leave does: every caller's state back
    sources, saved = frame[1], frame[2]
    with _memory.switching:  # no fork between the pop and the new frame
        _open.pop()
        try:
            if exit_hook is not None:
                exit_hook(frame)
            for install, state in zip(installs, states, strict=True):
                install(state)  # a derived state: nothing of the last block is kept
        except BaseException:  # the caller's states come back, as in leave
            try:
                restore_all(sources, saved)
            finally:
                lock.release()
            raise
        opened = (owner, sources, saved)
        _open.append(opened)
    return opened


def _leave_out_of_order(frame: Frame, keep: bool) -> NoReturn:
    """Close a block that blocks opened after it still cover, then raise BlockUsageError.

    Each source's caller state goes to the nearest newer block that manages the source (it
    restores it when it closes), or back into the generator if none does: once every block has
    closed, every generator is where the code outside them left it.
    """
    owner, sources, saved = frame
    index = next((at for at, other in enumerate(_open) if other is frame), None)
    if index is None:
        raise BlockUsageError(
            f"block {owner!r} is closing but is not open in this process (closed twice, "
            "or opened in another process before a fork)."
        )
    failure: BaseException | None = None
    try:
        with _memory.switching:
            newer = _open[index + 1 :]
            del _open[index]  # closed, whatever fails below
            for position, source in enumerate(sources):
                # By identity: a user's source may define __eq__ (a dataclass), and two sources
                # that compare equal are still two generators.
                above, at = next(
                    (
                        (other, at)
                        for other in newer
                        for at, managed in enumerate(other[1])
                        if managed is source
                    ),
                    (None, 0),
                )
                if above is not None:
                    above[2][at] = saved[position]
                    continue
                try:
                    source.restore(saved[position])
                except BaseException as error:  # the other sources still get theirs back
                    failure = failure or error
    finally:
        lock.release()
    if failure is not None:
        raise failure
    raise BlockUsageError(
        f"block {owner!r} is closing while a block opened after it ({newer[-1][0]!r}) "
        "is still open. Blocks must close in the reverse order they opened: do not keep a "
        "`with` block open across `await` or `yield`; decorate the async function or "
        "generator with @ReproducibleBlock(key) instead, which keeps its stream across them. "
        "Every generator gets its caller's state back when the remaining blocks close."
    )


def open_count() -> int:
    """How many blocks are open (in the thread that holds the lock)."""
    return len(_open)


def open_labels() -> tuple[str, ...]:
    """The labels of the open blocks, outermost first (in the thread that holds the lock)."""
    return tuple(repr(frame[0]) for frame in _open)


@contextmanager
def held_for_collective(action: str, tell_peers: Callable[[Exception], object]) -> Iterator[None]:
    """:func:`held`, for a collective: if the wait for the lock times out, ``tell_peers(error)``
    (this rank's part of the collective) runs before the error is raised, so that the other
    ranks refuse too instead of waiting for this one."""
    try:
        _acquire(action)
    except Exception as error:
        tell_peers(error)
        raise
    try:
        yield
    finally:
        lock.release()


@contextmanager
def held(action: str) -> Iterator[None]:
    """Hold the lock (bounded wait) for work that reads or changes every generator."""
    _acquire(action)
    try:
        yield
    finally:
        lock.release()


@contextmanager
def refuse_inside_block(action: str) -> Iterator[None]:
    """Hold the lock for a change of global set-up, refusing it while a block is open here."""
    with held(action):
        if _open:
            raise BlockUsageError(
                f"{action} was called inside an open block ({_open[-1][0]!r}); the block "
                "would undo or miss it on exit. Call it outside every block, at the start of "
                "the program."
            )
        yield


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children (test_fork.py)
    """Give a forked child a lock it can use, and the streams of the code outside blocks.

    A lock held by another thread at fork time would never be released in the child (that thread
    does not exist there), and every block in the child would wait. The child gets a new lock;
    if the forking thread itself had blocks open, the child continues them, so it holds the new
    lock once per open block and can close them. Blocks of other threads never close in the
    child: they are dropped, and every generator they manage gets back the state the code
    outside them had (else the child would draw from another thread's block for good). Setting
    a state takes the generator's own lock (NumPy's, torch's): if the dead thread held it at the
    fork, drawing was mid-way, and the child waits here as it would at its next draw.
    """
    global lock, _holder
    fresh = threading.RLock()
    if _open and _holder == threading.get_ident():
        for _ in _open:
            fresh.acquire()
    else:
        for _, sources, saved in reversed(_open):  # innermost first: the outermost's states last
            with suppress(Exception):  # a handler must not raise; restore_all tries every source
                restore_all(sources, saved)
        _open.clear()
    _holder = threading.get_ident()
    lock = fresh


os.register_at_fork(after_in_child=_after_fork_in_child)
