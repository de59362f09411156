"""The registry of generator sources: one small class per random number generator.

Each source knows how to ``capture`` its generator's state, ``install`` a state, ``seed`` it the
way the usual recipe does (for :func:`set_seed`) and ``derive`` a fresh block state from a
:class:`~numpy.random.SeedSequence`. Adding a kind of generator is adding one class here.
``capture`` returns a public, portable format (what checkpoints store); blocks save and restore
their caller's state through ``save``/``restore``, which a source may override with a faster,
private format (NumPy's global does: see :class:`NumpyGlobalSource`).

Built-in sources, in order: ``"random"`` (Python), ``"numpy"`` (NumPy's legacy global
``RandomState``), ``"torch"`` (torch's CPU default generator) and, where present, the accelerator:
``"cuda"`` (every CUDA device) or the type ``torch.accelerator`` reports (``"xpu"``, ``"mps"``...).
CUDA is never initialised by the library: until something else initialises it, its state is the
seed queued for it (torch applies queued seeds lazily).
"""

from __future__ import annotations

import ctypes
import random
import struct
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from ._derivation import MT_WORDS, mt_words, philox_seed, registered_root_bits, seed_sequence
from ._errors import BlockUsageError, ReproducibleBlockTypeError, ReproducibleBlockValueError

__all__ = [
    "GeneratorSource",
    "register_generator",
    "registered_generators",
    "registry",
    "unregister_generator",
]

StateT = TypeVar("StateT")


# NumPy's MT19937 keeps its C state as 624 uint32 key words then an int position; the bit
# generator's documented ``ctypes.state_address`` points at it. The layout is checked against the
# public state before any use.
MT_IMAGE_BYTES = MT_WORDS * 4 + 4


def checked_mt_address(bit_generator: object) -> int | None:
    """The address of an MT19937's C state if its bytes match its public state, else None."""
    if not isinstance(bit_generator, np.random.MT19937):
        return None
    address = int(bit_generator.ctypes.state_address)
    public = bit_generator.state["state"]
    image = ctypes.string_at(address, MT_IMAGE_BYTES)
    expected = np.asarray(public["key"], dtype=np.uint32).tobytes()
    expected += int(public["pos"]).to_bytes(4, "little", signed=True)
    return address if image == expected else None


# torch's CPU generator state is a 5056-byte tensor: the initial seed (u64), ``left`` (i32),
# ``seeded`` (i32), ``next`` (u64), then the 624 words each stored as u64, then the cached
# normals. torch does not document the layout, so it is checked once against a generator seeded
# the public way; if a future torch changes it, blocks fall back to ``manual_seed`` (32 bits).
_TORCH_STATE_BYTES = 5056
_TORCH_WORDS_OFFSET = 24
_layout_checked: bool | None = None
_template: np.ndarray | None = None


