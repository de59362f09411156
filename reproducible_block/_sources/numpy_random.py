"""NumPy's generators as sources: the legacy global ``RandomState`` and users' ``Generator``s."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from reproducible_block._fast.numpy_legacy import LegacyViews, managed_global
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import MT_WORDS, mt_image, mt_keys, seed_sequence
from reproducible_block._support.checks import (
    invalid,
    read_fields,
    read_float,
    read_int,
    read_words,
    words_tensor,
)
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from reproducible_block._support.fingerprint import same_state

__all__ = ["NumpyGeneratorSource", "NumpyGlobalSource", "managed_global"]

NumpyLegacyState = tuple[Any, ...]

_POSITION_AT_END = struct.pack("=i", MT_WORDS)  # a fresh key: the generator twists first
_KEY_HEAD = struct.Struct("=III")
_POSITION = struct.Struct("=i")
_GAUSSIAN = struct.Struct("=i4xd")  # has_gauss, padding, gauss: as _fast.numpy_legacy finds it
_KEY_ID = struct.Struct("<II")
_NO_GAUSSIAN = bytes(16)  # has_gauss = 0 (and its padding), gauss = 0.0


class NumpyGlobalSource(GeneratorSource[Any]):
    """NumPy's legacy global ``RandomState`` behind ``np.random.*``, cached Gaussian included.

    Its state is the MT19937 C state (624 words and a position) plus the Gaussian the legacy
    ``RandomState`` caches next to it. Blocks copy both directly when ``_fast.numpy_legacy``
    allows it (about 0.5 µs where ``np.random.get_state``/``set_state`` cost about 50 µs each),
    else use the public calls; saved and derived states are C images in both cases, which the
    public path converts.

    A global over another bit generator (``np.random.set_bit_generator(np.random.PCG64())``) is
    managed through its public state dict: a block installs the state that kind of bit
    generator gets from ``SeedSequence(the block's 128 bits)``, as a registered ``Generator``
    does, with no cached Gaussian.
    """

    name = "numpy"
    slot = "numpy"
    checkpoint_kind = "numpy-random-state"
    mersenne_twister = True

    def __init__(self) -> None:
        self._views = LegacyViews()

    def get_state(self) -> Any:
        """The legacy tuple for an MT19937 global; the public state dict for another kind."""
        state = np.random.get_state(legacy=False)
        if state.get("bit_generator") != "MT19937":
            return state
        inner = state["state"]
        return ("MT19937", inner["key"], inner["pos"], state["has_gauss"], state["gauss"])

    def set_state(self, state: Any) -> None:
        if type(state) is tuple and len(state) == 3:  # from_bits: the state for the kind there
            state = self._public(state)
        np.random.set_state(state)

    def save(self) -> Any:
        saved = self._views.save()
        return self.get_state() if saved is None else saved

    def restore(self, saved: Any) -> None:
        image = saved[0] if type(saved) is tuple else None
        if type(image) is not bytes:
            np.random.set_state(saved)
        elif not self._views.restore(image, saved[1]):
            np.random.set_state(self._public(saved))

    def installer(self) -> Callable[[Any], None]:
        return self._views.installer(self.restore)

    def swap(self, state: Any) -> Any:
        # save() and restore(state) under one check and one lock: every block entry comes here.
        image = state[0]
        saved = None if type(image) is not bytes else self._views.swap(image, state[1])
        return super().swap(state) if saved is None else saved

    def _public(self, saved: Any) -> Any:
        """C images (saved, or derived), in ``np.random.set_state``'s form for the global's
        bit generator now: a derived state carries its bits, for a global of another kind."""
        bit_generator: Any = getattr(managed_global(), "_bit_generator", None)
        if len(saved) == 3 and not isinstance(bit_generator, np.random.MT19937):
            state = dict(type(bit_generator)(seed_sequence(saved[2])).state)
            state["has_gauss"], state["gauss"] = 0, 0.0
            return state
        return _public(saved)

    def seed(self, seed: int) -> None:
        np.random.seed(seed)

    def twister_state(self, saved: Any) -> tuple[bytes, int, bytes] | None:
        if type(saved) is not tuple:  # a public state dict: a global of another kind
            return None
        if type(saved[0]) is str:  # np.random.get_state()'s form
            _, key, position, has_gauss, gauss = saved
            first, second = int(key[1]), int(key[2])
            cached = _GAUSSIAN.pack(1, gauss) if has_gauss else _NO_GAUSSIAN
        else:  # the C images: the key words then the position; has_gauss, padding, gauss
            image, cached = saved[0], saved[1]
            _, first, second = _KEY_HEAD.unpack_from(image)
            position = _POSITION.unpack_from(image, 4 * MT_WORDS)[0]
            if not _GAUSSIAN.unpack(cached)[0]:
                cached = _NO_GAUSSIAN  # NumPy keeps the last Gaussian's value once used
        return _KEY_ID.pack(first, second), int(position), cached

    #: twister_now's last read in place and what it gave.
    _last_now: tuple[object, tuple[bytes, int, bytes] | None] = (None, None)

    def twister_now(self) -> tuple[bytes, int, bytes] | None:
        fields = self._views.twister_fields()  # read in place, when the views may be used
        if fields is None:
            return self.twister_state(self.save())
        last = self._last_now  # the block ledger reads at every exit: often what it read last
        if fields == last[0] and last[1] is not None:
            return last[1]
        first, second, position, cached = fields
        if not _GAUSSIAN.unpack(cached)[0]:
            cached = _NO_GAUSSIAN  # as twister_state: the last Gaussian's value, once used
        now = _KEY_ID.pack(first, second), position, cached
        self._last_now = (fields, now)  # one assignment: never half of a pair
        return now

    def from_bits(self, bits: bytes) -> Any:
        # The C images (restore() installs them either way: copied, or through set_state), and
        # the bits, for a global over another bit generator.
        return mt_image(bits, b"", _POSITION_AT_END), _NO_GAUSSIAN, bits

    def from_bits_batch(self, bits: Sequence[bytes]) -> list[Any]:
        # The C images of the whole batch in one array: the key, then the position, per row.
        images = np.empty((len(bits), MT_WORDS + 1), np.uint32)
        images[:, :MT_WORDS] = mt_keys(bits)
        images[:, MT_WORDS] = MT_WORDS  # the position: an int, as in _POSITION_AT_END
        data = images.tobytes()
        size = images.shape[1] * 4
        return [
            (data[at : at + size], _NO_GAUSSIAN, item)
            for at, item in zip(range(0, len(data), size), bits, strict=True)
        ]

    def to_checkpoint(self, state: Any) -> Any:
        if isinstance(state, dict):  # a global over another bit generator: its state dict
            return {"state": _to_plain(state, "the state of np.random's global generator")}
        name, key, pos, has_gauss, cached_gaussian = state
        return {
            "bit_generator": name,
            "key": words_tensor(key),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }

    def from_checkpoint(self, data: object, where: str) -> Any:
        if isinstance(data, dict) and "state" in data:
            return _other_kind_state(data, where)
        fields = read_fields(
            data, where, ("bit_generator", "key", "pos", "has_gauss", "cached_gaussian")
        )
        if fields["bit_generator"] != "MT19937":
            raise invalid(f"{where}['bit_generator']", fields["bit_generator"], "'MT19937'")
        kind = type(getattr(managed_global(), "_bit_generator", None))
        if kind is not np.random.MT19937:
            raise ReproducibleBlockValueError(
                f"{where}: the states hold an MT19937 state of np.random's global generator, "
                f"which is over {kind.__name__} here. Call np.random.set_bit_generator("
                "np.random.MT19937()) before loading them, or save them anew."
            )
        return (
            "MT19937",
            read_words(fields["key"], f"{where}['key']", MT_WORDS),
            read_int(fields["pos"], f"{where}['pos']", 0, MT_WORDS),
            read_int(fields["has_gauss"], f"{where}['has_gauss']", 0, 1),
            read_float(fields["cached_gaussian"], f"{where}['cached_gaussian']"),
        )


def _other_kind_state(data: object, where: str) -> dict[str, Any]:
    """A checkpoint's state dict of a global over another bit generator, checked on a scratch
    ``RandomState`` over the kind the global has here."""
    fields = read_fields(data, where, ("state",))
    state = _from_plain(fields["state"], f"{where}['state']")
    bit_generator: Any = getattr(managed_global(), "_bit_generator", None)
    kind = type(bit_generator).__name__
    if not isinstance(state, dict) or state.get("bit_generator") != kind:
        saved = state.get("bit_generator") if isinstance(state, dict) else None
        raise ReproducibleBlockValueError(
            f"{where}['state']: the states hold a state of np.random's global generator over "
            f"{saved!r}, and it is over {kind} here. Call np.random.set_bit_generator() with "
            "the same kind of bit generator as when the states were saved, or save them anew."
        )
    read_int(state.get("has_gauss"), f"{where}['state']['has_gauss']", 0, 1)
    read_float(state.get("gauss"), f"{where}['state']['gauss']")
    scratch = np.random.RandomState(type(bit_generator)())
    try:
        scratch.set_state(state)
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise invalid(
            f"{where}['state']",
            fields["state"],
            f"a state of {kind} ({type(error).__name__}: {error})",
        ) from None
    if not same_state(scratch.get_state(legacy=False), state):
        raise invalid(
            f"{where}['state']",
            fields["state"],
            f"a state that {kind} keeps as it is (values out of range?)",
        )
    return state


def _public(saved: Any) -> NumpyLegacyState:
    """A state saved as C images, in ``np.random.set_state``'s form."""
    image, gauss = saved[0], saved[1]
    key = np.frombuffer(image[:-4], dtype=np.uint32).copy()
    position = struct.unpack("=i", image[-4:])[0]
    has_gauss, cached = _GAUSSIAN.unpack(gauss)
    return ("MT19937", key, position, has_gauss, cached)


# A registered Generator's state is its bit generator's nested dict; NumPy arrays in it are
# written into checkpoints as ("ndarray", dtype name, shape, values).
_NDARRAY = "ndarray"
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _to_plain(value: object, where: str) -> Any:
    if isinstance(value, dict):
        return {str(key): _to_plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.name in _INTEGER_DTYPES:
        return (_NDARRAY, value.dtype.name, list(value.shape), value.ravel().tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    raise ReproducibleBlockTypeError(  # no NumPy bit generator holds one
        f"get_rng_state() cannot save {where}: {type(value).__name__} {value!r} is not an int, "
        "float, str, dict or integer array. Please report the bit generator you registered."
    )


def _from_plain(value: object, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _from_plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, tuple):
        if len(value) != 4 or value[0] != _NDARRAY or value[1] not in _INTEGER_DTYPES:
            raise invalid(
                where, value, f"('ndarray', one of {list(_INTEGER_DTYPES)}, shape, values)"
            )
        _, dtype, shape, values = value
        info = np.iinfo(dtype)
        if (
            not isinstance(shape, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
            or not isinstance(values, list)
            or len(values) != math.prod(shape)
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and info.min <= v <= info.max
                for v in values
            )
        ):
            raise invalid(where, value, f"a shape and as many {dtype} values")
        return np.array(values, dtype=dtype).reshape(shape)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    raise invalid(where, value, "an int, float, str, dict or ('ndarray', ...) tuple")


class NumpyGeneratorSource(GeneratorSource[Mapping[str, Any]]):
    """A user's ``np.random.Generator`` (any bit generator that takes a ``SeedSequence``)."""

    checkpoint_kind = "numpy-generator"

    def __init__(self, generator: np.random.Generator, name: str) -> None:
        self.generator = generator
        self.name = name
        self._bit_generator = generator.bit_generator

    def get_state(self) -> Mapping[str, Any]:
        return self._bit_generator.state

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._bit_generator.state = state

    def from_bits(self, bits: bytes) -> Mapping[str, Any]:
        return type(self._bit_generator)(seed_sequence(bits)).state

    def to_checkpoint(self, state: Mapping[str, Any]) -> Any:
        return {"state": _to_plain(state, f"the state of {self.name!r}")}

    def from_checkpoint(self, data: object, where: str) -> Mapping[str, Any]:
        fields = read_fields(data, where, ("state",))
        state = _from_plain(fields["state"], f"{where}['state']")
        if not isinstance(state, dict):
            raise invalid(f"{where}['state']", fields["state"], "a dict")
        # Fields most NumPy bit generators have, which NumPy keeps without a range check.
        for name, high in (("has_uint32", 1), ("uinteger", 2**32 - 1)):
            if name in state:
                read_int(state[name], f"{where}['state'][{name!r}]", 0, high)
        kind = type(self._bit_generator).__name__
        saved = state.get("bit_generator")
        if isinstance(saved, str) and saved != kind:
            raise ReproducibleBlockValueError(
                f"{where}['state']['bit_generator']: the states hold a state of {saved} and "
                f"{self.name!r} is a Generator over {kind} here. Register a Generator over the "
                f"same bit generator ({saved}) under {self.name!r} as when the states were "
                "saved, or save them anew."
            )
        # NumPy checks the bit generator's name and fields when a state is set: on a scratch one.
        scratch = type(self._bit_generator)()
        try:
            scratch.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise invalid(
                f"{where}['state']",
                fields["state"],
                f"a state of {type(scratch).__name__}, the bit generator of {self.name!r} "
                f"({type(error).__name__}: {error})",
            ) from None
        if not same_state(scratch.state, state):
            raise invalid(
                f"{where}['state']",
                fields["state"],
                f"a state that {type(scratch).__name__} keeps as it is (values out of range?)",
            )
        return state
