"""Python's global ``random`` module as a generator source."""

from __future__ import annotations

import random
import struct
from typing import Any

from reproducible_block._fast import views as _memory
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import MT_WORDS, mt_image
from reproducible_block._support.checks import (
    read_fields,
    read_float,
    read_int,
    read_words,
    words_tensor,
)

__all__ = ["PythonRandomSource"]

PythonState = tuple[Any, ...]

_VERSION = 3  # what random.getstate() returns first
_IMAGE_BYTES = 4 + 4 * MT_WORDS  # CPython's RandomObject: int index, then uint32 state[624]
_INDEX_AT_END = struct.pack("=i", MT_WORDS)  # a fresh key: the generator twists first
_IMAGE_HEAD = struct.Struct("=iIII")  # the index and the first three key words
_KEY_ID = struct.Struct("<II")


def _image_of(state: PythonState) -> bytes:
    """The C struct bytes (index, then the key) that ``random.getstate()``'s state describes."""
    internal = state[1]
    return struct.pack(f"=i{MT_WORDS}I", internal[MT_WORDS], *internal[:MT_WORDS])


def _layout_checked() -> bool:
    """Whether a ``random.Random``'s C state sits where this module expects, checked once.

    CPython keeps the Mersenne Twister's index and key right after the object header; this is
    checked, not assumed, on a private instance (never the user's: a thread drawing from it
    would have its draw rolled back), with two different states (a draw in between).
    """
    if _memory.FREE_THREADED:
        return False
    probe = random.Random(0x5EED)
    view = _memory.memory_view(id(probe) + object.__basicsize__, _IMAGE_BYTES)
    if bytes(view) != _image_of(probe.getstate()):
        return False  # pragma: no cover - only with a CPython whose layout differs
    probe.random()
    return bytes(view) == _image_of(probe.getstate())


def _managed() -> Any:
    """The object Python's ``random.*`` functions use: what ``random.getstate`` is bound to
    (``random._inst`` unless a library rebound the functions), if ``random.random`` is too."""
    instance = getattr(random.getstate, "__self__", None)
    return instance if getattr(random.random, "__self__", None) is instance else None


class PythonRandomSource(GeneratorSource[PythonState]):
    """Python's global ``random`` module (every ``random.*`` function draws from it).

    Its state is CPython's Mersenne Twister (an index and 624 words, in a C struct) plus the
    Gaussian that ``random.gauss`` caches in ``gauss_next``. Blocks copy the C struct directly
    (its layout checked once on a private instance; the public calls otherwise, and always on a
    free-threaded build): about 0.3 µs where ``getstate`` costs about 12 µs. The copy is used
    only while ``random.random`` and ``random.getstate`` are bound to a plain ``random.Random``
    (checked at every use); a replaced instance (``random._inst``) of a subclass, or functions
    bound to anything else, take the public calls. Set ``PythonRandomSource.fast_path = False``
    to use only the public calls.
    """

    name = "random"
    slot = "random"
    checkpoint_kind = "python-random"

    #: Whether blocks may copy the C state directly (see the class doc). Read at every call.
    fast_path = True

    def __init__(self) -> None:
        self._layout = _layout_checked()
        if not self._layout and not _memory.FREE_THREADED:  # pragma: no cover - other layout
            _memory.warn_fallback("Python's random", "its C layout is not the expected one")
        # What the view points into, and the module's functions bound to it then: a fast path
        # is used only while random.random and random.getstate are still those (checked at
        # every use: a library may replace random._inst and rebind them).
        self._instance: Any = None
        self._random: Any = None
        self._getstate: Any = None
        self._view: memoryview | None = None
        self._attach()

    def _attach(self) -> bool:
        """Point the view at the object ``random``'s functions use now, if it is a plain
        ``random.Random`` (a subclass may keep more state, or draw differently)."""
        instance = _managed()
        self._instance, self._random, self._getstate = instance, random.random, random.getstate
        if not self._layout or type(instance) is not random.Random:
            self._view = None
            return False
        self._view = _memory.memory_view(id(instance) + object.__basicsize__, _IMAGE_BYTES)
        return True

    def _fast(self) -> memoryview | None:
        """The view, if the fast path may be used now (re-attached if the functions changed)."""
        if not self.fast_path:
            return None
        if (
            random.random is not self._random
            or random.getstate is not self._getstate
            or type(self._instance) is not random.Random  # __class__ assigned
        ):
            self._attach()
        return self._view

    def get_state(self) -> PythonState:
        return random.getstate()

    def set_state(self, state: PythonState) -> None:
        random.setstate(state)

    def save(self) -> Any:
        view = self._fast()
        if view is None:
            return random.getstate()
        return bytes(view), self._instance.gauss_next

    def restore(self, saved: Any) -> None:
        image = saved[0]
        if type(image) is not bytes:
            random.setstate(saved)
            return
        view = self._fast()
        if view is None:
            index, *words = struct.unpack(f"=i{MT_WORDS}I", image)
            random.setstate((_VERSION, (*words, index), saved[1]))
        else:
            view[:] = image
            self._instance.gauss_next = saved[1]

    def swap(self, state: Any) -> Any:
        image = state[0]
        view = self._fast() if type(image) is bytes else None
        if view is None:
            return super().swap(state)
        instance = self._instance
        saved = bytes(view), instance.gauss_next
        view[:] = image
        instance.gauss_next = state[1]
        return saved

    def seed(self, seed: int) -> None:
        random.seed(seed)

    def twister_state(self, saved: Any) -> tuple[bytes, int, bytes]:
        image, gauss = saved[0], saved[-1]
        if type(image) is bytes:  # the C image: the index, then the key words
            index, _, first, second = _IMAGE_HEAD.unpack_from(image)
        else:  # random.getstate()'s form
            index, first, second = saved[1][MT_WORDS], saved[1][1], saved[1][2]
        return _KEY_ID.pack(first, second), index, repr(gauss).encode()

    def from_bits(self, bits: bytes) -> Any:
        # The C image: restore() installs it either way (copied, or through setstate).
        return mt_image(bits, before=_INDEX_AT_END), None

    def to_checkpoint(self, state: PythonState) -> Any:
        version, internal, gauss_next = state
        return {
            "version": version,
            "key": words_tensor(internal[:MT_WORDS]),
            "pos": internal[MT_WORDS],
            "gauss_next": gauss_next,
        }

    def from_checkpoint(self, data: object, where: str) -> PythonState:
        fields = read_fields(data, where, ("version", "key", "pos", "gauss_next"))
        version = read_int(fields["version"], f"{where}['version']", _VERSION, _VERSION)
        key = read_words(fields["key"], f"{where}['key']", MT_WORDS)
        pos = read_int(fields["pos"], f"{where}['pos']", 0, MT_WORDS)
        gauss_next = fields["gauss_next"]
        if gauss_next is not None:
            gauss_next = read_float(gauss_next, f"{where}['gauss_next']")
        return (version, (*key.tolist(), pos), gauss_next)
