"""Python's global ``random`` module as a generator source."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reproducible_block._fast.cpython_random import RandomImage
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import MT_WORDS, mt_image, mt_keys
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
_INDEX_AT_END = struct.pack("=i", MT_WORDS)  # a fresh key: the generator twists first
_IMAGE_HEAD = struct.Struct("=iIII")  # the index and the first three key words
_KEY_ID = struct.Struct("<II")


class PythonRandomSource(GeneratorSource[PythonState]):
    """Python's global ``random`` module (every ``random.*`` function draws from it).

    Its state is CPython's Mersenne Twister (an index and 624 words, in a C struct) plus the
    Gaussian that ``random.gauss`` caches in ``gauss_next``. Blocks copy the C struct directly
    when ``_fast.cpython_random`` allows it (about 0.3 µs where ``getstate`` costs about 12 µs),
    else use the public calls; the saved and derived states are C images (index, then key) in
    both cases, which the public path converts.
    """

    name = "random"
    slot = "random"
    checkpoint_kind = "python-random"
    mersenne_twister = True

    def __init__(self) -> None:
        self._image = RandomImage()

    def get_state(self) -> PythonState:
        return random.getstate()

    def set_state(self, state: PythonState) -> None:
        random.setstate(state)

    def save(self) -> Any:
        view = self._image.view()
        if view is None:
            return random.getstate()
        return bytes(view), self._image.instance.gauss_next

    def restore(self, saved: Any) -> None:
        image = saved[0]
        if type(image) is not bytes:
            random.setstate(saved)
            return
        view = self._image.view()
        if view is None:
            index, *words = struct.unpack(f"=i{MT_WORDS}I", image)
            random.setstate((_VERSION, (*words, index), saved[1]))
        else:
            view[:] = image
            self._image.instance.gauss_next = saved[1]

    def installer(self) -> Callable[[Any], None]:
        return self._image.installer(self.restore)

    def swap(self, state: Any) -> Any:
        image = state[0]
        view = self._image.view() if type(image) is bytes else None
        if view is None:
            return super().swap(state)
        instance = self._image.instance
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

    #: twister_now's last read (the image's head and the Gaussian object) and its fields.
    _last_now: tuple[tuple[int, ...], object, tuple[bytes, int, bytes] | None] = ((), None, None)

    def twister_now(self) -> tuple[bytes, int, bytes]:
        # The index and two key words straight from the C struct: no copy of the 2.5 KB image.
        # The block ledger reads them at every block exit: the same head and the same Gaussian
        # object (unchanged) give the last fields back.
        image = self._image
        view = image.view()
        if view is None:
            return self.twister_state(random.getstate())
        head = _IMAGE_HEAD.unpack_from(view)
        gauss = image.instance.gauss_next
        last = self._last_now
        if head == last[0] and gauss is last[1] and last[2] is not None:
            return last[2]
        index, _, first, second = head
        fields = _KEY_ID.pack(first, second), index, repr(gauss).encode()
        self._last_now = (head, gauss, fields)  # one assignment: never half of a pair
        return fields

    def from_bits(self, bits: bytes) -> Any:
        # The C image: restore() installs it either way (copied, or through setstate).
        return mt_image(bits, _INDEX_AT_END), None

    def from_bits_batch(self, bits: Sequence[bytes]) -> list[Any]:
        # The C images of the whole batch in one array: the index, then the key, per row.
        images = np.empty((len(bits), 1 + MT_WORDS), np.uint32)
        images[:, 0] = MT_WORDS  # the index: an int, 624 has the same bytes as a uint32
        images[:, 1:] = mt_keys(bits)
        data = images.tobytes()
        size = images.shape[1] * 4
        return [(data[at : at + size], None) for at in range(0, len(data), size)]

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
