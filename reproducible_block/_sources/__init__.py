"""Generator sources: one class per kind of random number generator, owning all about its kind.

A source knows how to read and write its generator's state in a portable form
(``get_state``/``set_state``), how to save and restore it on a block's hot path
(``save``/``restore``), what ``set_seed`` does to it (``seed``), which state a block installs for
16 derived bytes (``from_bits``), and how its state is written into a checkpoint and read back
with checks (``to_checkpoint``/``from_checkpoint``). Blocks, ``set_seed``, checkpoints, reports
and diagnostics only ever talk to sources through these verbs.

The built-in kinds live in ``python_random.py``, ``numpy_random.py``, ``torch_random.py`` (CPU)
and ``devices.py`` (CUDA, other accelerators); their raw-memory fast paths live in ``_fast``.
``registry.py`` holds the sources a process manages. Users add a kind by subclassing
:class:`GeneratorSource` and registering an instance with
:func:`~reproducible_block.register_generator`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import torch

from reproducible_block._streams.derivation import registered_root_bits
from reproducible_block._support.checks import describe, invalid
from reproducible_block._support.errors import ReproducibleBlockTypeError

__all__ = ["GeneratorSource"]

StateT = TypeVar("StateT")

_PLAIN_SCALARS = (int, float, str, bool, type(None))


def _is_plain(value: object) -> bool:
    """Whether ``value`` is made of what ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, _PLAIN_SCALARS):
        return True
    if isinstance(value, torch.Tensor):
        return type(value) is torch.Tensor and value.layout == torch.strided
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


