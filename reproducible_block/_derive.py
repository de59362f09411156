"""Stream derivation: (root seed, block key, source name) -> an independent 128-bit seed.

NumPy's :class:`~numpy.random.SeedSequence` is the proven tool for this: a block's sequence is
built from (root seed, encoded key) (see :func:`block_sequence`). One ``generate_state``
call gives each built-in source 128 bits from a fixed slot (by source name, so a source's seed
does not depend on which other sources a block manages); any other source gets a child sequence
whose spawn key appends its encoded name. The cost is constant in the key's value.

The three Mersenne Twister generators get a full 624-word state from those 128 bits: Python
``random`` through ``random.seed(int)`` (MT19937's ``init_by_array``), NumPy's legacy global
``RandomState`` and torch's CPU generator through :func:`mt_key`. Seeding from a 32-bit int
instead would collide: torch's CPU ``manual_seed`` keeps only 32 bits, so two of 100,000
per-sample keys would likely share a torch stream.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._keys import encode_name

__all__ = [
    "MT_IMAGE_BYTES",
    "block_sequence",
    "checked_mt_address",
    "loader_sequence",
    "mt_key",
    "registered_seed_sequence",
    "seed_words",
    "source_seed_words",
    "source_sequence",
    "torch_cpu_state",
    "words_to_int",
]

BLOCK_DOMAIN = 0x0B10C
REGISTERED_DOMAIN = 0x5EED
# Appended before a loader generator's name; a source's child appends the name's string tag (2)
# there, so no source name, registered ones included, can give a loader generator's sequence.
LOADER_DOMAIN = 0x10AD
MT_WORDS = 624
SEED_WORDS = 4


def block_sequence(root_seed: int, key_words: tuple[int, ...]) -> np.random.SeedSequence:
    """The sequence of one block: a pure function of (root seed, encoded key).

    The entropy is one uint32 array, ``[root seed, BLOCK_DOMAIN, len(key words), *key words]``
    (five times cheaper to mix than a spawn-key tuple). The length word keeps it unambiguous:
    no block's entropy is a prefix of another's, nor of a child sequence's.
    """
    entropy = np.array((root_seed, BLOCK_DOMAIN, len(key_words), *key_words), dtype=np.uint32)
    return np.random.SeedSequence(entropy)


def source_sequence(block: np.random.SeedSequence, source_name: str) -> np.random.SeedSequence:
    """The child of a block's sequence for one source, independent of the other sources."""
    return np.random.SeedSequence(
        block.entropy, spawn_key=(*block.spawn_key, *encode_name(source_name))
    )


def loader_sequence(block: np.random.SeedSequence, kind: str) -> np.random.SeedSequence:
    """The child of a block's sequence for a generator it hands out (``kind``: "torch", ...).

    >>> block = block_sequence(0, (1, 1, 7))
    >>> loader_sequence(block, "torch").spawn_key != source_sequence(block, "torch").spawn_key
    True
    """
    return np.random.SeedSequence(
        block.entropy, spawn_key=(*block.spawn_key, LOADER_DOMAIN, *encode_name(kind))
    )


def registered_seed_sequence(root_seed: int, source_name: str) -> np.random.SeedSequence:
    """What ``set_seed`` seeds a user-registered generator from (outside every block)."""
    return np.random.SeedSequence(
        root_seed, spawn_key=(REGISTERED_DOMAIN, *encode_name(source_name))
    )


def seed_words(sequence: np.random.SeedSequence) -> np.ndarray:
    """128 bits (four uint32 words) from ``sequence``: what a source derives its state from."""
    return sequence.generate_state(SEED_WORDS, np.uint32)


def words_to_int(words: np.ndarray) -> int:
    """The seed words as one int (little-endian), e.g. for ``random.seed``.

    >>> words_to_int(np.array([1, 0, 0, 1], dtype=np.uint32)) == 1 + 2**96
    True
    """
    return int.from_bytes(words.tobytes(), "little")


# Fixed slots in a block's one generate_state call. Only one accelerator source exists in a
# process, so all accelerator types share the last slot.
_SLOTS = {"random": 0, "numpy": 1, "torch": 2, "cuda": 3, "xpu": 3, "mps": 3, "mtia": 3, "hpu": 3}
_SLOT_COUNT = 4


def source_seed_words(
    root_seed: int, key_words: tuple[int, ...], names: Sequence[str]
) -> list[np.ndarray]:
    """The seed words of each named source in a block: independent, pure functions of the inputs.

    >>> a = source_seed_words(0, (1, 1, 5), ["random", "torch"])
    >>> b = source_seed_words(0, (1, 1, 5), ["torch"])
    >>> bool((a[1] == b[0]).all()), bool((a[0] == a[1]).all())
    (True, False)
    """
    sequence = block_sequence(root_seed, key_words)
    pooled = sequence.generate_state(SEED_WORDS * _SLOT_COUNT, np.uint32)
    seeds = []
    for name in names:
        slot = _SLOTS.get(name)
        if slot is None:
            seeds.append(seed_words(source_sequence(sequence, name)))
        else:
            seeds.append(pooled[SEED_WORDS * slot : SEED_WORDS * (slot + 1)])
    return seeds


