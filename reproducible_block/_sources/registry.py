"""The sources a process manages: the built-in ones, then the generators users registered.

Built-in sources, in order: ``"random"`` (Python), ``"numpy"`` (NumPy's legacy global
``RandomState``), ``"torch"`` (torch's CPU default generator) and, where present, the accelerator:
``"cuda"`` (every CUDA device) or the type ``torch.accelerator`` reports (``"xpu"``, ``"mps"``...).
They are created at first use, never initialising CUDA.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.devices import AcceleratorSource, CudaSource
from reproducible_block._sources.numpy_random import (
    NumpyGeneratorSource,
    NumpyGlobalSource,
    managed_global,
)
from reproducible_block._sources.python_random import PythonRandomSource
from reproducible_block._sources.torch_random import TorchDefaultSource, TorchGeneratorSource
from reproducible_block._support.checks import describe
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "MERSENNE_TWISTER_SLOTS",
    "Selection",
    "SourceRegistry",
    "check_name",
    "check_sources",
    "is_device_type",
    "make_source",
    "registry",
]

MAX_NAME_LENGTH = 256
#: The built-in slots (and names) whose source declares ``mersenne_twister``: what the ledger
#: replays. ``{"random", "numpy", "torch"}``.
MERSENNE_TWISTER_SLOTS = frozenset(
    kind.slot
    for kind in (PythonRandomSource, NumpyGlobalSource, TorchDefaultSource, CudaSource)
    if kind.mersenne_twister and kind.slot is not None
)


def _accelerator_source() -> GeneratorSource[Any] | None:
    """The source for the accelerator torch can use, if any; never initialises CUDA."""
    if torch.cuda.is_available():
        return CudaSource()  # pragma: no cover - needs a GPU
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        return None
    device = accelerator.current_accelerator()
    if device is None:  # is_available() said there is one
        return None
    return AcceleratorSource(device.type)  # pragma: no cover - no such device here


def is_device_type(name: str) -> bool:
    """Whether torch knows ``name`` as a device type other than the CPU (``"cuda"``, ``"xpu"``).

    >>> is_device_type("cuda"), is_device_type("cdua"), is_device_type("torch")
    (True, False, False)
    """
    if name == "cpu":
        return False
    try:
        return torch.device(name).type == name
    except (RuntimeError, ValueError):
        return False


class Selection:
    """The sources a block manages, with their names: the same object while nothing changes.

    ``derivation`` lists each source's (built-in slot or None, name): what derivation reads.
    """

    __slots__ = ("derivation", "from_bits", "names", "sources")

    def __init__(self, sources: tuple[GeneratorSource[Any], ...]) -> None:
        self.sources = sources
        self.names = tuple(source.name for source in sources)
        self.derivation = tuple((source.slot, source.name) for source in sources)
        self.from_bits = tuple(source.from_bits for source in sources)


class SourceRegistry:
    """The built-in sources plus the generators users registered, by name."""

    def __init__(self) -> None:
        self._builtin: tuple[GeneratorSource[Any], ...] | None = None
        self._registered: dict[str, GeneratorSource[Any]] = {}
        self._lock = threading.Lock()
        #: The selections made since the managed sources last changed, by ``sources=`` names
        #: (a new dict on every change): blocks read it directly on their hot path.
        self.selections: dict[tuple[str, ...] | None, Selection] = {}

    def builtin(self) -> tuple[GeneratorSource[Any], ...]:
        """The built-in sources, found once (the devices a process has do not change)."""
        if self._builtin is None:
            with self._lock:
                if self._builtin is None:
                    sources: list[GeneratorSource[Any]] = [
                        PythonRandomSource(),
                        NumpyGlobalSource(),
                        TorchDefaultSource(),
                    ]
                    accelerator = _accelerator_source()
                    if accelerator is not None:  # pragma: no cover - needs a device
                        sources.append(accelerator)
                    self._builtin = tuple(sources)
        return self._builtin

    def active(self) -> tuple[GeneratorSource[Any], ...]:
        """Every managed source: built-in first, then registered in registration order."""
        return self.builtin() + tuple(self._registered.values())

    def names(self) -> tuple[str, ...]:
        return tuple(source.name for source in self.active())

    def select(self, names: tuple[str, ...] | None) -> Selection:
        """The sources a block manages: all of them, or those named (in registry order).

        A name that torch knows as a device type but this machine lacks (``"cuda"`` on a CPU
        machine) selects nothing, so code written on a GPU machine runs in CPU CI; any other
        unknown name is an error.
        """
        # Threads: the dict is read before the sources, so a selection made while the managed
        # sources change goes into the dict the change discards, never into the new one; and
        # two threads selecting the same names at once get the same object.
        selections = self.selections
        found = selections.get(names)
        if found is None:
            made = Selection(self._select(names))
            if len(selections) > 64:
                with self._lock:
                    if self.selections is selections:  # not changed meanwhile
                        self.selections = {}
                return made
            found = selections.setdefault(names, made)
        return found

    def _select(self, names: tuple[str, ...] | None) -> tuple[GeneratorSource[Any], ...]:
        active = self.active()
        if names is None:
            return active
        known = {source.name for source in active}
        unknown = [name for name in names if name not in known and not is_device_type(name)]
        if unknown:
            raise ReproducibleBlockValueError(
                f"sources={names!r} names {unknown!r}, which reproducible_block does not manage "
                f"here; allowed: {sorted(known)!r}, or an accelerator type torch knows (such as "
                "'cuda', a no-op on a machine without one). Register your own generators with "
                "register_generator(generator, name=...)."
            )
        return tuple(source for source in active if source.name in names)

    def _changed(self) -> None:
        self.selections = {}

    def add(self, source: GeneratorSource[Any], name: str) -> None:
        """Manage ``source`` under ``name`` (checked first: a refusal changes nothing)."""
        for managed in self.active():
            if managed.name == name:
                raise ReproducibleBlockValueError(
                    f"a generator source named {name!r} is already managed; names in use: "
                    f"{list(self.names())!r}. Choose another name, or unregister_generator() "
                    "first."
                )
            if _same_generator(managed, source):
                raise ReproducibleBlockValueError(
                    f"this generator is already managed as {managed.name!r}; a generator is "
                    "managed once (twice, a block would save and restore it twice)."
                )
        source.name = name
        self._registered[name] = source
        self._changed()

    def remove(self, name: str) -> GeneratorSource[Any]:
        if name not in self._registered:
            raise ReproducibleBlockValueError(
                f"no registered generator is named {name!r}; registered: "
                f"{list(self._registered)!r} (built-in sources cannot be unregistered)."
            )
        source = self._registered.pop(name)
        self._changed()
        return source

    def registered(self) -> dict[str, GeneratorSource[Any]]:
        return dict(self._registered)

    def restore_registered(self, registered: dict[str, GeneratorSource[Any]]) -> None:
        """Put back a mapping from :meth:`registered` (used by ``testing``)."""
        self._registered = dict(registered)
        self._changed()


def _generator_of(source: GeneratorSource[Any]) -> object:
    if isinstance(source, NumpyGeneratorSource):
        return source.generator.bit_generator
    if isinstance(source, NumpyGlobalSource):
        return getattr(managed_global(), "_bit_generator", None)
    return getattr(source, "generator", source)


def _same_generator(first: GeneratorSource[Any], second: GeneratorSource[Any]) -> bool:
    return first is second or _generator_of(first) is _generator_of(second)


registry = SourceRegistry()


def _after_fork_in_child() -> None:
    """Give a forked child a fresh lock: another thread may have held this one at the fork,
    finding the built-in sources, and it would never be released in the child."""
    registry._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_name(name: object) -> str:
    """A registered generator's name: a non-empty str of at most 256 characters."""
    if not isinstance(name, str):
        raise ReproducibleBlockTypeError(
            f"name must be a str such as 'augment'; got {describe(name)}."
        )
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ReproducibleBlockValueError(
            f"name={name[:40]!r}{'...' if len(name) > 40 else ''} ({len(name)} characters) is "
            f"not allowed; a generator's name is a non-empty str of at most {MAX_NAME_LENGTH} "
            "characters, unique among managed sources (e.g. name='augment')."
        )
    return name