class GeneratorSource(ABC, Generic[StateT]):
    """One random number generator that ``set_seed`` seeds, blocks isolate and checkpoints save.

    Subclass it to manage a generator the library does not know (a CuPy-like generator, a
    simulator's RNG) and register an instance with ``register_generator(source, name=...)``.
    Three methods are required:

    * ``get_state()`` / ``set_state(state)``: a copy of the generator's state, and putting one
      back. ``set_state`` also receives what ``from_bits`` returned.
    * ``from_bits(bits)``: the fresh state a block installs, a pure function of the 16 bytes
      (128 bits) the library derives for this generator from (root seed, key, name).

    The others have defaults that fit most generators: ``save``/``restore`` (a block's hot path:
    ``get_state``/``set_state``), ``seed`` (what ``set_seed(s)`` does: the state ``from_bits``
    gives for bits derived from ``s`` and the name), ``to_checkpoint``/``from_checkpoint`` (the
    state as it is, if it is plain data that ``torch.load(weights_only=True)`` reads: tensors,
    numbers, str, None, lists, tuples and dicts with str keys; override them otherwise, and
    check every field in ``from_checkpoint``). A state must never be mutated after it was
    returned: the library caches derived states and hands them out again.

    >>> import random
    >>> from reproducible_block import (
    ...     GeneratorSource, ReproducibleBlock, register_generator, set_seed, unregister_generator)
    >>> class PythonRandomInstance(GeneratorSource):
    ...     '''A random.Random object of the user's.'''
    ...     def __init__(self, generator):
    ...         self.generator = generator
    ...     def get_state(self):
    ...         return self.generator.getstate()
    ...     def set_state(self, state):
    ...         self.generator.setstate(state)
    ...     def from_bits(self, bits):
    ...         return random.Random(int.from_bytes(bits, "little")).getstate()
    >>> mine = random.Random()
    >>> register_generator(PythonRandomInstance(mine), name="doc-mine")
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("augment"):
    ...     first = mine.random()
    >>> with ReproducibleBlock("augment", replay=True):  # again, on purpose
    ...     again = mine.random()
    >>> first == again
    True
    >>> unregister_generator("doc-mine")
    """

    #: The name used in ``sources=``, in derivation and in checkpoints. Built-in sources set
    #: it; ``register_generator(source, name=...)`` sets it for registered ones.
    name: str = ""
    #: The built-in sources' fixed derivation slot (``"random"``, ``"numpy"``, ``"torch"``,
    #: ``"accelerator"``). None, for every registered source: it derives from its name.
    slot: ClassVar[str | None] = None
    #: What a checkpoint records next to the state: a state is only loaded back into a source
    #: of the same kind. Defaults to the class's module and qualified name.
    checkpoint_kind: ClassVar[str] = ""
    #: Whether the generator is a Mersenne Twister (MT19937: a 624-word key and a position), the
    #: one declaration of it: those get a derived 624-word key (see ``_streams.derivation``), and
    #: the block ledger records their :meth:`twister_state` so the run diff can count draws.
    #: True for Python ``random``, NumPy's legacy global and torch's CPU generators.
    mersenne_twister: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "checkpoint_kind" not in cls.__dict__:
            cls.checkpoint_kind = f"{cls.__module__}.{cls.__qualname__}"

    # Portable state: reports, diagnostics, checkpoints.

    @abstractmethod
    def get_state(self) -> StateT:
        """A copy of the generator's current state."""

    @abstractmethod
    def set_state(self, state: StateT) -> None:
        """Put the generator in ``state`` (from ``get_state``, ``from_bits`` or a checkpoint)."""

    # A block's hot path: every entry saves and installs, every exit restores.

    def save(self) -> Any:
        """Save the current state for :meth:`restore` (any form; ``get_state`` by default)."""
        return self.get_state()

    def restore(self, saved: Any) -> None:
        """Put back what :meth:`save` returned, or install what :meth:`from_bits` returned."""
        self.set_state(saved)

    def installer(self) -> Callable[[Any], None]:
        """A function that does what :meth:`restore` does, made for a run of installs (a batch
        of per-sample blocks switching from one to the next): :meth:`restore` itself by
        default. The built-in ``random`` and NumPy sources return one with their checks inline,
        bound to what they checked when it was made; it takes :meth:`restore` whenever those
        checks fail, so it stays right if the program rebinds the generators meanwhile."""
        return self.restore

    def swap(self, state: Any) -> Any:
        """:meth:`save`, then :meth:`restore` ``state``; return what was saved (a block's entry).

        If installing ``state`` fails, the generator is left as it was. A kind may override it
        to do both in one step.
        """
        saved = self.save()
        try:
            self.restore(state)
        except BaseException:
            self.restore(saved)
            raise
        return saved

    # Seeding and derivation.

    @abstractmethod
    def from_bits(self, bits: bytes) -> Any:
        """The state a block installs (through :meth:`restore`) for 16 derived bytes.

        A pure function of ``bits``; the result is cached and must not be mutated.
        """

    def from_bits_batch(self, bits: Sequence[bytes]) -> list[Any]:
        """:meth:`from_bits` of each item of ``bits``, in order (``ReproducibleBlock.prepare``
        derives a batch of keys at once). The built-in Mersenne Twisters override it to derive
        the whole batch in a few array operations; the states are the same either way."""
        return [self.from_bits(item) for item in bits]

    def seed(self, seed: int) -> None:
        """What ``set_seed(seed)`` does: by default, the state derived from (seed, name)."""
        self.restore(self.from_bits(registered_root_bits(seed, self.name)))

    # The ledger (see record_blocks): how much a block drew.

    def twister_state(self, saved: Any) -> tuple[bytes, int, bytes] | None:
        """A Mersenne Twister's state, from what :meth:`save` returned, as (the key's second and
        third words as 8 little-endian bytes, which tell one 624-word key from the next, the
        position in the key, the rest of the state as bytes); None for other kinds of generator
        (the default), or when the state is not an MT19937's now. Read only for sources that
        declare :attr:`mersenne_twister`: the block ledger records it cheaply at every block
        exit, so that the run diff can count what a block drew by replaying its stream."""
        return None

    def twister_now(self) -> tuple[bytes, int, bytes] | None:
        """:meth:`twister_state` of the generator's current state (what the block ledger records
        at a block's exit): ``twister_state(save())`` by default. The built-in Mersenne Twisters
        override it to read only those fields, without copying the whole state first."""
        return self.twister_state(self.save())

    # Checkpoints.

    def to_checkpoint(self, state: StateT) -> Any:
        """``state`` as plain data for a checkpoint (by default, itself, if it is plain)."""
        if not _is_plain(state):
            raise ReproducibleBlockTypeError(
                f"get_rng_state() cannot save the state of {self!r}: {describe(state)} is not "
                "plain data (tensors, numbers, str, None, lists, tuples, dicts with str keys). "
                f"Override {type(self).__name__}.to_checkpoint() and from_checkpoint()."
            )
        return state

    def from_checkpoint(self, data: object, where: str) -> StateT:
        """The state that ``data`` (from :meth:`to_checkpoint`) holds, checked; no side effects.

        ``where`` names the field for error messages. Raise the error of
        ``_support.checks.invalid`` (a ``ReproducibleBlockValueError``) when a field is
        wrong: a load checks every source before it changes any.
        """
        if not _is_plain(data):
            raise invalid(
                where, data, f"plain data, as {type(self).__name__}.to_checkpoint writes it"
            )
        return data  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
