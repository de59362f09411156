"""The process's root: the seed :func:`set_seed` used and the states it left (the snapshot)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import NotSeededError

__all__ = ["Root", "current_root", "peek_root", "replace_root"]


@dataclass(frozen=True)
class Root:
    """What every block derives from: the root seed, and each source's state right after seeding."""

    seed: int
    snapshot: Mapping[str, Any] = field(repr=False, compare=False)


_current: Root | None = None


def current_root(action: str = "entering a ReproducibleBlock") -> Root:
    """The root, or :class:`NotSeededError` telling the user to call ``set_seed`` first."""
    if _current is None:
        raise NotSeededError(
            f"{action} needs a root seed, and set_seed() has not been called in this process. "
            "Call reproducible_block.set_seed(seed) once, before any block, at the start of "
            "your program (or in each worker: see seed_worker)."
        )
    return _current


def peek_root() -> Root | None:
    """The root if there is one, else None (for reports and fixtures)."""
    return _current


def replace_root(root: Root | None) -> Root | None:
    """Install ``root`` and return the previous one (so callers can restore it)."""
    global _current
    previous, _current = _current, root
    return previous
