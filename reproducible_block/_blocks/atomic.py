"""All or nothing: every change of every generator, saved first and rolled back on failure.

:func:`apply_all` is the one rule for changing several generators at once (``set_seed``,
worker seeding, checkpoint loads, the compat reset, a block's entry, which inlines it for speed:
the "repeated key" row of ``make bench``); :func:`restore_all` puts saved states back, trying
every source. Both hold ``_memory.switching``, which a fork waits for: a child never starts
mid-switch. The caller holds the block lock (``stack.held``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reproducible_block._fast import views as _memory
from reproducible_block._sources import GeneratorSource

__all__ = ["Action", "apply_all", "install", "install_portable", "restore_all", "seed"]

#: What :func:`apply_all` does to one source with its value.
Action = Callable[[GeneratorSource[Any], Any], object]


def install(source: GeneratorSource[Any], state: Any) -> None:
    """Install a state from ``save`` or ``from_bits`` (the hot-path form): an :data:`Action`."""
    source.restore(state)


def install_portable(source: GeneratorSource[Any], state: Any) -> None:
    """Install a state from ``get_state`` (the portable form): an :data:`Action`."""
    source.set_state(state)


def seed(source: GeneratorSource[Any], value: int) -> None:
    """Seed a source as ``set_seed(value)`` does: an :data:`Action`."""
    source.seed(value)


def apply_all(
    sources: Sequence[GeneratorSource[Any]], action: Action, values: Sequence[Any]
) -> list[Any]:
    """For each source, save its state, then ``action(source, value)``; all or nothing.

    If an action fails, every source already changed (the failing one too) gets its saved
    state back before the error propagates. Returns the saved states (for :func:`restore_all`,
    to undo it). Holds ``_memory.switching``: no fork mid-way. The caller holds the lock.

    >>> import random
    >>> from reproducible_block._sources.registry import registry
    >>> python = registry.builtin()[:1]  # Python's random
    >>> before = random.getstate()
    >>> saved = apply_all(python, seed, [7])
    >>> restore_all(python, saved)
    >>> random.getstate() == before
    True
    """
    saved: list[Any] = []
    with _memory.switching:
        try:
            for source, value in zip(sources, values, strict=True):
                saved.append(source.save())
                action(source, value)
        except BaseException:
            restore_all(sources, saved)
            raise
    return saved


def restore_all(
    sources: Sequence[GeneratorSource[Any]], saved: Sequence[Any], action: Action = install
) -> None:
    """Put back every saved state (``action``: :func:`install`, or :func:`install_portable`
    for states from ``get_state``), last first; one failure does not stop the others, and the
    first is raised at the end."""
    error: BaseException | None = None
    with _memory.switching:
        for index in range(len(saved) - 1, -1, -1):
            try:
                action(sources[index], saved[index])
            except BaseException as exc:
                error = error or exc
    if error is not None:
        raise error
