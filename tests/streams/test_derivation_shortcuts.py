"""The shortcuts a fresh block's derivation takes give what the plain rules give.

A block's digest is a copy of a BLAKE2b kept per root seed; the Python and NumPy images are the
expansion's bytes with the first word prepended; a torch CPU state is a copy of a template.
Each is compared here with the rule written out the long way (``derivation.py``'s docstring).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from reproducible_block._sources.torch_random import torch_cpu_state
from reproducible_block._streams import derivation as _derivation
from reproducible_block._streams.derivation import (
    BLOCK,
    BUILTIN_SLOTS,
    MT_FIRST_WORD,
    PERSON,
    block_message,
    encode_key,
    mt_image,
    mt_words,
    source_bits,
)

BUILTINS = [(name, name) for name in BUILTIN_SLOTS]


def long_way(root_seed: int, tail: bytes, person: bytes = PERSON) -> list[bytes]:
    """The four slots of a block's 64-byte digest, with no kept hasher."""
    message = bytes((BLOCK,)) + block_message(root_seed, tail)
    digest = hashlib.blake2b(message, digest_size=64, person=person).digest()
    return [
        digest[16 * BUILTIN_SLOTS[name] : 16 * BUILTIN_SLOTS[name] + 16] for name in BUILTIN_SLOTS
    ]


def test_block_bits_of_many_root_seeds_are_those_of_the_rule() -> None:
    tail = encode_key(("sample", 3, 7))
    # More root seeds than the kept hashers (64): the cache is cleared and made again.
    seeds = [0, 1, 2**63, 2**64 - 1, *range(10, 150)]
    for _ in range(2):
        for seed in seeds:
            assert source_bits(seed, tail, BUILTINS) == long_way(seed, tail)
    assert len(_derivation._block_hashers) <= 64


def test_a_kept_hasher_follows_a_changed_personalisation(monkeypatch: pytest.MonkeyPatch) -> None:
    tail = encode_key("train")
    before = source_bits(5, tail, BUILTINS)  # keeps a hasher for root seed 5
    changed = PERSON[:-1] + bytes((PERSON[-1] ^ 1,))
    monkeypatch.setattr(_derivation, "PERSON", changed)
    assert source_bits(5, tail, BUILTINS) == long_way(5, tail, changed) != before
    monkeypatch.undo()
    assert source_bits(5, tail, BUILTINS) == before


@pytest.mark.parametrize("bits", [bytes(16), bytes(range(16)), b"\xff" * 16])
def test_mersenne_twister_images_are_the_key_words_in_order(bits: bytes) -> None:
    words = mt_words(bits).copy()
    assert int(words[0]) == MT_FIRST_WORD
    image = mt_image(bits, b"<", b">")
    assert image == b"<" + words.tobytes() + b">"
    assert mt_image(bits) == words.tobytes()


def test_torch_cpu_states_are_fresh_tensors_that_torch_accepts() -> None:
    first, second = torch_cpu_state(bytes(16)), torch_cpu_state(bytes(16))
    assert torch.equal(first, second)
    assert first.dtype == torch.uint8
    assert first.is_contiguous()
    assert first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr()
    first[-1] ^= 1  # a state shares no memory with another, nor with the template
    assert torch.equal(torch_cpu_state(bytes(16)), second)
    generator = torch.Generator().set_state(second)
    seed = int.from_bytes(bytes(16)[:8], "little") & (2**63 - 1)
    assert generator.initial_seed() == seed
    key = np.frombuffer(second.numpy().tobytes()[24 : 24 + 8 * 624], "<u8")
    assert np.array_equal(key, mt_words(bytes(16)).astype(np.uint64))
