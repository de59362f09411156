"""``Reproducible_Block``: a drop-in for torch-reproducible-block 0.0.1 that keeps its numbers.

Migrating users get bit-identical tensors for the same program, draws outside blocks included:

* ``Reproducible_Block.set_seed(s)`` seeds like :func:`reproducible_block.set_seed` (the same
  call; it also gives :class:`~reproducible_block.ReproducibleBlock` its root).
* Entering ``Reproducible_Block(block_seed=n)`` resets Python ``random``, NumPy's global RNG, torch
  CPU and CUDA to the reference state (the state ``set_seed`` left), then makes ``n`` rounds of
  one ``random.randint(1, 10)``, one ``np.random.randint(1, 10)`` and one
  ``torch.randint(1, 10, (1,))``: entry costs ``O(n)`` and neighbouring keys give overlapping
  streams, which is why new code should use :class:`~reproducible_block.ReproducibleBlock`.
* Exit restores the state the block found only with ``reset_state_after=True``; by default the
  code after the block continues from the block's stream, as in 0.0.1. Like 0.0.1, a block
  object keeps one such saved state (``initial_state``): a recursive function decorated with
  ``reset_state_after=True`` restores, at every exit, the state its innermost call found.
* The class methods of 0.0.1 are here: ``reset_to_reference_state()``, ``set_reference_state()``
  (the current state becomes the reference, for ``Reproducible_Block`` only),
  ``get_random_state()`` and ``set_random_state(state)`` (a dict with the keys ``'py'``,
  ``'np'``, ``'torch'``, and ``'torch_cuda'`` once CUDA is initialised), and the class
  attribute ``reference_state`` (None before ``set_seed``; readable from block objects, and
  assigning a state from ``get_random_state()`` makes it the reference).

Deliberate differences (the numbers never differ; the migration guide lists them too):
where 0.0.1 asserted or did something odd, this raises (``TypeError``/``ValueError`` for a
missing, non-int, bool or negative ``block_seed`` and for a ``reset_state_after`` that is not a
bool; ``RuntimeError`` when a block is entered before ``set_seed``, at entry rather than at
construction, so that functions may be decorated at import time, and from
``reset_to_reference_state()`` and ``set_reference_state()`` before ``set_seed``); decorated
functions keep their name, signature and keyword arguments; CUDA is never initialised by the
library, and every CUDA device (not only the current one) goes back to the reference state;
``reference_state`` is computed on each read (changing it in place does not move the
reference); ``set_seed`` is :func:`reproducible_block.set_seed` (it also roots
``ReproducibleBlock``, seeds registered generators and is refused inside an open
``ReproducibleBlock``); entering a block takes the library's lock.

>>> import torch
>>> from reproducible_block.compat import Reproducible_Block
>>> Reproducible_Block.set_seed(42)
>>> with Reproducible_Block(block_seed=64):
...     first = torch.rand(3)
>>> with Reproducible_Block(block_seed=64):
...     second = torch.rand(3)
>>> torch.equal(first, second)
True
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import stack as _stack
from reproducible_block._blocks.decorator import wrap_function
from reproducible_block._blocks.seeding import set_seed
from reproducible_block._sources.registry import registry
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block._streams import root as _root
from reproducible_block._support.checks import check_bool, check_int, describe
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
)

__all__ = ["Reproducible_Block"]

F = TypeVar("F", bound=Callable[..., Any])
RandomState = dict[str, Any]

# A reference state that set_reference_state() captured (not derivable from the root seed), with
# the root seed it was captured under: a new root makes it stale.
_captured: tuple[int, RandomState] | None = None


def _captured_reference() -> RandomState | None:
    if _captured is None or _captured[0] != _root.peek_seed():
        return None
    return _captured[1]


def _reference_of_seed(seed: int) -> RandomState:
    """The states ``set_seed(seed)`` leaves, in 0.0.1's form, without touching a generator."""
    python = random.Random(seed).getstate()
    numpy = np.random.RandomState(seed).get_state(legacy=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return {"py": python, "np": numpy, "torch": generator.get_state()}


_STATE_KEYS = ("py", "np", "torch")
#: The source that holds each part of a state, by its slot.
_STATE_SLOTS = {"py": "random", "np": "numpy", "torch": "torch"}


def _capture(state: object, action: str) -> None:
    """Make ``state`` (in :meth:`Reproducible_Block.get_random_state`'s form) the reference."""
    global _captured
    if not isinstance(state, dict) or not set(_STATE_KEYS) <= set(state) <= {
        *_STATE_KEYS,
        "torch_cuda",
    }:
        raise ReproducibleBlockTypeError(
            f"{action} takes a state as Reproducible_Block.get_random_state() returns it (a dict "
            f"with the keys {list(_STATE_KEYS)}, and 'torch_cuda' once CUDA is initialised); got "
            f"{describe(state)}. Call Reproducible_Block.set_seed(seed) to reset the reference."
        )
    _captured = (_root.current_seed(action), state)


def _reference() -> RandomState | None:
    captured = _captured_reference()
    if captured is not None:
        return captured
    seed = _root.peek_seed()
    return None if seed is None else _reference_of_seed(seed)


class _CompatMeta(type):
    @property
    def reference_state(cls) -> RandomState | None:
        """The state blocks reset to (0.0.1's class attribute): None before ``set_seed``.

        Assigning a state from ``get_random_state()`` makes it the reference, as in 0.0.1.
        """
        return _reference()

    @reference_state.setter
    def reference_state(cls, state: RandomState) -> None:
        _capture(state, "Reproducible_Block.reference_state = state")


class Reproducible_Block(metaclass=_CompatMeta):
    """The 0.0.1 block: reset to the reference state, then advance ``block_seed`` draws."""

    def __init__(self, block_seed: int | None = None, reset_state_after: bool = False) -> None:
        if block_seed is None:
            raise ReproducibleBlockTypeError(
                "Reproducible_Block needs block_seed, e.g. Reproducible_Block(block_seed=42) or "
                "@Reproducible_Block(block_seed=42)."
            )
        self.block_seed = check_int(
            block_seed,
            "block_seed",
            0,
            advice="For str or tuple keys use reproducible_block.ReproducibleBlock.",
        )
        self.reset_state_after = check_bool(reset_state_after, "reset_state_after")
        #: The state found at the last entry, restored on exit with ``reset_state_after``.
        self.initial_state: RandomState | None = None

    @classmethod
    def set_seed(cls, seed: int) -> None:
        """Seed Python, NumPy and torch (CPU and CUDA) and make it the reference, as 0.0.1 did."""
        global _captured
        set_seed(seed)
        _captured = None

    @property
    def reference_state(self) -> RandomState | None:
        """The class's reference state, read from a block object (as 0.0.1's class attribute)."""
        return _reference()

    @classmethod
    def set_reference_state(cls) -> None:
        """Make the current state the reference state blocks reset to (0.0.1's method)."""
        _capture(cls.get_random_state(), "Reproducible_Block.set_reference_state()")

    @classmethod
    def reset_to_reference_state(cls) -> None:
        """Put Python, NumPy, torch and CUDA back in the reference state (0.0.1's method).

        All or nothing: if a generator refuses, every generator gets its state back.
        """
        with _stack.held("Reproducible_Block.reset_to_reference_state()"):
            seed = _root.current_seed("Reproducible_Block.reset_to_reference_state()")
            captured = _captured_reference()
            if captured is not None:
                cls.set_random_state(captured)
                return
            sources = registry.builtin()
            _atomic.apply_all(sources, _atomic.seed, [seed] * len(sources))
            if not _stack.open_count():
                _other_seeders.settle()

    @classmethod
    def get_random_state(cls) -> RandomState:
        """The current state, in 0.0.1's form (``'torch_cuda'`` only once CUDA is initialised)."""
        state: RandomState = {
            "py": random.getstate(),
            "np": np.random.get_state(legacy=True),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # pragma: no cover
            state["torch_cuda"] = torch.cuda.get_rng_state()
        return state

    @classmethod
    def set_random_state(cls, state: RandomState) -> None:
        """Install a state from :meth:`get_random_state` (0.0.1's method); all or nothing."""
        by_slot = {source.slot: source for source in registry.builtin()}
        sources = [by_slot[slot] for slot in _STATE_SLOTS.values()]
        values = [state[key] for key in _STATE_SLOTS]
        with _stack.held("Reproducible_Block.set_random_state()"):
            saved = _atomic.apply_all(sources, _atomic.install_portable, values)
            if "torch_cuda" in state:  # pragma: no cover - needs a GPU
                try:
                    torch.cuda.set_rng_state(state["torch_cuda"])
                except BaseException:
                    _atomic.restore_all(sources, saved)
                    raise
            if not _stack.open_count():
                _other_seeders.settle()

    def __enter__(self) -> None:
        with _stack.held("entering a Reproducible_Block"):
            _root.current_seed("entering a Reproducible_Block")
            if self.reset_state_after:
                self.initial_state = self.get_random_state()
            self.reset_to_reference_state()
            for _ in range(self.block_seed):
                random.randint(1, 10)
                np.random.randint(1, 10)
                torch.randint(1, 10, (1,))

    def __exit__(self, *exc_info: object) -> None:
        if self.reset_state_after and self.initial_state is not None:
            with _stack.held("leaving a Reproducible_Block"):
                self.set_random_state(self.initial_state)

    def __call__(self, function: F) -> F:
        """Decorate ``function``: each call runs inside this block."""

        def in_block(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            with self:
                return wrapped(*args, **kwargs)

        return wrap_function(function, in_block)
