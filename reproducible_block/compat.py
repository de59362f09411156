"""``Reproducible_Block``: a drop-in for torch-reproducible-block 0.0.1 that keeps its numbers.

Migrating users get bit-identical tensors for the same program, draws outside blocks included:

* ``Reproducible_Block.set_seed(s)`` seeds like :func:`reproducible_block.set_seed` (the same
  call; it also gives :class:`~reproducible_block.ReproducibleBlock` its root).
* Entering ``Reproducible_Block(block_seed=n)`` resets Python ``random``, NumPy's global RNG, torch
  CPU and CUDA to the root snapshot, then makes ``n`` rounds of one ``random.randint(1, 10)``, one
  ``np.random.randint(1, 10)`` and one ``torch.randint(1, 10, (1,))``: entry costs ``O(n)`` and
  neighbouring keys give overlapping streams, which is why new code should use
  :class:`~reproducible_block.ReproducibleBlock`.
* Exit restores the caller's state only with ``reset_state_after=True``; by default the code
  after the block continues from the block's stream, as in 0.0.1.

Where 0.0.1 asserted, this raises: a missing or invalid ``block_seed`` gives ``TypeError`` or
``ValueError`` at construction; entering before ``set_seed`` gives ``RuntimeError`` (at entry, so
functions may be decorated at import time, before the seed is set).

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
from typing import Any, TypeVar, cast

import numpy as np
import torch
import wrapt

from . import _activation
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._root import current_root
from ._seeding import set_seed
from ._sources import GeneratorSource, registry

__all__ = ["Reproducible_Block"]

F = TypeVar("F", bound=Callable[..., Any])


class Reproducible_Block:
    """The 0.0.1 block: reset to the root snapshot, then advance ``block_seed`` draws."""

    def __init__(self, block_seed: int | None = None, reset_state_after: bool = False) -> None:
        if block_seed is None:
            raise ReproducibleBlockTypeError(
                "Reproducible_Block needs block_seed, e.g. Reproducible_Block(block_seed=42) or "
                "@Reproducible_Block(block_seed=42)."
            )
        if isinstance(block_seed, (bool, np.bool_)) or not isinstance(
            block_seed, (int, np.integer)
        ):
            raise ReproducibleBlockTypeError(
                f"block_seed must be a non-negative int; got {type(block_seed).__name__} "
                f"{block_seed!r}. For str or tuple keys use reproducible_block.ReproducibleBlock."
            )
        if block_seed < 0:
            raise ReproducibleBlockValueError(
                f"block_seed must be a non-negative int; got {block_seed}."
            )
        if not isinstance(reset_state_after, bool):
            raise ReproducibleBlockTypeError(
                f"reset_state_after must be True or False; got {reset_state_after!r}."
            )
        self.block_seed = int(block_seed)
        self.reset_state_after = reset_state_after
        self._saved: list[list[tuple[GeneratorSource[Any], Any]]] = []

    @classmethod
    def set_seed(cls, seed: int) -> None:
        """Seed Python, NumPy and torch (CPU and CUDA) and snapshot the root, as 0.0.1 did."""
        set_seed(seed)

    def __enter__(self) -> None:
        with _activation.lock:
            root = current_root("entering a Reproducible_Block")
            sources = registry.builtin()
            if self.reset_state_after:
                self._saved.append([(source, source.capture()) for source in sources])
            for source in sources:
                source.install(root.snapshot[source.name])
            for _ in range(self.block_seed):
                random.randint(1, 10)
                np.random.randint(1, 10)
                torch.randint(1, 10, (1,))

    def __exit__(self, *exc_info: object) -> None:
        if self.reset_state_after:
            with _activation.lock:
                for source, state in self._saved.pop():
                    source.install(state)

    def __call__(self, function: F) -> F:
        """Decorate ``function``: each call runs inside this block."""

        @wrapt.decorator
        def in_block(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            with self:
                return wrapped(*args, **kwargs)

        return cast(F, in_block(function))