def _torch_layout_ok() -> bool:
    global _layout_checked, _template
    if _layout_checked is None:
        probe_seed = 0x1234_5678_9ABC
        generator = torch.Generator()
        generator.manual_seed(probe_seed)
        state = generator.get_state()
        raw = state.numpy().tobytes()
        ok = (
            state.numel() == _TORCH_STATE_BYTES
            and struct.unpack_from("<QiiQ", raw, 0) == (probe_seed, 1, 1, 0)
            and struct.unpack_from("<Q", raw, _TORCH_WORDS_OFFSET)[0] == probe_seed & 0xFFFFFFFF
        )
        _layout_checked = ok
        _template = state.numpy().copy()
        if not ok:  # pragma: no cover - only with a torch whose layout differs
            warnings.warn(
                "reproducible_block does not recognise this torch version's CPU generator state; "
                "blocks seed torch's CPU generator with manual_seed, which keeps only 32 bits, so "
                "rare keys may share a torch stream. Please report your torch version.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _layout_checked


def torch_cpu_state(bits: bytes) -> torch.Tensor:
    """A torch CPU generator state holding the Mersenne Twister key that ``bits`` derive.

    >>> state = torch_cpu_state(bytes(16))
    >>> generator = torch.Generator().set_state(state)  # torch accepts it as valid
    >>> other = torch_cpu_state(bytes(15) + b"1")
    >>> torch.equal(generator.get_state(), state), torch.equal(other, state)
    (True, False)
    """
    initial_seed = philox_seed(bits)  # what torch.initial_seed() reports in the block
    if not _torch_layout_ok() or _template is None:  # pragma: no cover - unknown layout
        fallback = torch.Generator()
        fallback.manual_seed(initial_seed)
        return fallback.get_state()
    raw = _template.copy()
    raw[0:8].view(np.uint64)[0] = initial_seed
    words = raw[_TORCH_WORDS_OFFSET : _TORCH_WORDS_OFFSET + 8 * MT_WORDS].view(np.uint64)
    words[:] = mt_words(bits)
    return torch.from_numpy(raw)


class GeneratorSource(ABC, Generic[StateT]):
    """One random number generator that :func:`set_seed` and blocks manage."""

    #: The stable name used in ``sources=``, in derivation and in saved states.
    name: str
    #: The built-in slot of derivation (``"random"``, ``"numpy"``, ``"torch"``,
    #: ``"accelerator"``); None for registered generators, which derive from their name.
    slot: str | None = None

    @abstractmethod
    def capture(self) -> StateT:
        """Return a copy of the generator's current state."""

    @abstractmethod
    def install(self, state: StateT) -> None:
        """Put the generator in ``state`` (one returned by ``capture`` or ``derive``)."""

    @abstractmethod
    def seed(self, seed: int) -> None:
        """Seed the generator for :func:`set_seed`, as the usual recipe would."""

    @abstractmethod
    def derive(self, bits: bytes) -> Any:
        """Return the fresh state a block installs, a pure function of 128 seed bits.

        ``bits`` holds the 16 bytes derived for this source (see ``_derivation``). The result
        may be a compact form that only ``install`` understands; it is never mutated.
        """

    def save(self) -> Any:
        """Save the current state for ``restore`` (the hot path of every block entry)."""
        return self.capture()

    def restore(self, saved: Any) -> None:
        """Put back a state returned by ``save``."""
        self.install(saved)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


PythonState = tuple[Any, ...]


class PythonRandomSource(GeneratorSource[PythonState]):
    """Python's global ``random`` module. A block's state is a full derived 624-word key."""

    name = "random"
    slot = "random"

    def capture(self) -> PythonState:
        return random.getstate()

    def install(self, state: PythonState) -> None:
        random.setstate(state)

    def seed(self, seed: int) -> None:
        random.seed(seed)

    def derive(self, bits: bytes) -> PythonState:
        return (3, (*mt_words(bits).tolist(), 624), None)


NumpyLegacyState = tuple[Any, ...]


MT_WORDS_POSITION = (624).to_bytes(4, "little", signed=True)  # a fresh key: twist first


@dataclass(frozen=True)
class _NumpySaved:
    """A caller's legacy NumPy state, saved the fast way: the MT19937 image and its Gaussian."""

    image: bytes
    gauss: float | None  # the cached Gaussian the caller had, if any

    def public(self) -> NumpyLegacyState:
        key = np.frombuffer(self.image[:-4], dtype=np.uint32).copy()
        position = int.from_bytes(self.image[-4:], "little", signed=True)
        has_gauss = self.gauss is not None
        return ("MT19937", key, position, int(has_gauss), self.gauss if has_gauss else 0.0)


class NumpyGlobalSource(GeneratorSource[NumpyLegacyState]):
    """NumPy's legacy global ``RandomState`` behind ``np.random.*``, cached Gaussian included.

    The public way to save and restore it (``np.random.get_state``/``set_state``) costs about
    50 µs each, most of a block's price. The fast path copies the MT19937 C state through the
    bit generator's documented ``ctypes.state_address`` (about 1 µs) and handles the Gaussian
    that the legacy ``RandomState`` caches outside that state exactly: ``save`` draws one
    ``standard_normal()``; if the MT19937 state did not move, that was the cached Gaussian (kept
    in the saved state), else a second call consumes the one the probe cached and the image is
    copied back. Either way the generator is left without a cached Gaussian, and ``restore`` puts
    one back through the public ``set_state`` only when the caller had one. The layout is checked
    against the public state before first use; set ``NumpyGlobalSource.fast_path = False`` to use
    only the public calls.
    """

    name = "numpy"
    slot = "numpy"
    #: Whether blocks may save and restore through ``ctypes`` (see the class doc).
    fast_path = True

    def __init__(self) -> None:
        self._checked: object = None
        self._address: int | None = None

    def capture(self) -> NumpyLegacyState:
        state = np.random.get_state(legacy=True)
        if not isinstance(state, tuple):  # pragma: no cover - only if the global was replaced
            raise BlockUsageError(
                "np.random's global generator is not an MT19937 RandomState; "
                "reproducible_block cannot manage it. Use np.random.seed(...) to reset it."
            )
        return state

    def install(self, state: NumpyLegacyState | bytes) -> None:
        if not isinstance(state, bytes):
            np.random.set_state(state)
            return
        # A derived MT19937 image (key, position 624): no Gaussian may stay cached.
        address = self._fast_address()
        if address is None:
            np.random.set_state(_NumpySaved(state, None).public())
        else:
            self._drop_cached_gaussian(address)
            ctypes.memmove(address, state, MT_IMAGE_BYTES)

    def seed(self, seed: int) -> None:
        np.random.seed(seed)

    def derive(self, bits: bytes) -> bytes:
        return mt_words(bits).tobytes() + MT_WORDS_POSITION

    def _fast_address(self) -> int | None:
        if not self.fast_path:
            return None
        get_bit_generator = getattr(np.random, "get_bit_generator", None)
        if get_bit_generator is None:  # pragma: no cover - NumPy < 1.25
            return None
        bit_generator = get_bit_generator()
        if bit_generator is not self._checked:
            self._address = checked_mt_address(bit_generator)
            self._checked = bit_generator
        return self._address

    @staticmethod
    def _drop_cached_gaussian(address: int) -> None:
        before = ctypes.string_at(address, MT_IMAGE_BYTES)
        np.random.standard_normal()
        if ctypes.string_at(address, MT_IMAGE_BYTES) != before:
            np.random.standard_normal()  # the probe generated a pair: consume the cached half

    def save(self) -> NumpyLegacyState | _NumpySaved:
        address = self._fast_address()
        if address is None:
            return self.capture()
        image = ctypes.string_at(address, MT_IMAGE_BYTES)
        probe = float(np.random.standard_normal())
        if ctypes.string_at(address, MT_IMAGE_BYTES) == image:
            return _NumpySaved(image, probe)  # the state did not move: that was the cached one
        np.random.standard_normal()  # consume the Gaussian the probe cached
        ctypes.memmove(address, image, MT_IMAGE_BYTES)
        return _NumpySaved(image, None)

    def restore(self, saved: NumpyLegacyState | _NumpySaved) -> None:
        if not isinstance(saved, _NumpySaved):
            self.install(saved)
            return
        address = self._fast_address()
        if address is None or saved.gauss is not None:
            np.random.set_state(saved.public())
            return
        self._drop_cached_gaussian(address)
        ctypes.memmove(address, saved.image, MT_IMAGE_BYTES)


class TorchGeneratorSource(GeneratorSource[torch.Tensor]):
    """A ``torch.Generator``: torch's CPU default generator, or one a user registered."""

    def __init__(self, generator: torch.Generator, name: str, *, registered: bool) -> None:
        self.generator = generator
        self.name = name
        self._registered = registered

    def capture(self) -> torch.Tensor:
        return self.generator.get_state()

    def install(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def seed(self, seed: int) -> None:
        if self._registered:
            self.install(self.derive(registered_root_bits(seed, self.name)))
        else:
            self.generator.manual_seed(seed)

    def derive(self, bits: bytes) -> torch.Tensor:
        if self.generator.device.type == "cpu":
            return torch_cpu_state(bits)
        # A registered device generator (Philox): a 64-bit seed is its whole key.
        scratch = torch.Generator(device=self.generator.device)  # pragma: no cover - needs a GPU
        scratch.manual_seed(philox_seed(bits))  # pragma: no cover - needs a GPU
        return scratch.get_state()  # pragma: no cover - needs a GPU


class NumpyGeneratorSource(GeneratorSource[Mapping[str, Any]]):
    """A user's ``np.random.Generator`` (any bit generator that takes a SeedSequence)."""

    def __init__(self, generator: np.random.Generator, name: str) -> None:
        self.generator = generator
        self.name = name

    def capture(self) -> Mapping[str, Any]:
        return self.generator.bit_generator.state

    def install(self, state: Mapping[str, Any]) -> None:
        self.generator.bit_generator.state = state

    def seed(self, seed: int) -> None:
        self.install(self.derive(registered_root_bits(seed, self.name)))

    def derive(self, bits: bytes) -> Mapping[str, Any]:
        return type(self.generator.bit_generator)(seed_sequence(bits)).state


# A CUDA state is either the per-device state tensors (CUDA initialised) or the seed that is
# queued for every device (CUDA not initialised yet: reading the state would initialise it).
CudaState = tuple[torch.Tensor, ...] | int


class CudaSource(GeneratorSource[CudaState]):  # pragma: no cover - needs a GPU (test_cuda.py)
    """Every CUDA device's default generator, without ever initialising CUDA itself."""

    name = "cuda"
    slot = "accelerator"

    def __init__(self) -> None:
        self._queued_seed = 0

    def capture(self) -> CudaState:
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            return tuple(torch.cuda.get_rng_state_all())
        return self._queued_seed

    def install(self, state: CudaState) -> None:
        if isinstance(state, int):
            # Applied now if CUDA is initialised, else queued by torch and applied at its init.
            torch.cuda.manual_seed_all(state)
            self._queued_seed = state
        else:
            torch.cuda.set_rng_state_all(state)

    def seed(self, seed: int) -> None:
        self.install(seed)

    def derive(self, bits: bytes) -> CudaState:
        # One Philox seed for all devices, as torch.manual_seed does: model init on cuda:0 of
        # one rank equals model init on cuda:1 of another.
        return philox_seed(bits)


class AcceleratorSource(GeneratorSource[list[torch.Tensor]]):  # pragma: no cover - no such device
    """The default generators of a non-CUDA accelerator that ``torch.accelerator`` reports."""

    slot = "accelerator"

    def __init__(self, device_type: str) -> None:
        self.name = device_type
        self._module: Any = torch.get_device_module(device_type)

    def _count(self) -> int:
        return int(torch.accelerator.device_count())

    def capture(self) -> list[torch.Tensor]:
        return [self._module.get_rng_state(i) for i in range(self._count())]

    def install(self, state: list[torch.Tensor]) -> None:
        for index, device_state in enumerate(state):
            self._module.set_rng_state(device_state, index)

    def seed(self, seed: int) -> None:
        seed_all = getattr(self._module, "manual_seed_all", None) or self._module.manual_seed
        seed_all(seed)

    def derive(self, bits: bytes) -> list[torch.Tensor]:
        seed = philox_seed(bits)
        saved = self.capture()
        try:
            self.seed(seed)
            return self.capture()
        finally:
            self.install(saved)


def _builtin_torch_source() -> GeneratorSource[Any]:
    source = TorchGeneratorSource(torch.default_generator, "torch", registered=False)
    source.slot = "torch"
    return source


def _accelerator_source() -> GeneratorSource[Any] | None:
    """The source for the accelerator torch can use, if any; never initialises CUDA."""
    if torch.cuda.is_available():
        return CudaSource()  # pragma: no cover - needs a GPU
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        return None
    device = accelerator.current_accelerator()
    if device is None:  # pragma: no cover - is_available() said there is one
        return None
    return AcceleratorSource(device.type)  # pragma: no cover - no such device here


class SourceRegistry:
    """The built-in sources plus the generators users registered, by name."""

    def __init__(self) -> None:
        self._builtin: tuple[GeneratorSource[Any], ...] | None = None
        self._registered: dict[str, GeneratorSource[Any]] = {}
        self._lock = threading.Lock()
        #: Bumped on every change of the managed sources (blocks cache what they resolved).
        self.version = 0
        self._names_of: dict[tuple[GeneratorSource[Any], ...], tuple[str, ...]] = {}
        self._selections: dict[
            tuple[str, ...] | None, tuple[int, tuple[GeneratorSource[Any], ...]]
        ] = {}

    def builtin(self) -> tuple[GeneratorSource[Any], ...]:
        """The built-in sources, found once (availability of devices does not change)."""
        if self._builtin is None:
            with self._lock:
                if self._builtin is None:
                    sources: list[GeneratorSource[Any]] = [
                        PythonRandomSource(),
                        NumpyGlobalSource(),
                        _builtin_torch_source(),
                    ]
                    accelerator = _accelerator_source()
                    if accelerator is not None:  # pragma: no cover - needs a device
                        sources.append(accelerator)
                    self._builtin = tuple(sources)
        return self._builtin

    def active(self) -> tuple[GeneratorSource[Any], ...]:
        """Every managed source: built-in first, then registered in registration order."""
        return self.builtin() + tuple(self._registered.values())

    def names_of(self, sources: tuple[GeneratorSource[Any], ...]) -> tuple[str, ...]:
        """The names of ``sources``, remembered (the same tuple object for the same selection)."""
        names = self._names_of.get(sources)
        if names is None:
            if len(self._names_of) > 64:
                self._names_of.clear()
            names = self._names_of[sources] = tuple(source.name for source in sources)
        return names

    def names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.active())

    def select(self, names: tuple[str, ...] | None) -> tuple[GeneratorSource[Any], ...]:
        """The sources a block manages: all of them, or those named (in registry order)."""
        found = self._selections.get(names)
        if found is not None and found[0] == self.version:
            return found[1]
        selected = self._select(names)
        if len(self._selections) > 64:
            self._selections.clear()
        self._selections[names] = (self.version, selected)
        return selected

    def _select(self, names: tuple[str, ...] | None) -> tuple[GeneratorSource[Any], ...]:
        active = self.active()
        if names is None:
            return active
        known = {source.name for source in active}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ReproducibleBlockValueError(
                f"sources={names!r} names {unknown!r}, which reproducible_block does not manage "
                f"here; allowed: {sorted(known)!r}. Register your own generators with "
                "register_generator(generator, name=...)."
            )
        return tuple(source for source in active if source.name in names)

    def add(self, source: GeneratorSource[Any]) -> None:
        if source.name in self.names():
            raise ReproducibleBlockValueError(
                f"a generator source named {source.name!r} is already managed; names in use: "
                f"{list(self.names())!r}. Choose another name, or unregister_generator() first."
            )
        self._registered[source.name] = source
        self.version += 1

    def remove(self, name: str) -> GeneratorSource[Any]:
        if name not in self._registered:
            raise ReproducibleBlockValueError(
                f"no registered generator is named {name!r}; registered: "
                f"{list(self._registered)!r} (built-in sources cannot be unregistered)."
            )
        self.version += 1
        return self._registered.pop(name)

    def registered(self) -> dict[str, GeneratorSource[Any]]:
        return dict(self._registered)

    def restore_registered(self, registered: dict[str, GeneratorSource[Any]]) -> None:
        """Put back a mapping from :meth:`registered` (used by test fixtures)."""
        self._registered = dict(registered)
        self.version += 1


registry = SourceRegistry()


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ReproducibleBlockValueError(
            f"name={name!r} is not allowed; a generator's name must be a non-empty str of at "
            "most 256 characters, unique among managed sources (e.g. name='augment')."
        )
    return name


def _make_source(generator: object, name: str) -> GeneratorSource[Any]:
    if isinstance(generator, torch.Generator):
        return TorchGeneratorSource(generator, name, registered=True)
    if isinstance(generator, np.random.Generator):
        return NumpyGeneratorSource(generator, name)
    raise ReproducibleBlockTypeError(
        f"register_generator() got {type(generator).__name__}; allowed: a torch.Generator or an "
        "np.random.Generator. np.random's global functions are managed already."
    )


def register_generator(generator: torch.Generator | np.random.Generator, *, name: str) -> None:
    """Manage a generator you own: :func:`set_seed` seeds it and blocks isolate it.

    ``set_seed(s)`` seeds it from (``s``, ``name``), so two registered generators get different
    streams and the order of registration does not matter. Inside a block it is in a state
    derived from (root, key, ``name``) and gets its caller's state back on exit. A generator
    registered after ``set_seed`` keeps its state until the next ``set_seed``.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, register_generator, set_seed
    >>> from reproducible_block import unregister_generator
    >>> g = torch.Generator()
    >>> register_generator(g, name="doc-augment")
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("aug"):
    ...     first = torch.rand(2, generator=g)
    >>> with ReproducibleBlock("aug"):
    ...     again = torch.rand(2, generator=g)
    >>> torch.equal(first, again)
    True
    >>> unregister_generator("doc-augment")
    """
    from ._activation import refuse_inside_block

    checked = _check_name(name)
    source = _make_source(generator, checked)
    with refuse_inside_block("register_generator()"):
        registry.add(source)


def unregister_generator(name: str) -> None:
    """Stop managing the generator registered under ``name``; its state is left as it is."""
    from ._activation import refuse_inside_block

    with refuse_inside_block("unregister_generator()"):
        registry.remove(name)


def registered_generators() -> tuple[str, ...]:
    """The names of the generators registered with :func:`register_generator`."""
    return tuple(registry.registered())


def select_sources(names: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validate a ``sources=`` argument's shape (names are checked on entry)."""
    if names is None:
        return None
    if type(names) is tuple and names and all(type(name) is str for name in names):
        return names
    if isinstance(names, str):
        names = (names,)
    try:
        checked = tuple(names)
    except TypeError:
        raise ReproducibleBlockTypeError(
            f"sources={names!r} is not allowed; pass None (every managed source) or an iterable "
            "of source names such as ('torch',) or ('random', 'numpy')."
        ) from None
    for name in checked:
        if not isinstance(name, str):
            raise ReproducibleBlockTypeError(
                f"sources={checked!r} holds {name!r}; source names are str such as 'torch'."
            )
    if not checked:
        raise ReproducibleBlockValueError(
            "sources=() manages nothing; pass None for every source, or name at least one, "
            "or use enabled=False to turn the block off."
        )
    return checked
