"""A PCG64 whose 128-bit state is written in place: the Mersenne Twister key expansion, fast.

Derivation expands 128 bits into a 624-word key with a PCG64 (state = the bits, a fixed
increment). Through the public API that costs a new ``PCG64`` and a state dict per key; here each
thread keeps one PCG64 and writes the 16 bytes of its state through a view. NumPy's
``pcg64_state`` starts with a pointer to ``{pcg128_t state; pcg128_t increment}``: the layout is
checked once per process against the public expansion (on little-endian machines only).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

from reproducible_block._fast import views

__all__ = ["InPlaceExpansion"]

_STATE_BYTES = 16  # pcg128_t


class _Expander:
    """One thread's PCG64 and a view of its 128-bit state.

    Bit generators hold their own lock while they generate with the GIL released, so each thread
    has its own (a shared one would need a lock of ours, which a fork could leave held).
    """

    __slots__ = ("increment", "random_raw", "state")

    def __init__(self, increment: int) -> None:
        self.increment = increment
        generator = np.random.PCG64()
        generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": 0, "inc": increment},
            "has_uint32": 0,
            "uinteger": 0,
        }
        self.random_raw = generator.random_raw
        pointer = ctypes.c_void_p.from_address(int(generator.ctypes.state_address)).value
        self.state = views.memory_view(int(pointer or 0), _STATE_BYTES)


class InPlaceExpansion:
    """``count`` outputs of a PCG64 with state ``bits`` and increment ``increment``, equal to
    ``reference(bits)`` (the public expansion with the same increment, which checks the layout
    once per process).

    >>> def public(bits):
    ...     generator = np.random.PCG64()
    ...     generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
    ...                        "state": {"state": int.from_bytes(bits, "little"), "inc": 1}}
    ...     return generator.random_raw(4)
    >>> raw = InPlaceExpansion(4, public).outputs(bytes(range(16)), 1)
    >>> raw is None or bool((raw == public(bytes(range(16)))).all())
    True
    """

    def __init__(self, count: int, reference: Callable[[bytes], np.ndarray]) -> None:
        self.count = count
        self.reference = reference
        self.checked: bool | None = None  # None: not checked yet; the check runs once
        self._threads = threading.local()

    def _new_expander(self, increment: int) -> _Expander | None:
        """A checked expander for this thread, or None when the layout check failed."""
        if self.checked is False or sys.byteorder != "little" or views.FREE_THREADED:
            self.checked = False
            return None
        expander = _Expander(increment)
        if self.checked is None:
            probe = bytes(range(1, _STATE_BYTES + 1))
            expander.state[:] = probe
            self.checked = bool((expander.random_raw(self.count) == self.reference(probe)).all())
            if not self.checked:
                views.warn_fallback(
                    "deriving Mersenne Twister keys", "PCG64's layout is not the expected one"
                )
                return None
        self._threads.expander = expander
        return expander

    def _expander(self, increment: int) -> _Expander | None:
        """This thread's generator for ``increment`` (made on first use), or None when the
        switch is off or the layout check failed."""
        if not views.ENABLED:
            return None
        expander: _Expander | None = getattr(self._threads, "expander", None)
        if expander is None or expander.increment != increment:
            expander = self._new_expander(increment)
        return expander

    def outputs_many(self, bits: Sequence[bytes], increment: int) -> np.ndarray | None:
        """The ``count`` outputs for each item of ``bits``, one row each (``len(bits)`` by
        ``count``, uint64, little-endian here), or None as :meth:`outputs` returns it: a batch
        of keys expanded with one look-up of this thread's generator and one copy into the
        result."""
        expander = self._expander(increment)
        if expander is None:
            return None
        state, random_raw, count = expander.state, expander.random_raw, self.count
        rows = []
        for item in bits:
            state[:] = item
            rows.append(random_raw(count))
        return np.concatenate(rows).reshape(len(rows), count)

    def outputs(self, bits: bytes, increment: int) -> np.ndarray | None:
        """The ``count`` outputs (uint64, little-endian here), or None when the switch is off
        or the layout check failed: the caller takes the public expansion. ``increment`` is
        read at every call (a test may change the constant it comes from)."""
        expander = self._expander(increment)
        if expander is None:
            return None
        expander.state[:] = bits
        return expander.random_raw(self.count)
