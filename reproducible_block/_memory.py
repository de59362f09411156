"""Direct views of the C state behind generators, for the fast paths: checked, never trusted.

CPython's ``random``, NumPy's bit generators and the legacy ``RandomState`` keep their state in C
structs; copying those bytes costs a fraction of the public ``getstate``/``set_state`` calls. A
fast path built on :func:`memory_view` must check its layout against the public API at first use
and fall back to the public API (with :func:`warn_fallback`) when the check fails. Copies through
a ``memoryview`` run with the GIL held, so they are atomic with respect to other threads running
Python code; on a free-threaded build (:data:`FREE_THREADED`) there is no such GIL, and fast
paths must stay off.
"""

from __future__ import annotations

import ctypes
import sysconfig
import warnings

__all__ = ["FREE_THREADED", "memory_view", "warn_fallback"]

#: Whether this Python runs without the GIL (fast paths rely on it for atomic copies).
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

_warned: dict[str, object] = {}


def first_time(seen: dict[str, object], key: str) -> bool:
    """Whether this is the first call with ``key`` (for ``seen``); one caller gets True even
    when threads call at once (``dict.setdefault`` is atomic)."""
    mine = object()
    return seen.setdefault(key, mine) is mine


def memory_view(address: int, size: int) -> memoryview:
    """A writable byte view of ``size`` bytes at ``address`` (which must stay valid)."""
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def warn_fallback(what: str, reason: str) -> None:
    """Warn once per process that a fast path is off and the public API is used instead."""
    if not first_time(_warned, what):
        return
    warnings.warn(
        f"reproducible_block: the fast path for {what} is off ({reason}); the public API is used "
        "instead, which gives the same streams more slowly. Please report your Python, NumPy "
        "and torch versions.",
        RuntimeWarning,
        stacklevel=2,
    )
