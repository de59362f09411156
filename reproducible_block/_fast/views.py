"""Direct views of the C state behind generators, for the fast paths: checked, never trusted.

CPython's ``random``, NumPy's bit generators and the legacy ``RandomState`` keep their state in C
structs; copying those bytes costs a fraction of the public ``getstate``/``set_state`` calls. A
fast path built on :func:`memory_view` must check its layout against the public API at first use
and fall back to the public API (with :func:`warn_fallback`) when the check fails. Copies through
a ``memoryview`` run with the GIL held, so they are atomic with respect to other threads running
Python code; on a free-threaded build (:data:`FREE_THREADED`) there is no such GIL, and fast
paths must stay off.

A fast path may hold a generator's own lock (NumPy's bit generator lock) around its copies, and
a block switches several generators in turn: a fork from another thread in the middle would
leave the child that lock held by a thread it does not have, or its generators half switched.
:data:`switching` is held around every such section, and across every ``os.fork`` (a before-fork
handler takes it), so no fork happens mid-switch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sysconfig
import threading

from reproducible_block._support.warnings import warn_at_user_line

__all__ = ["ENABLED", "FREE_THREADED", "memory_view", "switching", "warn_fallback"]

#: The one switch: whether the fast paths may be used at all. Read once from the environment
#: (``REPRODUCIBLE_BLOCK_FAST_PATHS=0`` turns them off), then read at every use, as
#: ``views.ENABLED`` (tests flip it through the ``public_api`` fixture).
ENABLED = os.environ.get("REPRODUCIBLE_BLOCK_FAST_PATHS", "1") != "0"

#: Whether this Python runs without the GIL (fast paths rely on it for atomic copies).
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def memory_view(address: int, size: int) -> memoryview:
    """A writable byte view of ``size`` bytes at ``address`` (which must stay valid)."""
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def warn_fallback(what: str, reason: str) -> None:
    """Warn once per process that a fast path is off and the public API is used instead."""
    warn_at_user_line(
        f"reproducible_block: the fast path for {what} is off ({reason}); the public API is used "
        "instead, which gives the same streams more slowly. Please report your Python, NumPy "
        "and torch versions.",
        RuntimeWarning,
        once=f"fast path: {what}",
    )


#: Held while the library switches generators or holds a generator's own lock (re-entrant); a
#: fork waits for it (see the module doc). Read it as ``_memory.switching``: a forked child gets
#: a new one.
switching = threading.RLock()
#: How long a fork waits for a switch in another thread (a switch takes microseconds).
FORK_WAIT = 30.0
_held_for_fork = False


def _before_fork() -> None:
    """Hold the switching lock across the fork; past :data:`FORK_WAIT`, fork anyway (logged)."""
    global _held_for_fork
    _held_for_fork = switching.acquire(True, FORK_WAIT)
    if not _held_for_fork:  # a switch that never ends (a hung source)
        logging.getLogger("reproducible_block").warning(
            "os.fork() went ahead after waiting %g s for another thread to finish switching "
            "the random generators; the child may find them half switched.",
            FORK_WAIT,
        )


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        switching.release()


def _after_fork_in_child() -> None:
    global switching, _held_for_fork
    _held_for_fork = False
    switching = threading.RLock()  # the parent's may be held by a thread the child lacks


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
