"""The process's place in a ``torch.distributed`` group, and the collectives the library uses.

Nothing here initialises a process group: without an initialised default group the process is
rank 0 of a world of 1 and every collective is a local no-op. With one, the default group's
collectives run (gloo on CPU; NCCL needs ``torch.cuda.set_device(local_rank)`` first, as usual).
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist

__all__ = ["all_gather_objects", "global_rank", "is_distributed", "process_rank", "world_size"]


def is_distributed() -> bool:
    """Whether a default ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    """This process's global rank, or 0 outside ``torch.distributed``.

    >>> global_rank() == 0 and world_size() == 1  # no process group in the doctests
    True
    """
    return dist.get_rank() if is_distributed() else 0


def process_rank() -> int:
    """The global rank streams fold in: the process group's, else the launcher's ``RANK``.

    DataLoader workers have no process group; with the spawn start method they do not even inherit
    the parent's, but they inherit the environment, where ``torchrun`` and most launchers set
    ``RANK``. Outside both, 0.
    """
    if is_distributed():
        return int(dist.get_rank())
    text = os.environ.get("RANK", "")
    return int(text) if text.isdecimal() else 0


def world_size() -> int:
    """How many processes the default group has, or 1 outside ``torch.distributed``."""
    return dist.get_world_size() if is_distributed() else 1


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, indexed by global rank (a collective: every rank must call it)."""
    if not is_distributed():
        return [value]
    # Runs in the ranks that tests/test_distributed_rng_state.py spawns.
    gathered: list[Any] = [None] * dist.get_world_size()  # pragma: no cover - spawned ranks
    dist.all_gather_object(gathered, value)  # pragma: no cover - spawned ranks
    return gathered  # pragma: no cover - spawned ranks
