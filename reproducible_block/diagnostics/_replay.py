"""Replaying a block's stream from the ledger: the entry state a block derives, and how many
32-bit numbers took it to the state a record holds at exit.

A block's Mersenne Twisters start from a fresh key derived from (root seed, folds, key); the
ledger records, at exit, the position in the current key and a digest of it. Twisting the entry
key until the digest matches counts the draws (at most :data:`MAX_REPLAYED_DRAWS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from reproducible_block._sources.registry import MERSENNE_TWISTER_SLOTS
from reproducible_block._streams.derivation import (
    MT_WORDS,
    block_bits,
    block_message,
    block_tail,
    encode_key,
    mt_words,
    slot,
)
from reproducible_block._streams.keys import validate_key
from reproducible_block.diagnostics._format import DERIVATION, key_from_json, mt_key_digest

__all__ = ["MAX_REPLAYED_DRAWS", "count_draws", "entry_state_images", "replayed_draws"]

#: The most 32-bit numbers the diff replays per block to say how many it drew.
MAX_REPLAYED_DRAWS = 10**7


def entry_state_images(
    root_seed: int,
    key: object,
    per_rank: int | None,
    source_names: Sequence[str],
    per_worker: int | None = None,
) -> dict[str, bytes]:
    """The 624 key words (uint32, little-endian) each built-in Mersenne Twister has on entry.

    A pure function of (root seed, key, the rank and worker id folded in with ``per_rank`` and
    ``per_worker``, the names of the sources the block manages): the derivation blocks use.
    Every entry state is a fresh key whose next draw twists. Sources other than ``"random"``,
    ``"numpy"`` and ``"torch"`` are left out.

    >>> images = entry_state_images(0, "train", None, ("random", "numpy", "torch"))
    >>> sorted(images) == ["numpy", "random", "torch"] and len(images["torch"]) == 2496
    True
    """
    tail = block_tail(encode_key(validate_key(key)), per_rank, per_worker)
    bits = block_bits(block_message(root_seed, tail))
    return {
        name: mt_words(slot(bits, name)).astype("<u4").tobytes()
        for name in source_names
        if name in MERSENNE_TWISTER_SLOTS
    }


def count_draws(entry_key: bytes, exit_key_digest: str, position: int) -> int | None:
    """How many 32-bit numbers take a fresh Mersenne Twister key to the recorded exit state.

    ``entry_key`` holds the 624 key words a block starts from (its next draw twists), the exit
    state is the key's id (see ``mt_key_digest``) and the position in it. Returns None when no count
    up to :data:`MAX_REPLAYED_DRAWS` reaches it (more were drawn, or the
    block reseeded the generator).

    >>> import numpy as np
    >>> bits = np.random.MT19937(5)
    >>> start = bits.state["state"]["key"].astype("<u4").tobytes()
    >>> bits.state = {"bit_generator": "MT19937", "state": {"key": bits.state["state"]["key"],
    ...                                                     "pos": 624}}
    >>> _ = bits.random_raw(1000)
    >>> after = bits.state["state"]
    >>> count_draws(start, mt_key_digest(after["key"].astype("<u4").tobytes()), after["pos"])
    1000
    """
    limit = MAX_REPLAYED_DRAWS
    if mt_key_digest(entry_key) == exit_key_digest:
        return 0 if position == MT_WORDS else None
    bits = np.random.MT19937(0)
    bits.state = {
        "bit_generator": "MT19937",
        "state": {"key": np.frombuffer(entry_key, dtype="<u4"), "pos": MT_WORDS},
    }
    for twists in range(1, (limit + MT_WORDS - 1) // MT_WORDS + 2):
        bits.random_raw(MT_WORDS)  # one twist: the key becomes the next one
        key = bits.state["state"]["key"]
        if mt_key_digest(key.astype("<u4").tobytes()) == exit_key_digest:
            drawn = MT_WORDS * (twists - 1) + position
            return drawn if drawn <= limit else None
    return None


def replayed_draws(
    derivation: object, root_seed: int | None, record: Mapping[str, Any], source: str
) -> int | str:
    """How many numbers the block of ``record`` (checked by the reader) drew from ``source``, in
    a ledger of the ``derivation`` scheme whose root seed is ``root_seed`` there, or why they
    were not counted."""
    entry = record["state"][source]
    if root_seed is None or derivation != DERIVATION:
        return "no root seed, or another derivation scheme"
    images = entry_state_images(
        root_seed,
        key_from_json(record["key"]),
        record.get("per_rank"),
        (source,),
        record.get("per_worker"),
    )
    image = images.get(source)
    if image is None:
        return "the draws of registered generators are not replayed"
    drawn = count_draws(image, entry[2], int(entry[1]))
    if drawn is None:
        return f"more than {MAX_REPLAYED_DRAWS:,} numbers, or a reseeded generator"
    return drawn