# NumPy's MT19937 keeps its C state as 624 uint32 key words then an int position; the bit
# generator's documented ``ctypes.state_address`` points at it. The layout is checked against the
# public state before any use.
MT_IMAGE_BYTES = MT_WORDS * 4 + 4


def checked_mt_address(bit_generator: object) -> int | None:
    """The address of an MT19937's C state if its bytes match its public state, else None."""
    if not isinstance(bit_generator, np.random.MT19937):
        return None
    address = int(bit_generator.ctypes.state_address)
    public = bit_generator.state["state"]
    image = ctypes.string_at(address, MT_IMAGE_BYTES)
    expected = np.asarray(public["key"], dtype=np.uint32).tobytes()
    expected += int(public["pos"]).to_bytes(4, "little", signed=True)
    return address if image == expected else None


# A block's 128 seed bits become a 624-word MT19937 key through a keyed PCG64 (its state set
# to the seed, a fixed increment): 624 words in about 10 µs, where SeedSequence.generate_state
# takes about 80 µs and NumPy's array seeding about 25 µs. The first word only contributes its
# top bit to MT19937; setting it (as NumPy's MT19937(SeedSequence) does) keeps the state nonzero.
_PCG_INCREMENT = 0xDA3E39CB94B95BDB  # odd, as PCG64 requires
_expander = np.random.PCG64()
_expander_lock = threading.Lock()


def mt_key(words: np.ndarray) -> np.ndarray:
    """The 624-word MT19937 key for 128 seed bits (four uint32 words).

    >>> key = mt_key(np.array([1, 2, 3, 4], dtype=np.uint32))
    >>> key.shape, key.dtype == np.uint32, int(key[0]) == 0x80000000
    ((624,), True, True)
    >>> bool((key == mt_key(np.array([1, 2, 3, 4], dtype=np.uint32))).all())
    True
    """
    state: Any = {
        "bit_generator": "PCG64",
        "state": {"state": words_to_int(words), "inc": _PCG_INCREMENT},
        "has_uint32": 0,
        "uinteger": 0,
    }
    with _expander_lock:
        _expander.state = state
        key = _expander.random_raw(MT_WORDS // 2).view(np.uint32)
    key[0] = 0x80000000
    return key


# torch's CPU generator state is a 5056-byte tensor: the initial seed (u64), ``left`` (i32),
# ``seeded`` (i32), ``next`` (u64), then the 624 words each stored as u64, then the cached
# normals. torch does not document the layout, so it is checked once against a generator seeded
# the public way; if a future torch changes it, blocks fall back to ``manual_seed`` (32 bits).
_TORCH_STATE_BYTES = 5056
_TORCH_WORDS_OFFSET = 24
_layout_checked: bool | None = None
_template: np.ndarray | None = None


def _torch_layout_ok() -> bool:
    global _layout_checked, _template
    if _layout_checked is None:
        probe_seed = 0x1234_5678_9ABC
        generator = torch.Generator()
        generator.manual_seed(probe_seed)
        state = generator.get_state()
        raw = state.numpy().tobytes()
        ok = (
            state.numel() == _TORCH_STATE_BYTES
            and struct.unpack_from("<QiiQ", raw, 0) == (probe_seed, 1, 1, 0)
            and struct.unpack_from("<Q", raw, _TORCH_WORDS_OFFSET)[0] == probe_seed & 0xFFFFFFFF
        )
        _layout_checked = ok
        _template = state.numpy().copy()
        if not ok:  # pragma: no cover - only with a torch whose layout differs
            warnings.warn(
                "reproducible_block does not recognise this torch version's CPU generator state; "
                "blocks seed torch's CPU generator with manual_seed, which keeps only 32 bits, so "
                "rare keys may share a torch stream. Please report your torch version.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _layout_checked


def torch_cpu_state(words: np.ndarray) -> torch.Tensor:
    """A torch CPU generator state holding the MT19937 key :func:`mt_key` gives for ``words``.

    >>> words = np.array([7, 0, 0, 1], dtype=np.uint32)
    >>> state = torch_cpu_state(words)
    >>> generator = torch.Generator().set_state(state)  # torch accepts it as valid
    >>> torch.equal(generator.get_state(), state), torch.equal(torch_cpu_state(words + 1), state)
    (True, False)
    """
    initial_seed = words_to_int(words[:2])  # what torch.initial_seed() reports in the block
    if not _torch_layout_ok() or _template is None:  # pragma: no cover - unknown layout
        fallback = torch.Generator()
        fallback.manual_seed(initial_seed)
        return fallback.get_state()
    raw = _template.copy()
    raw[0:8].view(np.uint64)[0] = initial_seed
    raw[_TORCH_WORDS_OFFSET : _TORCH_WORDS_OFFSET + 8 * MT_WORDS].view(np.uint64)[:] = mt_key(words)
    return torch.from_numpy(raw)
