"""How each kind of generator source is written into a checkpoint, and read back with checks.

A codec turns a state that ``capture`` returned into plain values that
``torch.load(..., weights_only=True)`` reads (tensors, int, float, str, None, lists, tuples and
dicts: no NumPy arrays, no pickled objects), and turns them back into exactly that state. Reading
checks every field (type, shape, range) and raises :class:`ReproducibleBlockValueError` naming
the field, before anything is installed. The formats (version 1):

* ``"python-random"``: ``{"version": 3, "key": int64 tensor (624,), "pos": int, "gauss_next":
  float or None}``: Python's ``random.getstate()``.
* ``"numpy-random-state"``: ``{"bit_generator": "MT19937", "key": int64 tensor (624,), "pos":
  int, "has_gauss": 0 or 1, "cached_gaussian": float}``: NumPy's legacy global state.
* ``"torch-generator"``: ``{"device": str, "state": uint8 tensor}``: torch's CPU default
  generator, or a registered ``torch.Generator``.
* ``"numpy-generator"``: ``{"state": the bit generator's state dict}``, each NumPy array in it
  written as ``("ndarray", dtype name, shape, values)``: a registered ``np.random.Generator``.
* ``"cuda"``: ``{"device_count": int, "queued_seed": int}`` while CUDA is not initialised (the
  seed torch applies at its initialisation), else ``{"device_count": int, "states": [uint8
  tensor per device]}``.
* ``"accelerator"``: ``{"device_count": int, "states": [uint8 tensor per device]}``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from ._derivation import MT_WORDS
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._sources import (
    AcceleratorSource,
    CudaSource,
    GeneratorSource,
    NumpyGeneratorSource,
    NumpyGlobalSource,
    PythonRandomSource,
    TorchGeneratorSource,
)

__all__ = ["SourceCodec", "codec_for", "describe", "invalid", "read_fields", "read_int"]

_HINT = (
    "The checkpoint is corrupted or truncated, or was not written by "
    "reproducible_block.get_rng_state(); load an intact one."
)
_MAX_WORD = 2**32 - 1
_MAX_U64 = 2**64 - 1
# torch's CUDA (Philox) generator state: the seed and the offset, 8 bytes each.
CUDA_STATE_BYTES = 16
_NDARRAY = "ndarray"
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def describe(value: object) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with the keys {sorted(map(str, value))}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def invalid(where: str, value: object, expected: str) -> ReproducibleBlockValueError:
    """The error for a field that is not what get_rng_state() writes."""
    return ReproducibleBlockValueError(
        f"{where} is {describe(value)}; expected {expected}. {_HINT}"
    )


def read_fields(value: object, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a dict with exactly the keys ``names``."""
    if not isinstance(value, dict) or set(value) != set(names):
        raise invalid(where, value, f"a dict with the keys {sorted(names)}")
    return value