def make_source(generator: object, name: str) -> GeneratorSource[Any]:
    """The source that manages ``generator`` under ``name`` (checked, not yet registered)."""
    if isinstance(generator, GeneratorSource):
        if generator.slot is not None:
            raise ReproducibleBlockValueError(
                f"{generator!r} is a built-in source ({type(generator).__name__}); it is managed "
                "already. Register your own GeneratorSource subclasses, torch.Generator or "
                "np.random.Generator objects."
            )
        return generator
    if isinstance(generator, torch.Generator):
        if generator is torch.default_generator or _is_cuda_default(generator):
            raise ReproducibleBlockValueError(
                f"register_generator() got torch's default generator for {generator.device}, "
                "which set_seed and blocks manage already (as 'torch' or 'cuda'); registering it "
                "again would make set_seed(s) differ from torch.manual_seed(s). Register "
                "generators you create, such as torch.Generator()."
            )
        return TorchGeneratorSource(generator, name)
    if isinstance(generator, np.random.Generator):
        if generator.bit_generator is getattr(managed_global(), "_bit_generator", None):
            raise ReproducibleBlockValueError(
                "register_generator() got a Generator over np.random's global bit generator, "
                "which set_seed and blocks manage already (as 'numpy'). Register generators you "
                "create, such as np.random.default_rng()."
            )
        return NumpyGeneratorSource(generator, name)
    raise ReproducibleBlockTypeError(
        f"register_generator() got {describe(generator)}; allowed: a torch.Generator, an "
        "np.random.Generator, or an instance of a GeneratorSource subclass. np.random's global "
        "functions are managed already."
    )


def _is_cuda_default(generator: torch.Generator) -> bool:
    if generator.device.type != "cuda":
        return False
    generators = getattr(torch.cuda, "default_generators", ())  # pragma: no cover - needs a GPU
    return any(generator is default for default in generators)  # pragma: no cover - a GPU


def check_sources(names: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validate a ``sources=`` argument's shape (the names are checked at a block's entry)."""
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
