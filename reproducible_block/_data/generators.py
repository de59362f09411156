"""Generators of their own for data loading: :func:`torch_generator`, :func:`numpy_generator`.

No block is entered and no global generator changes: a generator seeded from (root seed, key),
for a data order or a NumPy-side schedule that must not move when other code draws.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from reproducible_block._blocks.states import derivation_tail, validate_and_encode
from reproducible_block._sources.torch_random import torch_cpu_state
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import (
    block_message,
    loader_bits,
    philox_seed,
    seed_sequence,
)
from reproducible_block._streams.keys import BlockKey
from reproducible_block._support.checks import check_bool
from reproducible_block._support.distributed import check_per_rank
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["numpy_generator", "torch_generator"]


def _loader_bits(
    key: BlockKey, kind: str, per_rank: bool | ProcessGroup, per_worker: bool
) -> bytes:
    """The 128 bits of a ``kind`` loader generator for ``key``, options checked as a block's."""
    _, key_bytes = validate_and_encode(key)
    if per_rank is not False and per_rank is not True:
        per_rank = check_per_rank(per_rank)
    if per_worker is not False:
        check_bool(per_worker, "per_worker", "True gives every DataLoader worker its own stream.")
    seed = _root.current_seed(f"{kind}_generator({key!r})")
    tail = (
        key_bytes
        if not (per_rank or per_worker)
        else (derivation_tail(key_bytes, per_rank, per_worker))
    )
    return loader_bits(block_message(seed, tail), kind)


def torch_generator(
    key: BlockKey,
    *,
    device: str | torch.device = "cpu",
    per_rank: bool | ProcessGroup = False,
    per_worker: bool = False,
) -> torch.Generator:
    """A new ``torch.Generator`` seeded from (root seed, key): a stream of its own.

    For a DataLoader's order use :class:`~reproducible_block.ReproducibleSampler`, whose
    epoch ``e`` is ``torch.randperm(n, generator=torch_generator((key, e)))`` and which stays
    right with persistent workers and on any number of ranks. Passed to ``DataLoader(...,
    shuffle=True, generator=...)``, a generator from here gives the shuffle and the workers'
    base seed a stream of their own too, but persistent workers keep the iterator it seeded,
    so from the second epoch on the order depends on ``num_workers``. Its stream is
    independent of every block's streams and of every other key; each call returns a fresh
    generator in the same state, and no global generator changes.
    ``per_rank`` and ``per_worker`` fold the rank and the DataLoader worker id into the key,
    as they do for :class:`~reproducible_block.ReproducibleBlock`. Use a key per epoch,
    ``torch_generator(("order", epoch))``, so that a resumed run gets the same stream from its
    first epoch. Samplers need ``device="cpu"``.

    >>> import torch
    >>> from reproducible_block import set_seed, torch_generator
    >>> _ = set_seed(0)
    >>> first = torch.randperm(10, generator=torch_generator(("order", 0)))
    >>> _ = torch.rand(100)  # a validation pass, dropout... draws from the global generator
    >>> torch.equal(first, torch.randperm(10, generator=torch_generator(("order", 0))))
    True
    """
    if not isinstance(device, (str, torch.device)):
        raise ReproducibleBlockTypeError(
            f"device must be a str or a torch.device such as 'cpu' (the default, what "
            f"DataLoader samplers need); got {type(device).__name__} {device!r}."
        )
    try:
        place = torch.device(device)
    except RuntimeError:
        raise ReproducibleBlockValueError(
            f"device={device!r} is not a torch device; pass 'cpu' (the default, what "
            "DataLoader samplers need) or an available device such as 'cuda:0'."
        ) from None
    bits = _loader_bits(key, "torch", per_rank, per_worker)
    if place.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch_cpu_state(bits))
        return generator
    try:
        generator = torch.Generator(device=place)
    except RuntimeError:
        raise ReproducibleBlockValueError(
            f"device={device!r} has no generator here (no such device or backend); pass "
            "'cpu' (the default, what DataLoader samplers need) or a device this machine has."
        ) from None
    generator.manual_seed(philox_seed(bits))  # pragma: no cover - needs a device
    return generator  # pragma: no cover - needs a device


def numpy_generator(
    key: BlockKey, *, per_rank: bool | ProcessGroup = False, per_worker: bool = False
) -> np.random.Generator:
    """A new ``np.random.Generator`` seeded from (root seed, key), like :func:`torch_generator`.

    For NumPy-side shuffling, sampling or augmentation schedules that should not move when
    other code draws from the global generators. Independent of :func:`torch_generator` and of
    every block's streams; no global generator changes.

    >>> from reproducible_block import numpy_generator, set_seed
    >>> _ = set_seed(0)
    >>> order = numpy_generator(("order", 0)).permutation(10)
    >>> bool((order == numpy_generator(("order", 0)).permutation(10)).all())
    True
    """
    bits = _loader_bits(key, "numpy", per_rank, per_worker)
    return np.random.Generator(np.random.PCG64(seed_sequence(bits)))
