"""What a block installs, remembered: keys validated and encoded, ``sources=`` checked, and the
derived states (pure functions of root seed, folds and key, and the sources), each in a bounded
cache so that a block entered again with the same key derives nothing.

Reads (a block's hot path) take no lock; what changes the derived-state cache (adding,
evicting, clearing) holds a lock, since threads deriving fresh keys at once would otherwise
evict the same entry twice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import get_worker_info

from reproducible_block._sources.registry import Selection, check_sources, registry
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import (
    block_tail,
    encode_key,
    source_bits,
    source_bits_batch,
)
from reproducible_block._streams.keys import BlockKey, validate_key
from reproducible_block._support.distributed import folded_rank
from reproducible_block._support.transforms import outside_functorch

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "CACHE_SIZE",
    "batch_states",
    "block_states",
    "cached_states",
    "checked_source_names",
    "clear_cache",
    "derivation_tail",
    "derive_batch",
    "derive_states",
    "derived",
    "plain_keys",
    "prepare_states",
    "prepared_keys",
    "validate_and_encode",
    "validate_and_encode_all",
]

#: Plain str and int keys, validated and encoded (only exact types: True == 1, and a bool must
#: never hit the entry of 1). Bounded. Blocks read it directly on their hot path.
plain_keys: dict[object, tuple[BlockKey, bytes]] = {}
_PLAIN_KEYS_SIZE = 4096


#: Tuple keys that ``ReproducibleBlock.prepare`` validated and encoded, with the type of each
#: part (``True == 1``: a bool must never hit the entry of 1). Bounded. The blocks a batch
#: enters right after (one per sample) find their keys here.
prepared_keys: dict[tuple[Any, ...], tuple[BlockKey, bytes, tuple[type, ...]]] = {}
_PREPARED_KEYS_SIZE = 4096


def validate_and_encode(key: object) -> tuple[BlockKey, bytes]:
    """``validate_key`` then ``encode_key``, remembered for plain str and int keys, and for the
    tuple keys :func:`validate_and_encode_all` saw.

    >>> validate_and_encode(("epoch", 3))[0]
    ('epoch', 3)
    """
    kind = type(key)
    if kind is str or kind is int:
        found = plain_keys.get(key if kind is str else (key,))
        if found is not None:
            return found
    elif kind is tuple:
        try:
            prepared = prepared_keys.get(key)  # type: ignore[call-overload]
        except TypeError:  # an unhashable part: validate_key says what is wrong
            prepared = None
        if prepared is not None and prepared[2] == tuple(map(type, key)):  # type: ignore[call-overload]
            return prepared[0], prepared[1]
    checked = validate_key(key)
    result = (checked, encode_key(checked))
    if kind is str or kind is int:
        if len(plain_keys) >= _PLAIN_KEYS_SIZE:
            plain_keys.clear()
        plain_keys[key if kind is str else (key,)] = result
    return result


def validate_and_encode_all(keys: Iterable[object]) -> list[tuple[BlockKey, bytes]]:
    """:func:`validate_and_encode` of every key (all checked before any is remembered): each
    key as validated, and encoded. Tuple keys of plain int and str parts are remembered for the
    blocks built next (``ReproducibleBlock.prepare``: a block per key follows).

    >>> validate_and_encode_all([("sample", 0), "train"]) == [
    ...     validate_and_encode(("sample", 0)), validate_and_encode("train")]
    True
    """
    checked = [(key, validate_and_encode(key)) for key in keys]
    if len(prepared_keys) + len(checked) > _PREPARED_KEYS_SIZE:
        prepared_keys.clear()
    for key, (valid, encoded) in checked:
        if valid is key and type(key) is tuple:  # its parts are plain int and str
            prepared_keys[key] = (valid, encoded, tuple(map(type, key)))
    return [found for _, found in checked]


#: ``sources=`` tuples already checked (a few distinct ones per program).
_checked_sources: dict[tuple[str, ...], tuple[str, ...]] = {}


def checked_source_names(sources: Iterable[str] | None) -> tuple[str, ...] | None:
    """``check_sources(sources)``, remembered for tuples (at most 256 of them)."""
    if sources is None:
        return None
    try:
        found = _checked_sources.get(sources) if type(sources) is tuple else None
    except TypeError:  # an unhashable item: check_sources says what is wrong
        found = None
    if found is None:
        found = check_sources(sources)
        if type(sources) is tuple and found == sources and len(_checked_sources) < 256:
            _checked_sources[found] = found
    return found


#: How many blocks' derived states are kept: per-sample keys never make the cache grow past
#: this; the oldest entries go first. 0 derives on every entry.
CACHE_SIZE = 256
#: The derived states, by (root seed, folds and encoded key, selection). Blocks read it
#: directly on their hot path.
derived: dict[tuple[int, bytes, Selection], list[Any]] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:  # pragma: no cover - runs in forked children (test_fork.py)
    """A fresh lock in a forked child: another thread may have held this one at the fork."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def derive_states(seed: int, tail: bytes, selection: Selection) -> list[Any]:
    """The states a block installs: each source's ``from_bits`` of its derived 128 bits.

    A pure function of (root seed, ``tail`` = folds and encoded key, the selected sources).
    """
    cache_key = (seed, tail, selection)
    states = derived.get(cache_key)
    if states is not None:
        return states
    bits = source_bits(seed, tail, selection.derivation)
    with outside_functorch():  # a state is plain data, even when built under torch.func.grad
        states = [f(item) for f, item in zip(selection.from_bits, bits, strict=True)]
    if CACHE_SIZE > 0:
        with _lock:
            while len(derived) >= CACHE_SIZE:
                del derived[next(iter(derived))]
            derived[cache_key] = states
    return states


