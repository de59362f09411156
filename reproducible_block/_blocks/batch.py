"""Running a call per item, each in a block of its own, switching from block to block directly.

``ReproducibleDataset.__getitems__`` runs each sample of a batch in its block. Entering and
leaving a block per sample saves the caller's states, installs the sample's, then puts the
caller's back, only to save them again at the next sample, where nothing ran in between:
:func:`each_in_block` enters the first block as ``with`` does, then switches straight to each
next block's states (``stack.switch``), and puts the caller's states back once, at the end. The
numbers, the caller's streams, the ledger's records and the repeated-key warnings are those of
``with block:`` per item.

The switch is taken only where it is exactly a close then an entry: the next block is a plain
one over the same sources, the last one is the innermost open block, no repeated-key check is
pending on it, and the root and torch's seed are as at the first entry (another seeder check
would read the same). Anywhere else the block closes and the next one enters as ``with`` does.
The lock is held from the first block to the last: a block entered in another thread meanwhile
waits for the whole batch, not one item.

:func:`each_in_block_of` is the batch of per-sample blocks: every key checked and every state
derived before the first item (``derive_batch``: one array operation per source for the whole
batch), nothing per item but the switch and the call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._blocks.block import ReproducibleBlock
from reproducible_block._blocks.repetition import SETTLED as _SETTLED
from reproducible_block._blocks.repetition import checking as _checking
from reproducible_block._blocks.repetition import record as _record
from reproducible_block._blocks.states import batch_states
from reproducible_block._sources.registry import Selection
from reproducible_block._streams import root as _root
from reproducible_block._streams.keys import BlockKey
from reproducible_block._support.transforms import dynamo_callback, is_dynamo_compiling
from reproducible_block._support.warnings import user_place

__all__ = ["each_in_block", "each_in_block_of"]

Target = tuple[bytes, Selection, Sequence[Any]]  # (derivation tail, sources, their states)

Item = TypeVar("Item")
Result = TypeVar("Result")


def each_in_block_of(
    checked: Sequence[tuple[BlockKey, bytes]],
    sources: tuple[str, ...] | None,
    call: Callable[[Item], Result],
    items: Sequence[Item],
) -> list[Result]:
    """:func:`each_in_block` with ``ReproducibleBlock(key, sources=sources)`` for each key,
    the keys validated and encoded (``checked``, as :func:`validate_and_encode_all` gives them)
    and ``sources`` checked: every block's states are derived at once, before the first call.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> from reproducible_block._blocks.states import validate_and_encode_all
    >>> checked = validate_and_encode_all([("doc-of", 0), ("doc-of", 1)])
    >>> batch = each_in_block_of(checked, None, lambda _: torch.rand(()), [None, None])
    >>> with ReproducibleBlock(("doc-of", 1), replay=True):  # again, on purpose
    ...     torch.equal(batch[1], torch.rand(()))
    True
    """
    blocks = [ReproducibleBlock._checked(key, encoded, sources) for key, encoded in checked]
    if is_dynamo_compiling() or dynamo_callback() is not None:
        return each_in_block(blocks, call, items)  # each entry as `with` does
    tails = [encoded for _, encoded in checked]  # no folds: a plain block's tail is its key
    selection, states = batch_states(tails, sources)
    targets = [(tail, selection, found) for tail, found in zip(tails, states, strict=True)]
    return each_in_block(blocks, call, items, targets, user_place(2))


def each_in_block(
    blocks: Sequence[ReproducibleBlock],
    call: Callable[[Item], Result],
    items: Sequence[Item],
    targets: Sequence[Target] | None = None,
    place: tuple[str, int] | None = None,
) -> list[Result]:
    """``call(item)`` for each item, each in its block: as ``with block: call(item)`` per item.

    Between two items the generators switch directly from one block's states to the next's; the
    caller's states come back once, after the last item, or when a call raises (the error
    propagates, no block is left open). ``targets`` are what each block's ``_target()`` would
    give, found beforehand; ``place`` is the user's line, for the repeated-key record.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> blocks = [ReproducibleBlock(("doc-batch", index)) for index in range(3)]
    >>> before = torch.get_rng_state()
    >>> batch = each_in_block(blocks, lambda scale: scale * torch.rand(()), [1, 2, 3])
    >>> torch.equal(torch.get_rng_state(), before)
    True
    >>> one_by_one = []
    >>> for block, scale in zip(blocks, [1, 2, 3]):
    ...     with ReproducibleBlock(block.key, replay=True):  # again, on purpose
    ...         one_by_one.append(scale * torch.rand(()))
    >>> all(torch.equal(a, b) for a, b in zip(batch, one_by_one))
    True
    """
    results: list[Result] = []
    frame: _stack.Frame | None = None  # the open block's frame, while one is open
    root: tuple[int, int | None] = (0, None)  # (root generation, torch's seed) at its entry
    installs: list[Callable[[Any], None]] = []  # the open frame's sources' installer()s
    try:
        for index, (block, item) in enumerate(zip(blocks, items, strict=True)):
            target = block._target() if targets is None else targets[index]
            if frame is not None:
                closing, frame = frame, None  # closed below, whatever happens
                if (
                    target is not None
                    and target[1].sources is closing[1]
                    and root == (_root.generation, _root.torch_seed)
                    and not (_checking and id(closing) in _checking)
                ):
                    frame = _stack.switch(closing, block, target[2], installs)
                    if _record.get(target[0]) is not _SETTLED and not block.replay:
                        _repetition.entered(block, target[0], frame, 1, place)
                    results.append(call(item))
                    continue
                _repetition.leave(closing)  # the check of a repeated key, if one is pending
            if target is None:  # disabled, key_from or compiled: what `with` does
                with block:
                    results.append(call(item))
                continue
            frame = _stack.enter(block, target[1].sources, target[2])
            root = (_root.generation, _root.torch_seed)
            installs = [source.installer() for source in frame[1]]  # for the switches after
            if _record.get(target[0]) is not _SETTLED and not block.replay:
                _repetition.entered(block, target[0], frame, 1, place)
            results.append(call(item))
    except BaseException:
        if frame is not None:
            _repetition.leave(frame)
        raise
    if frame is not None:
        _repetition.leave(frame)
    return results
