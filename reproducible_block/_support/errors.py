"""The library's exceptions: one small hierarchy that also subclasses the builtins.

Catch :class:`ReproducibleBlockError` to catch everything the library raises on purpose, or
the builtin (``TypeError``, ``ValueError``, ``RuntimeError``) as you would for any other library.
"""

from __future__ import annotations

__all__ = [
    "BlockUsageError",
    "NondeterminismError",
    "NotSeededError",
    "ReproducibleBlockError",
    "ReproducibleBlockTypeError",
    "ReproducibleBlockValueError",
]


class ReproducibleBlockError(Exception):
    """Base class of every exception the library raises on purpose."""


class ReproducibleBlockTypeError(ReproducibleBlockError, TypeError):
    """An argument's type is not accepted (a float seed, a list key...)."""


class ReproducibleBlockValueError(ReproducibleBlockError, ValueError):
    """An argument's value is out of range (a negative seed, an empty key...)."""


class NotSeededError(ReproducibleBlockError, RuntimeError):
    """A block was entered before :func:`~reproducible_block.set_seed` gave it a root."""


class BlockUsageError(ReproducibleBlockError, RuntimeError):
    """A block was used in a way that would silently mix streams (out-of-order exit, ...)."""


class NondeterminismError(ReproducibleBlockError, AssertionError):
    """Two runs from the same random state gave different results (see ``assert_deterministic``).

    ``path`` locates the first differing element in the result (``"[1]['logits'][3, 0]"``;
    ``""`` for the result itself) and ``difference`` is the absolute difference there, when
    numbers differ (else None).
    """

    def __init__(self, message: str, *, path: str = "", difference: float | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.difference = difference


# Users meet these as ``reproducible_block.X`` (``reproducible_block.diagnostics`` for
# NondeterminismError): tracebacks and pickles name the public module, not this one.
for _error in (
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    NotSeededError,
    BlockUsageError,
):
    _error.__module__ = "reproducible_block"
NondeterminismError.__module__ = "reproducible_block.diagnostics"
del _error