def derive_batch(seed: int, tails: Sequence[bytes], selection: Selection) -> list[list[Any]]:
    """The states of each block of ``tails`` (folds and encoded keys) under ``seed``, derived at
    once and not cached: each source derives the batch with ``from_bits_batch`` (a few array
    operations for the built-in Mersenne Twisters, whatever the batch's size). Equal to
    :func:`derive_states` of each tail.

    >>> from reproducible_block._streams.derivation import encode_key
    >>> selection = registry.select(("torch",))
    >>> tails = [encode_key(("doc", index)) for index in range(2)]
    >>> import torch
    >>> [torch.equal(batch[0], derive_states(7, tail, selection)[0])
    ...  for batch, tail in zip(derive_batch(7, tails, selection), tails)]
    [True, True]
    """
    bits = source_bits_batch(seed, tails, selection.derivation)
    with outside_functorch():  # a state is plain data, even when built under torch.func.grad
        columns = [
            source.from_bits_batch(column)
            for source, column in zip(selection.sources, bits, strict=True)
        ]
    return [list(states) for states in zip(*columns, strict=True)]


def _selection(source_names: tuple[str, ...] | None) -> Selection:
    selection = registry.selections.get(source_names)
    if selection is None:
        selection = registry.select(source_names)
    return selection


def prepare_states(
    keys_bytes: Iterable[bytes],
    source_names: tuple[str, ...] | None,
    per_rank: bool | ProcessGroup,
    per_worker: bool,
) -> None:
    """Derive and cache the states of the blocks with these encoded keys and options, the
    keys not cached yet all at once (:func:`derive_batch`). ``ReproducibleBlock.prepare``
    calls it; the states are those :func:`derive_states` gives.
    """
    if CACHE_SIZE <= 0:
        return
    seed = _root.current_seed()  # or the parent's, or NotSeededError
    selection = _selection(source_names)
    folds = derivation_tail(b"", per_rank, per_worker) if per_rank or per_worker else b""
    tails = [
        tail
        for tail in dict.fromkeys(folds + key for key in keys_bytes)
        if (seed, tail, selection) not in derived
    ][-CACHE_SIZE:]  # the cache keeps the last CACHE_SIZE: derive no more
    if not tails:
        return
    batch = derive_batch(seed, tails, selection)
    with _lock:
        for tail, states in zip(tails, batch, strict=True):
            while len(derived) >= CACHE_SIZE:
                del derived[next(iter(derived))]
            derived[(seed, tail, selection)] = states


def batch_states(
    keys_bytes: Sequence[bytes], source_names: tuple[str, ...] | None
) -> tuple[Selection, list[list[Any]]]:
    """The sources that blocks with these encoded keys (no folds) and ``sources=`` manage, and
    each block's states: cached ones as they are, the others derived at once and not cached
    (a batch of per-sample keys would only push the cache's other entries out).
    """
    seed = _root.current_seed()  # or the parent's, or NotSeededError
    selection = _selection(source_names)
    found = [derived.get((seed, tail, selection)) for tail in keys_bytes]
    missing = [tail for tail, states in zip(keys_bytes, found, strict=True) if states is None]
    fresh = iter(derive_batch(seed, missing, selection) if missing else ())
    return selection, [next(fresh) if states is None else states for states in found]


def clear_cache() -> None:
    """Forget every cached derived state (they are derived again on demand)."""
    with _lock:
        derived.clear()


def cached_states() -> int:
    """How many blocks' derived states are cached (bounded by ``CACHE_SIZE``)."""
    return len(derived)


def derivation_tail(key_bytes: bytes, per_rank: bool | ProcessGroup, per_worker: bool) -> bytes:
    """The folds (the rank with ``per_rank``, the DataLoader worker id with ``per_worker``) and
    the encoded key: what derivation reads after the root seed, for blocks and loader
    generators alike."""
    rank = folded_rank(per_rank) if per_rank is not False else None
    worker = None
    if per_worker:
        info = get_worker_info()
        worker = 0 if info is None else info.id
    return block_tail(key_bytes, rank, worker)


def block_states(
    key_bytes: bytes,
    source_names: tuple[str, ...] | None,
    per_rank: bool | ProcessGroup,
    per_worker: bool,
) -> tuple[Selection, list[Any]]:
    """The sources a block with these options manages and the states it installs (derived if
    not cached). ``ReproducibleBlock.__enter__`` inlines it: keep them alike."""
    seed = _root.seed
    if seed is None:
        seed = _root.current_seed()  # from the parent's set_seed, or NotSeededError
    selection = _selection(source_names)
    tail = key_bytes
    if per_rank or per_worker:
        tail = derivation_tail(key_bytes, per_rank, per_worker)
    states = derived.get((seed, tail, selection))
    if states is None:
        states = derive_states(seed, tail, selection)
    return selection, states
