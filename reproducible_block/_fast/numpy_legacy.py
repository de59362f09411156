"""NumPy's legacy global ``RandomState``, viewed directly: its MT19937 state and cached Gaussian.

``np.random.get_state``/``set_state`` cost about 50 µs each; copying the two C structs behind
them, under the bit generator's own lock (so a thread drawing with the GIL released never sees
a torn state), about 0.5 µs. The MT19937 state sits where the bit generator's documented
``ctypes.state_address`` points (uint32 key[624], then int pos), checked against the public state
at every attach; the cached Gaussian (``has_gauss``, an int, padding, ``gauss``, a double) sits
in the ``RandomState`` object itself, at offsets found once on a scratch ``RandomState`` by
writing known values through the public ``set_state``. The views are used only while
``np.random.set_state`` and ``np.random.rand`` are bound to the ``RandomState`` they were made
for and that one still holds the same MT19937 (checked at every use).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from reproducible_block._fast import views

__all__ = ["LegacyViews", "managed_global"]

KEY_WORDS = 624  # MT19937's key
#: NumPy's mt19937_state: uint32 key[624], then int pos.
MT_IMAGE_BYTES = 4 * KEY_WORDS + 4
_KEY_HEAD = struct.Struct("=III")  # the first three key words
_POSITION = struct.Struct("=i")


def managed_global() -> Any:
    """The ``RandomState`` NumPy's global functions use: what ``np.random.set_state`` is bound
    to (``np.random.mtrand._rand`` unless a library rebound the functions)."""
    return getattr(np.random.set_state, "__self__", np.random.mtrand._rand)


def _gaussian_offsets() -> tuple[int, int] | None:
    """Where a ``RandomState`` keeps ``has_gauss`` and where its ``gauss`` ends, found on a
    scratch one; None if the layout is not the expected one."""
    scratch = np.random.RandomState(0)
    size = type(scratch).__basicsize__
    key = np.arange(KEY_WORDS, dtype=np.uint32)

    def image(has_gauss: int, gauss: float) -> bytes:
        scratch.set_state(("MT19937", key, KEY_WORDS, has_gauss, gauss))
        return bytes(views.memory_view(id(scratch), size))

    marker = 0.123456789012345678
    with_gauss = image(1, marker)
    gauss_at = with_gauss.find(struct.pack("=d", marker))
    flag_at = gauss_at - 8
    without = image(0, -marker)
    if (
        gauss_at < 8
        or struct.unpack_from("=i", with_gauss, flag_at) != (1,)
        or struct.unpack_from("=i", without, flag_at) != (0,)
        or struct.unpack_from("=d", without, gauss_at) != (-marker,)
    ):
        return None
    return flag_at, gauss_at + 8


class LegacyViews:
    """The views of the global ``RandomState`` and its MT19937, while they may be used.

    :meth:`save`, :meth:`restore` and :meth:`swap` return None (or False) when they may not,
    and the caller takes the public calls.

    >>> legacy = LegacyViews()
    >>> saved = legacy.save()
    >>> saved is None or (len(saved[0]), len(saved[1])) == (MT_IMAGE_BYTES, 16)
    True
    """

    def __init__(self) -> None:
        self._global: Any = None
        self._set_state: Any = None
        self._rand: Any = None
        self._bit_generator: Any = None
        self._mt: memoryview | None = None
        self._gauss: memoryview | None = None
        self._lock: Any = None
        self._offsets = None if views.FREE_THREADED else _gaussian_offsets()
        if self._offsets is None and not views.FREE_THREADED:
            views.warn_fallback("NumPy's global generator", "its layout is not the expected one")
        self._attach()

    def _attach(self) -> bool:
        """Point the views at the global NumPy's functions use now and its bit generator, if
        they are a plain ``RandomState`` over a checked MT19937."""
        self._global = managed = managed_global()
        self._set_state, self._rand = np.random.set_state, np.random.rand
        bit_generator = getattr(managed, "_bit_generator", None)
        self._bit_generator = bit_generator
        offsets = self._offsets
        if (
            offsets is None
            or type(managed) is not np.random.RandomState
            or getattr(self._rand, "__self__", None) is not managed
            or type(bit_generator) is not np.random.MT19937
        ):
            self._mt = None
            return False
        public = bit_generator.state["state"]
        mt = views.memory_view(int(bit_generator.ctypes.state_address), MT_IMAGE_BYTES)
        expected = np.asarray(public["key"], dtype=np.uint32).tobytes()
        if bytes(mt) != expected + struct.pack("=i", int(public["pos"])):
            self._mt = None
            return False
        self._lock = bit_generator.lock
        self._mt = mt
        self._gauss = views.memory_view(id(managed) + offsets[0], offsets[1] - offsets[0])
        return True

    def usable(self) -> bool:
        """Whether the views may be used now (re-attached if NumPy's functions were rebound or
        ``np.random.set_bit_generator`` swapped the global's bit generator)."""
        if not views.ENABLED:
            return False
        if (
            np.random.set_state is not self._set_state
            or np.random.rand is not self._rand
            or self._global._bit_generator is not self._bit_generator
        ):
            return self._attach()
        return self._mt is not None

    def save(self) -> tuple[bytes, bytes] | None:
        """The MT19937 image and the Gaussian's 16 bytes; None if the views may not be used."""
        if not self.usable():
            return None
        with views.switching, self._lock:
            return bytes(self._mt), bytes(self._gauss)  # type: ignore[arg-type]

    def twister_fields(self) -> tuple[int, int, int, bytes] | None:
        """The MT19937's second and third key words, its position, and the Gaussian's 16 bytes,
        read in place (what the block ledger records: no copy of the 2.5 KB key); None if the
        views may not be used."""
        if not self.usable():
            return None
        with views.switching, self._lock:
            mt = self._mt
            _, first, second = _KEY_HEAD.unpack_from(mt)  # type: ignore[arg-type]
            position = _POSITION.unpack_from(mt, 4 * KEY_WORDS)[0]  # type: ignore[arg-type]
            return first, second, position, bytes(self._gauss)  # type: ignore[arg-type]

    def restore(self, mt: bytes, gauss: bytes) -> bool:
        """Copy in what :meth:`save` returned; False (nothing done) if the views may not be used.
        The caller holds ``views.switching`` (a block's exit, ``restore_all`` and ``apply_all``
        do)."""
        if not self.usable():
            return False
        with self._lock:
            self._mt[:] = mt  # type: ignore[index]
            self._gauss[:] = gauss  # type: ignore[index]
        return True

    def installer(self, fallback: Callable[[Any], None]) -> Callable[[Any], None]:
        """A function that copies C images (``(MT19937 image, Gaussian bytes, ...)``) in through
        the views as they are now, under the bit generator's lock, with :meth:`usable`'s checks
        inline; anything else, or any state once those checks fail, goes to ``fallback``.
        ``fallback`` itself if the views may not be used now. Made once per batch of per-sample
        blocks: one call per install, no lookups. The caller holds ``views.switching``."""
        if not self.usable():
            return fallback
        mt, gauss, lock = self._mt, self._gauss, self._lock
        set_state, rand, managed, bit_generator = (
            self._set_state,
            self._rand,
            self._global,
            self._bit_generator,
        )
        module = np.random

        def install(state: Any) -> None:
            image = state[0] if type(state) is tuple else None  # else a public state dict
            if (
                type(image) is bytes
                and views.ENABLED
                and module.set_state is set_state
                and module.rand is rand
                and managed._bit_generator is bit_generator
            ):
                with lock:
                    mt[:] = image  # type: ignore[index]
                    gauss[:] = state[1]  # type: ignore[index]
            else:
                fallback(state)

        return install

    def swap(self, mt: bytes, gauss: bytes) -> tuple[bytes, bytes] | None:
        """:meth:`save` and :meth:`restore` under one check and one lock (a block's entry); None
        (nothing done) if the views may not be used. The caller holds ``views.switching`` (a
        block's entry does): one lock fewer on every entry."""
        if not self.usable():
            return None
        with self._lock:
            saved = bytes(self._mt), bytes(self._gauss)  # type: ignore[arg-type]
            self._mt[:] = mt  # type: ignore[index]
            self._gauss[:] = gauss  # type: ignore[index]
        return saved