def read_int(value: object, where: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(where, value, f"an int from {low} to {high}")
    return value


def _read_float(value: object, where: str) -> float:
    if not isinstance(value, float):
        raise invalid(where, value, "a float")
    return value


def _read_tensor(value: object, where: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """A 1-D tensor of ``dtype`` and ``numel`` elements, copied to the CPU."""
    if (
        not isinstance(value, torch.Tensor)
        or value.dtype != dtype
        or value.dim() != 1
        or value.numel() != numel
    ):
        raise invalid(where, value, f"a 1-D {dtype} tensor of {numel} elements")
    return value.detach().to("cpu", copy=True).contiguous()


def _encode_words(words: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(words, dtype=np.int64).copy())


def _read_words(value: object, where: str) -> np.ndarray:
    """624 MT19937 key words, saved as int64 (torch has no full uint32 support)."""
    tensor = _read_tensor(value, where, torch.int64, MT_WORDS)
    if int(tensor.min()) < 0 or int(tensor.max()) > _MAX_WORD:
        raise invalid(where, value, f"{MT_WORDS} values from 0 to 2**32 - 1")
    return tensor.numpy().astype(np.uint32)


def _read_device_count(value: object, where: str, kind: str, now: int) -> int:
    saved = read_int(value, where, 0, _MAX_WORD)
    if saved != now:
        raise ReproducibleBlockValueError(
            f"{where}: the states were saved with {saved} {kind} device(s) and this process sees "
            f"{now}. Resume on as many devices per process (check CUDA_VISIBLE_DEVICES), or "
            "call set_seed() to start the streams afresh instead of loading them."
        )
    return saved


class SourceCodec(ABC):
    """Writes one kind of source's state as plain values and reads it back, checked."""

    #: The kind saved next to the state; a state is only read back into a source of its kind.
    kind: str

    @abstractmethod
    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        """``state`` (as ``source.capture()`` returns it) as plain values."""

    @abstractmethod
    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        """The state ``data`` encodes, checked field by field; no side effects."""

    def before_install(self, state: Any) -> None:  # noqa: B027 - most codecs need nothing
        """Prepare to install a decoded state (called only once every state passed)."""


class PythonRandomCodec(SourceCodec):
    kind = "python-random"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        version, internal, gauss_next = state
        return {
            "version": version,
            "key": _encode_words(np.asarray(internal[:MT_WORDS], dtype=np.int64)),
            "pos": internal[MT_WORDS],
            "gauss_next": gauss_next,
        }

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        fields = read_fields(data, where, ("version", "key", "pos", "gauss_next"))
        version = read_int(fields["version"], f"{where}['version']", 3, 3)
        key = _read_words(fields["key"], f"{where}['key']")
        pos = read_int(fields["pos"], f"{where}['pos']", 0, MT_WORDS)
        gauss_next = fields["gauss_next"]
        if gauss_next is not None:
            gauss_next = _read_float(gauss_next, f"{where}['gauss_next']")
        return (version, (*key.tolist(), pos), gauss_next)


class NumpyLegacyCodec(SourceCodec):
    kind = "numpy-random-state"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        name, key, pos, has_gauss, cached_gaussian = state
        return {
            "bit_generator": name,
            "key": _encode_words(key),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        fields = read_fields(
            data, where, ("bit_generator", "key", "pos", "has_gauss", "cached_gaussian")
        )
        if fields["bit_generator"] != "MT19937":
            raise invalid(f"{where}['bit_generator']", fields["bit_generator"], "'MT19937'")
        return (
            "MT19937",
            _read_words(fields["key"], f"{where}['key']"),
            read_int(fields["pos"], f"{where}['pos']", 0, MT_WORDS),
            read_int(fields["has_gauss"], f"{where}['has_gauss']", 0, 1),
            _read_float(fields["cached_gaussian"], f"{where}['cached_gaussian']"),
        )


class TorchGeneratorCodec(SourceCodec):
    kind = "torch-generator"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        generator: torch.Generator = source.generator  # type: ignore[attr-defined]
        return {"device": str(generator.device), "state": state.clone()}

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        generator: torch.Generator = source.generator  # type: ignore[attr-defined]
        fields = read_fields(data, where, ("device", "state"))
        if fields["device"] != str(generator.device):
            raise invalid(
                f"{where}['device']", fields["device"], f"{str(generator.device)!r}, the device "
                f"of the generator {source.name!r} in this process"
            )
        live = generator.get_state()
        state = _read_tensor(fields["state"], f"{where}['state']", torch.uint8, live.numel())
        if generator.device.type == "cpu":
            # torch checks a CPU state's Mersenne Twister position on set_state: ask a scratch one.
            try:
                torch.Generator().set_state(state)
            except RuntimeError as error:
                raise invalid(
                    f"{where}['state']", fields["state"], f"a valid torch CPU state ({error})"
                ) from None
        return state


def _to_plain(value: object, where: str) -> Any:
    """A NumPy bit generator's state as plain values (arrays become tagged tuples)."""
    if isinstance(value, dict):
        return {str(key): _to_plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.name in _INTEGER_DTYPES:
        return (_NDARRAY, value.dtype.name, list(value.shape), value.ravel().tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    raise ReproducibleBlockTypeError(  # pragma: no cover - no NumPy bit generator holds one
        f"get_rng_state() cannot save {where}: {describe(value)} is not an int, float, str, "
        "dict or integer array. Please report the bit generator you registered."
    )


def _from_plain(value: object, where: str) -> Any:
    """The inverse of :func:`_to_plain`, checking every value."""
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


def _same(first: Any, second: Any) -> bool:
    """Whether two bit generator states are equal, arrays compared by dtype and values."""
    if isinstance(first, dict):
        return (
            isinstance(second, dict)
            and set(first) == set(second)
            and all(_same(first[key], second[key]) for key in first)
        )
    if isinstance(first, np.ndarray):
        return (
            isinstance(second, np.ndarray)
            and first.dtype == second.dtype
            and np.array_equal(first, second)
        )
    return type(first) is type(second) and bool(first == second)


class NumpyGeneratorCodec(SourceCodec):
    kind = "numpy-generator"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        return {"state": _to_plain(state, f"the state of {source.name!r}")}

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        fields = read_fields(data, where, ("state",))
        state = _from_plain(fields["state"], f"{where}['state']")
        if not isinstance(state, dict):
            raise invalid(f"{where}['state']", fields["state"], "a dict")
        # Fields most NumPy bit generators have, which NumPy keeps without a range check.
        for name, high in (("has_uint32", 1), ("uinteger", _MAX_WORD)):
            if name in state:
                read_int(state[name], f"{where}['state'][{name!r}]", 0, high)
        # NumPy checks the bit generator's name and fields when a state is set: on a scratch one.
        scratch = type(source.generator.bit_generator)()  # type: ignore[attr-defined]
        try:
            scratch.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as error:
            raise invalid(
                f"{where}['state']", fields["state"],
                f"a state of {type(scratch).__name__}, the bit generator of {source.name!r} "
                f"({type(error).__name__}: {error})",
            ) from None
        if not _same(scratch.state, state):
            raise invalid(
                f"{where}['state']", fields["state"],
                f"a state that {type(scratch).__name__} keeps as it is (values out of range?)",
            )
        return state


def _read_device_states(
    value: object, where: str, count: int, sizes: list[int]
) -> tuple[torch.Tensor, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise invalid(where, value, f"a list of {count} uint8 tensors, one per device")
    return tuple(
        _read_tensor(item, f"{where}[{index}]", torch.uint8, size)
        for index, (item, size) in enumerate(zip(value, sizes, strict=True))
    )


class CudaCodec(SourceCodec):
    kind = "cuda"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        count = torch.cuda.device_count()
        if isinstance(state, int):
            return {"device_count": count, "queued_seed": state}
        return {"device_count": count, "states": [device.clone() for device in state]}

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        now = torch.cuda.device_count()
        if isinstance(data, dict) and "queued_seed" in data:
            fields = read_fields(data, where, ("device_count", "queued_seed"))
            _read_device_count(fields["device_count"], f"{where}['device_count']", "CUDA", now)
            return read_int(fields["queued_seed"], f"{where}['queued_seed']", 0, _MAX_U64)
        fields = read_fields(data, where, ("device_count", "states"))
        count = _read_device_count(fields["device_count"], f"{where}['device_count']", "CUDA", now)
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            sizes = [state.numel() for state in torch.cuda.get_rng_state_all()]
        else:
            sizes = [CUDA_STATE_BYTES] * count
        return _read_device_states(fields["states"], f"{where}['states']", count, sizes)

    def before_install(self, state: Any) -> None:
        # Per-device states need CUDA initialised (torch would queue them, and capture() would
        # report the stale queued seed). CUDA is available: the device counts matched.
        if not isinstance(state, int) and not torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            torch.cuda.init()  # type: ignore[no-untyped-call]  # pragma: no cover - needs a GPU


class AcceleratorCodec(SourceCodec):  # pragma: no cover - no such device here
    kind = "accelerator"

    def encode(self, source: GeneratorSource[Any], state: Any) -> Any:
        return {"device_count": len(state), "states": [device.clone() for device in state]}

    def decode(self, source: GeneratorSource[Any], data: object, where: str) -> Any:
        live = source.capture()
        fields = read_fields(data, where, ("device_count", "states"))
        count = _read_device_count(
            fields["device_count"], f"{where}['device_count']", source.name, len(live)
        )
        sizes = [state.numel() for state in live]
        return list(_read_device_states(fields["states"], f"{where}['states']", count, sizes))


_CODECS: tuple[tuple[type[GeneratorSource[Any]], SourceCodec], ...] = (
    (PythonRandomSource, PythonRandomCodec()),
    (NumpyGlobalSource, NumpyLegacyCodec()),
    (TorchGeneratorSource, TorchGeneratorCodec()),
    (NumpyGeneratorSource, NumpyGeneratorCodec()),
    (CudaSource, CudaCodec()),
    (AcceleratorSource, AcceleratorCodec()),
)


def codec_for(source: GeneratorSource[Any]) -> SourceCodec:
    """The codec of ``source``'s kind."""
    for source_type, codec in _CODECS:
        if isinstance(source, source_type):
            return codec
    raise ReproducibleBlockTypeError(  # pragma: no cover - every built-in source has a codec
        f"get_rng_state() has no checkpoint format for the source {source!r} "
        f"({type(source).__name__}); add a codec for it in reproducible_block/_state_codec.py."
    )
