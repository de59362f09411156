"""Other seeders: Lightning's ``seed_everything``, ``transformers.set_seed``, ``torch.manual_seed``.

``set_seed(42)`` makes 42 the root. A later ``seed_everything(43)`` reseeds torch, NumPy and
``random``, but blocks go on deriving from 42: the run is reproducible, yet not the run of seed
43 the user asked for, and nothing says so. Every seeder seeds torch, so the library remembers
torch's initial seed as it last left it outside blocks (``set_seed``, ``load_rng_state`` outside
blocks, ``seed_worker`` and ``WorkerInit``, the compat block: :func:`settle`), and the
outermost block entry compares it with torch's (one C call, in ``_stack.enter``). When they
differ, :func:`noticed` warns, once per process.

A backward pass is the other exception: ``torch.utils.checkpoint`` recomputes a forward that
ran in a block with torch's generator set to that block's state, outside every block, and a
block entered by the recompute sees the block's initial seed (the next block after
``backward()`` still notices a seeder that ran).

DataLoader workers are the exception: the DataLoader seeds torch in each worker before any
``worker_init_fn``, while blocks there rightly keep the parent's root.
"""

from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from reproducible_block._streams import root as _root
from reproducible_block._streams.root import MAX_SEED
from reproducible_block._support.autograd import in_backward
from reproducible_block._support.warnings import warn_at_user_line

__all__ = ["initial_seed", "noticed", "settle"]

#: torch's CPU initial seed, read on a block's hot path (``torch.initial_seed()`` calls it).
initial_seed = torch.default_generator.initial_seed

_warned: dict[str, object] = {}


def settle() -> None:
    """The library has just seeded torch outside blocks: remember torch's initial seed."""
    _root.torch_seed = initial_seed()


def noticed() -> None:
    """torch's initial seed differs from the one the library left (the caller holds the lock).

    Not in a backward pass: a checkpoint recompute there runs on torch's stash of the forward's
    state (a block's, when the forward ran in one), and puts the caller's back when it ends.
    """
    if in_backward():
        return
    found = initial_seed()
    expected, _root.torch_seed = _root.torch_seed, found
    root = _root.seed
    if root is None or expected is None or get_worker_info() is not None:
        return
    fix = (
        f"reproducible_block.set_seed({found})"
        if found <= MAX_SEED
        else ("reproducible_block.set_seed(seed)")
    )
    warn_at_user_line(
        f"torch was seeded with {found} after reproducible_block.set_seed({root}), so the "
        f"global streams follow seed {found} while every block still derives from the root "
        f"seed {root} (another seeder ran: Lightning's seed_everything, transformers.set_seed, "
        f"torch.manual_seed...). Call {fix} after that seeder, or instead of it, so that blocks "
        "follow the same seed.",
        once="other seeder",
        seen=_warned,
    )
