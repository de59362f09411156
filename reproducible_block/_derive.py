"""Stream derivation: (root seed, block key, source name) -> an independent SeedSequence.

NumPy's :class:`~numpy.random.SeedSequence` is the proven tool for this: a block's sequence is
``SeedSequence(root_seed, spawn_key=(BLOCK_DOMAIN, *encode_key(key)))`` and each source gets a
child whose spawn key appends the source's encoded name. The cost is constant in the key's value.

The three Mersenne Twister generators (Python ``random``, NumPy's legacy global ``RandomState``
and torch's CPU generator) get a full 624-word state from the sequence, the way NumPy's own
``MT19937(SeedSequence)`` does. Seeding them from an int instead would keep only 32 bits for
torch (its CPU ``manual_seed`` truncates), so two of 100,000 per-sample keys would likely collide.
"""

from __future__ import annotations

import struct
import warnings

import numpy as np
import torch

from ._keys import encode_name

__all__ = ["block_sequence", "loader_sequence", "mt19937_key", "registered_seed_sequence",
           "source_sequence", "torch_cpu_state"]

BLOCK_DOMAIN = 0x0B10C
REGISTERED_DOMAIN = 0x5EED
# Appended before a loader generator's name; a source's child appends the name's string tag (2)
# there, so no source name, registered ones included, can give a loader generator's sequence.
LOADER_DOMAIN = 0x10AD
MT_WORDS = 624
_MSB = 0x80000000


def block_sequence(root_seed: int, key_words: tuple[int, ...]) -> np.random.SeedSequence:
    """The sequence of one block: a pure function of (root seed, encoded key)."""
    return np.random.SeedSequence(root_seed, spawn_key=(BLOCK_DOMAIN, *key_words))


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


def mt19937_key(sequence: np.random.SeedSequence) -> np.ndarray:
    """A valid 624-word MT19937 key from ``sequence`` (first word's top bit set: never all zero).

    >>> key = mt19937_key(np.random.SeedSequence(1))
    >>> key.shape == (624,) and key.dtype == np.uint32 and int(key[0]) == 0x80000000
    True
    """
    key = sequence.generate_state(MT_WORDS, np.uint32)
    key[0] = _MSB
    return key


# torch's CPU generator state is a 5056-byte tensor: the initial seed (u64), ``left`` (i32),
# ``seeded`` (i32), ``next`` (u64), then the 624 words each stored as u64, then the cached
# normals. torch does not document the layout, so it is checked once against a generator seeded
# the public way; if a future torch changes it, blocks fall back to ``manual_seed`` (32 bits).
_TORCH_STATE_BYTES = 5056
_TORCH_WORDS_OFFSET = 24
_layout_checked: bool | None = None
_template: torch.Tensor | None = None


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
        _template = state
        if not ok:
            warnings.warn(
                "reproducible_block does not recognise this torch version's CPU generator state; "
                "blocks seed torch's CPU generator with manual_seed, which keeps only 32 bits, so "
                "rare keys may share a torch stream. Please report your torch version.",
                RuntimeWarning,
                stacklevel=3,
            )
    return _layout_checked


def torch_cpu_state(sequence: np.random.SeedSequence) -> torch.Tensor:
    """A state for a torch CPU generator holding a full MT19937 key derived from ``sequence``."""
    words = sequence.generate_state(MT_WORDS + 2, np.uint32)
    key = words[:MT_WORDS]
    key[0] = _MSB
    # What torch.initial_seed() reports inside the block: 64 more bits of the same sequence.
    initial_seed = int(words[MT_WORDS]) | int(words[MT_WORDS + 1]) << 32
    if not _torch_layout_ok() or _template is None:
        fallback = torch.Generator()
        fallback.manual_seed(initial_seed)
        return fallback.get_state()
    state = _template.clone()
    raw = state.numpy()
    raw[0:8] = np.frombuffer(struct.pack("<Q", initial_seed), dtype=np.uint8)
    words = raw[_TORCH_WORDS_OFFSET : _TORCH_WORDS_OFFSET + 8 * MT_WORDS].view(np.uint64)
    words[:] = key
    return state
