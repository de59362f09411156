"""The process's place in a ``torch.distributed`` group, and the collectives the library uses.

Nothing here initialises a process group: without an initialised default group the process is
rank 0 of a world of 1 and every collective is a local no-op. With one, the default group's
collectives run (gloo on CPU; NCCL needs ``torch.cuda.set_device(local_rank)`` first, as usual).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch.distributed as dist

from reproducible_block._support.checks import describe
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "all_gather_objects",
    "check_per_rank",
    "folded_rank",
    "global_rank",
    "is_distributed",
    "known_rank",
    "launcher_rank",
    "owns_process_group",
    "process_rank",
    "raise_if_refused",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a default ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


# The default group a forked child inherited from its parent (DataLoader workers and the
# processes of a fork Pool): its peers are the parent's, so the child must not communicate.
_inherited_group: object = None


def owns_process_group() -> bool:
    """Whether this process has a default group of its own, not one inherited through fork.

    >>> owns_process_group()  # no process group in the doctests
    False
    """
    return is_distributed() and dist.group.WORLD is not _inherited_group


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children
    global _inherited_group
    _inherited_group = dist.group.WORLD if is_distributed() else None


os.register_at_fork(after_in_child=_after_fork_in_child)


def global_rank() -> int:
    """This process's global rank, or 0 outside ``torch.distributed``.

    >>> global_rank() == 0 and world_size() == 1  # no process group in the doctests
    True
    """
    return dist.get_rank() if is_distributed() else 0


def launcher_rank() -> int | None:
    """The rank a launcher gave this process in ``RANK`` (``torchrun`` and most launchers set
    it), or None when it is unset or not a number: the one reading of the launcher's rank.

    >>> os.environ["RANK"] = "3"
    >>> launcher_rank()
    3
    >>> del os.environ["RANK"]
    >>> launcher_rank() is None
    True
    """
    text = os.environ.get("RANK", "")
    return int(text) if text.isdecimal() else None


def known_rank() -> int | None:
    """The process group's rank, else the launcher's (:func:`launcher_rank`), else None."""
    return int(dist.get_rank()) if is_distributed() else launcher_rank()


def process_rank() -> int:
    """The global rank streams fold in: the process group's, else the launcher's ``RANK``.

    DataLoader workers have no process group; with the spawn start method they do not even inherit
    the parent's, but they inherit the environment, where ``torchrun`` and most launchers set
    ``RANK``. Outside both, 0.
    """
    rank = known_rank()
    return 0 if rank is None else rank


def check_per_rank(per_rank: object) -> bool | ProcessGroup:
    """``per_rank`` if it is True, False or a process group, else a clear ``TypeError``.

    ``torch.distributed.new_group`` returns a placeholder, not a group, on the ranks outside the
    new group; it is accepted here, and entering the block there raises (see
    :func:`folded_rank`), so that code building blocks alike on every rank keeps working.

    >>> check_per_rank(True)
    True
    """
    if per_rank is True or per_rank is False:
        return per_rank
    group_type = getattr(dist, "ProcessGroup", None)
    if (group_type is not None and isinstance(per_rank, group_type)) or _outside_group(per_rank):
        return cast("ProcessGroup", per_rank)
    raise ReproducibleBlockTypeError(
        f"per_rank must be True, False or a torch.distributed process group; got "
        f"{describe(per_rank)}. True folds the global rank into the key (a stream per rank); a "
        "group, such as dist.new_group(ranks), folds the rank within that group."
    )


def _outside_group(value: object) -> bool:
    """Whether ``value`` is what ``dist.new_group`` returns to the ranks outside the group."""
    outside = getattr(getattr(dist, "GroupMember", None), "NON_GROUP_MEMBER", None)
    return outside is not None and type(value) is type(outside) and value == outside


def folded_rank(per_rank: bool | ProcessGroup) -> int:
    """The rank ``ReproducibleBlock(per_rank=...)`` folds in: :func:`process_rank` for True,
    the rank within the group for a group (a clear error when this process is not in it)."""
    if isinstance(per_rank, bool):
        return process_rank()
    if not is_distributed():
        raise ReproducibleBlockValueError(
            "per_rank=<process group> folds this process's rank within the group, and this "
            "process has no initialised process group (not yet initialised, destroyed, or a "
            "DataLoader worker started with spawn). Enter the block where the group exists, or "
            "use per_rank=True (the global rank, or the launcher's RANK)."
        )
    rank = -1 if _outside_group(per_rank) else _rank_in(per_rank)
    if rank < 0:
        raise ReproducibleBlockValueError(
            f"per_rank=<process group>: this process (global rank {dist.get_rank()}) is not a "
            "member of the group (dist.new_group returns a placeholder to the ranks outside "
            "it). Pass the group this rank belongs to, such as the one of dist.new_group's "
            "results whose ranks include this one."
        )
    return rank


def _rank_in(group: ProcessGroup) -> int:
    try:
        return int(dist.get_rank(group))
    except (RuntimeError, ValueError) as error:
        raise ReproducibleBlockValueError(
            f"per_rank=<process group>: torch.distributed gives no rank of this process in the "
            f"group ({error}). Pass a group made with dist.new_group in the current process "
            "group, and that this rank belongs to."
        ) from None


def world_size() -> int:
    """How many processes the default group has, or 1 outside ``torch.distributed``."""
    return dist.get_world_size() if is_distributed() else 1


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, indexed by global rank (a collective: every rank must call it)."""
    if not is_distributed():
        return [value]
    # Runs in the ranks that tests/features/test_distributed_rng_state.py spawns.
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def raise_if_refused(action: str, reports: Sequence[object]) -> None:
    """Raise for the first rank whose report (from :func:`all_gather_objects`) is a refusal,
    the text of its error: a refusal on one rank is a refusal on every rank.

    >>> try:
    ...     raise_if_refused("set_seed()", [(1, "given"), "a negative seed"])
    ... except ValueError as error:
    ...     print(error)
    set_seed() was refused on rank 1, so no rank changed its generators: a negative seed
    """
    for rank, report in enumerate(reports):
        if isinstance(report, str):
            raise ReproducibleBlockValueError(
                f"{action} was refused on rank {rank}, so no rank changed its generators: {report}"
            )
