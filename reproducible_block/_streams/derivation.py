"""Stream derivation, version 1: every rule that turns (root seed, key, source) into a state.

This module owns the stream contract. Each rule and constant below decides the numbers users get,
so none of them changes without a new :data:`DERIVATION_VERSION` (see the docs' stream stability
policy); ``tests/streams/test_golden_streams.py`` pins their output.

**Bits.** Every derived stream starts from 128 bits taken from one keyed BLAKE2b digest
(``person`` = :data:`PERSON`) of a message that starts with a domain byte, so that blocks, loader
generators, registered generators, new ranks and DataLoader workers never share an input. Every
field has a fixed width or a length prefix, so each message is injective in its fields. Inside a
block the message is ``BLOCK, root seed (8 bytes), folds, key``, where the folds are the rank
(``per_rank``) and the DataLoader worker id (``per_worker``); one 64-byte digest gives the four
built-in sources their 128 bits from fixed slots (Python ``random``, NumPy's global generator,
torch's CPU generator, the accelerator), so a source's bits do not depend on which other sources
a block manages. A registered generator gets a 16-byte digest of the same message followed by its
name (domain ``BLOCK_NAMED``): every name has its own stream.

**States.** The Mersenne Twister generators (the sources that declare ``mersenne_twister``:
Python ``random``, NumPy's legacy global, torch's CPU generators) get a full 624-word key from
their 128 bits: a PCG64 whose 128-bit state is the bits and whose increment is
:data:`PCG_INCREMENT` gives 312 64-bit outputs, each split into its low then its high 32 bits,
and the first word is set to ``0x80000000`` (as NumPy does for its own MT19937 seeding) so the
state is never all zero; the generator starts at the end of its key (it twists before its first
output). Seeding from an int instead would collide: torch's CPU ``manual_seed`` keeps only 32
bits. Philox generators (CUDA and other accelerators) take the low 64 bits as their seed; a NumPy
``Generator`` takes ``SeedSequence(the 128 bits)``.

Everything is little-endian and independent of ``PYTHONHASHSEED``, the platform and the byte
order; the cost depends on the key's size (a few bytes), never on its value.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Sequence

import numpy as np

from reproducible_block._fast.pcg64 import InPlaceExpansion
from reproducible_block._streams.keys import BlockKey

__all__ = [
    "BUILTIN_SLOTS",
    "DERIVATION_VERSION",
    "SEED_BYTES",
    "block_bits",
    "block_message",
    "block_tail",
    "encode_key",
    "epoch_index_encoder",
    "loader_bits",
    "mt_image",
    "mt_keys",
    "mt_words",
    "named_bits",
    "new_rank_bits",
    "new_rank_named_bits",
    "philox_seed",
    "registered_root_bits",
    "seed_sequence",
    "slot",
    "source_bits",
    "source_bits_batch",
    "worker_bits",
]

#: The version of the rules below; recorded in checkpoints and reports. A change to any stream is
#: a breaking change that bumps it.
DERIVATION_VERSION = 1

#: BLAKE2b personalisation of every derivation digest (at most 16 bytes).
PERSON = b"reproducible_bl1"
#: Bytes of seed material each derived stream starts from (128 bits).
SEED_BYTES = 16

# Domain bytes: the first byte of every message.
BLOCK = 1  # a block's built-in sources: 64 bytes, four slots
BLOCK_NAMED = 2  # a registered generator in a block
LOADER = 3  # torch_generator() / numpy_generator()
SEED_NAMED = 4  # what set_seed seeds a registered generator with
NEW_RANK = 5  # a rank that a checkpoint has no entry for: built-in sources
NEW_RANK_NAMED = 6  # the same, registered generators
WORKER = 7  # seed_worker: a DataLoader worker's global generators

# The built-in sources' slots in a 64-byte digest.
BUILTIN_SLOTS = {"random": 0, "numpy": 1, "torch": 2, "accelerator": 3}

# Key encoding: a tag byte, then a fixed-width int or a length-prefixed UTF-8 string.
TAG_INT = 0x01
TAG_STR = 0x02
TAG_TUPLE = 0x03
# Folds, written between the root seed and the key; tags no key starts with.
TAG_RANK = 0x10
TAG_WORKER = 0x11

#: PCG64 increment of the Mersenne Twister key expansion (odd, as PCG64 requires).
PCG_INCREMENT = 0xDA3E39CB94B95BDB
MT_WORDS = 624
#: The first key word of every derived Mersenne Twister state.
MT_FIRST_WORD = 0x80000000

_U64 = struct.Struct("<Q")
_TAGGED_U64 = struct.Struct("<BQ")
_TAGGED_U32 = struct.Struct("<BI")
_TWO_TAGGED_U64 = struct.Struct("<BQBQ")
_BUILTIN_BYTES = SEED_BYTES * len(BUILTIN_SLOTS)
_DOMAIN_AND_SEED = struct.Struct("<BQ")  # a digest's domain byte, then the root seed
_UINT32 = np.dtype(np.uint32)
_MASK64 = 2**64 - 1


def _encode_part(part: int | str) -> bytes:
    if type(part) is int:
        return _TAGGED_U64.pack(TAG_INT, part)
    data = str(part).encode("utf-8", "surrogatepass")
    return _TAGGED_U32.pack(TAG_STR, len(data)) + data


def encode_key(key: BlockKey) -> bytes:
    """A validated key as bytes, injectively: ``1``, ``"1"`` and ``(1,)`` differ.

    An int is a tag and 8 bytes (keys are below 2**64), so key ``10**12`` costs what key ``1``
    costs; a str is a tag, its UTF-8 length (4 bytes) and its bytes; a tuple is a tag, its item
    count (one byte: at most 32 items) and its items.

    >>> encode_key(1) != encode_key("1") != encode_key((1,))
    True
    >>> len(encode_key(10**12)) == len(encode_key(1)) == 9
    True
    """
    if type(key) is not tuple:
        return _encode_part(key)  # type: ignore[arg-type]
    encoded = bytearray((TAG_TUPLE, len(key)))
    for part in key:
        if type(part) is int:
            encoded += _TAGGED_U64.pack(TAG_INT, part)
        else:
            data = str(part).encode("utf-8", "surrogatepass")
            encoded += _TAGGED_U32.pack(TAG_STR, len(data))
            encoded += data
    return bytes(encoded)


def epoch_index_encoder(prefix: tuple[int | str, ...]) -> Callable[[int, int], bytes]:
    """A function of (epoch, index) that encodes ``(*prefix, epoch, index)`` as
    :func:`encode_key` does, the prefix encoded once (a dataset's per-sample keys; it pickles).
    The prefix must be valid and the two ints in ``[0, 2**64)``: the caller checks them.

    >>> encode = epoch_index_encoder(("sample",))
    >>> encode(3, 7) == encode_key(("sample", 3, 7))
    True
    """
    head = encode_key((*prefix, 0, 0))[: -2 * _TAGGED_U64.size]  # the tag, count and prefix
    return functools.partial(_with_epoch_index, head)


def _with_epoch_index(head: bytes, epoch: int, index: int) -> bytes:
    return head + _TWO_TAGGED_U64.pack(TAG_INT, epoch, TAG_INT, index)


def block_tail(key_bytes: bytes, rank: int | None = None, worker_id: int | None = None) -> bytes:
    """What a block's message holds after the root seed: the folds (the rank, global or within a
    process group, with ``per_rank``; the DataLoader worker id with ``per_worker``; None for an
    option not used), then the encoded key. Blocks key their derived-state cache by it."""
    folded = b"" if rank is None else _TAGGED_U64.pack(TAG_RANK, rank)
    if worker_id is not None:
        folded += _TAGGED_U64.pack(TAG_WORKER, worker_id)
    return folded + key_bytes


def block_message(root_seed: int, tail: bytes) -> bytes:
    """What a block's bits are a digest of: the root seed, then its :func:`block_tail`. The one
    place the message is put together: blocks, loader generators and the ledger's replay use it.

    >>> block_message(1, block_tail(encode_key("train"), rank=0))[:8] == (1).to_bytes(8, "little")
    True
    """
    return _U64.pack(root_seed) + tail


def _digest(domain: int, message: bytes, size: int) -> bytes:
    return hashlib.blake2b(bytes((domain,)) + message, digest_size=size, person=PERSON).digest()


def _name_part(name: str) -> bytes:
    data = name.encode("utf-8", "surrogatepass")
    return _TAGGED_U32.pack(TAG_STR, len(data)) + data


def block_bits(message: bytes) -> bytes:
    """64 bytes: 16 for each built-in source's slot (see :data:`BUILTIN_SLOTS`).

    >>> bits = block_bits(block_message(0, encode_key("train")))
    >>> len(bits), bits == block_bits(block_message(1, encode_key("train")))
    (64, False)
    """
    return _digest(BLOCK, message, _BUILTIN_BYTES)


def named_bits(message: bytes, name: str) -> bytes:
    """16 bytes for the registered generator ``name`` in the block of ``message``."""
    return _digest(BLOCK_NAMED, message + _name_part(name), SEED_BYTES)


def loader_bits(message: bytes, kind: str) -> bytes:
    """16 bytes for the generator ``torch_generator()`` (kind ``"torch"``) or
    ``numpy_generator()`` (``"numpy"``) hands out: independent of the block's own streams."""
    return _digest(LOADER, message + _name_part(kind), SEED_BYTES)


def registered_root_bits(root_seed: int, name: str) -> bytes:
    """16 bytes that ``set_seed(root_seed)`` seeds the registered generator ``name`` from."""
    return _digest(SEED_NAMED, _U64.pack(root_seed) + _name_part(name), SEED_BYTES)


def new_rank_bits(root_seed: int, rank: int) -> bytes:
    """64 bytes (four slots) for the built-in sources of a rank a checkpoint has no entry for."""
    return _digest(NEW_RANK, _U64.pack(root_seed) + _U64.pack(rank), _BUILTIN_BYTES)


def new_rank_named_bits(root_seed: int, rank: int, name: str) -> bytes:
    """16 bytes for the registered generator ``name`` of such a rank."""
    message = _U64.pack(root_seed) + _U64.pack(rank) + _name_part(name)
    return _digest(NEW_RANK_NAMED, message, SEED_BYTES)


def worker_bits(base_seed: int, worker_id: int, rank: int) -> bytes:
    """64 bytes (four slots) that ``seed_worker`` seeds a DataLoader worker's globals from.

    ``base_seed`` is the loader's base seed for the epoch (``torch.initial_seed() - worker_id`` in
    the worker), so streams differ between workers, between ranks and between epochs, and
    repeat between runs.
    """
    message = _U64.pack(base_seed & _MASK64) + _U64.pack(worker_id) + _U64.pack(rank)
    return _digest(WORKER, message, _BUILTIN_BYTES)


#: By (domain, personalisation, root seed): a BLAKE2b that has read a block digest's domain byte
#: and the root seed (a few per process). A block's digest is a copy of it fed the tail: no
#: parameters to parse. The domain and personalisation are part of the key because the golden
#: tests change them.
_block_hashers: dict[tuple[int, bytes, int], hashlib.blake2b] = {}


def _block_hasher(root_seed: int) -> hashlib.blake2b:
    """The BLAKE2b of :data:`_block_hashers` for ``root_seed`` (made on first use)."""
    found = _block_hashers.get((BLOCK, PERSON, root_seed))
    if found is not None:
        return found
    hasher = hashlib.blake2b(
        _DOMAIN_AND_SEED.pack(BLOCK, root_seed), digest_size=_BUILTIN_BYTES, person=PERSON
    )
    if len(_block_hashers) >= 64:
        _block_hashers.clear()
    _block_hashers[(BLOCK, PERSON, root_seed)] = hasher
    return hasher


def source_bits(
    root_seed: int, tail: bytes, sources: Sequence[tuple[str | None, str]]
) -> list[bytes]:
    """The 16 bytes of each source of a block: ``sources`` holds (its built-in slot or None,
    its name); built-ins take their slot of one 64-byte digest, others their own digest.

    >>> tail = encode_key("train")
    >>> both = source_bits(0, tail, [("torch", "torch"), (None, "mine")])
    >>> both == [slot(block_bits(block_message(0, tail)), "torch"),
    ...          named_bits(block_message(0, tail), "mine")]
    True
    """
    pooled = b""
    bits = []
    for builtin, name in sources:
        if builtin is None:
            bits.append(named_bits(block_message(root_seed, tail), name))
            continue
        if not pooled:  # _digest(BLOCK, block_message(root_seed, tail), _BUILTIN_BYTES)
            hasher = _block_hasher(root_seed).copy()
            hasher.update(tail)
            pooled = hasher.digest()
        start = SEED_BYTES * BUILTIN_SLOTS[builtin]
        bits.append(pooled[start : start + SEED_BYTES])
    return bits


def source_bits_batch(
    root_seed: int, tails: Sequence[bytes], sources: Sequence[tuple[str | None, str]]
) -> list[list[bytes]]:
    """:func:`source_bits` of each tail, as columns: one list per source, one item per tail
    (a batch of per-sample blocks: the digests taken in one loop).

    >>> tails = [encode_key(("sample", index)) for index in range(3)]
    >>> sources = [("torch", "torch"), (None, "mine")]
    >>> columns = source_bits_batch(0, tails, sources)
    >>> [list(row) for row in zip(*columns)] == [source_bits(0, tail, sources) for tail in tails]
    True
    """
    if any(builtin is None for builtin, _ in sources):  # a registered generator: its own digest
        rows = [source_bits(root_seed, tail, sources) for tail in tails]
        return [list(column) for column in zip(*rows, strict=True)] or [[] for _ in sources]
    copy = _block_hasher(root_seed).copy
    digests = []
    for tail in tails:
        hasher = copy()
        hasher.update(tail)
        digests.append(hasher.digest())
    starts = [SEED_BYTES * BUILTIN_SLOTS[builtin] for builtin, _ in sources]  # type: ignore[index]
    return [[digest[start : start + SEED_BYTES] for digest in digests] for start in starts]


def slot(bits: bytes, source: str) -> bytes:
    """The 16 bytes of a built-in source (``"random"``, ``"numpy"``, ``"torch"``,
    ``"accelerator"``) in a 64-byte digest."""
    start = SEED_BYTES * BUILTIN_SLOTS[source]
    return bits[start : start + SEED_BYTES]


def philox_seed(bits: bytes) -> int:
    """The 64-bit seed of a Philox generator (CUDA, other accelerators): the low 64 bits.

    It is also what ``torch.cuda.initial_seed()`` reports inside a block (the seed is the
    stream there); ``torch.initial_seed()`` reports its low 63 bits (see ``torch_cpu_state``).
    """
    return int.from_bytes(bits[:8], "little")


def seed_sequence(bits: bytes) -> np.random.SeedSequence:
    """The ``SeedSequence`` a NumPy ``Generator`` is built from: all 128 bits."""
    return np.random.SeedSequence(int.from_bytes(bits, "little"))


def _public_expansion(bits: bytes) -> np.ndarray:
    """312 outputs of a PCG64 whose state is ``bits`` (little-endian) and increment fixed."""
    generator = np.random.PCG64()
    generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(bits, "little"), "inc": PCG_INCREMENT},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return generator.random_raw(MT_WORDS // 2)


#: The in-place PCG64 of ``_fast`` (a thread-local generator each); checked against the public
#: expansion, and used only while the switch is on.
_fast_expansion = InPlaceExpansion(MT_WORDS // 2, _public_expansion)


def mt_words(bits: bytes) -> np.ndarray:
    """The 624-word Mersenne Twister key (uint32) that 128 bits give.

    >>> key = mt_words(bytes(range(16)))
    >>> key.shape, key.dtype == np.uint32, int(key[0]) == MT_FIRST_WORD
    ((624,), True, True)
    >>> bool((key == mt_words(bytes(range(16)))).all())
    True
    """
    raw = _fast_expansion.outputs(bits, PCG_INCREMENT)
    if raw is None:
        # Low then high half of each output, whatever the byte order of this machine.
        raw = _public_expansion(bits).astype("<u8", copy=False)
        words = raw.view("<u4").astype(np.uint32, copy=False)
    else:
        words = raw.view(_UINT32)  # little-endian here
    words[0] = MT_FIRST_WORD
    return words


def mt_keys(bits: Sequence[bytes]) -> np.ndarray:
    """:func:`mt_words` of each item of ``bits``, as the rows of one array (``len(bits)`` by
    624, uint32): a batch of keys derived at once (``ReproducibleBlock.prepare``).

    >>> keys = mt_keys([bytes(16), bytes(range(16))])
    >>> keys.shape, bool((keys[1] == mt_words(bytes(range(16)))).all())
    ((2, 624), True)
    """
    raw = _fast_expansion.outputs_many(bits, PCG_INCREMENT)
    if raw is None:
        keys = np.empty((len(bits), MT_WORDS), np.uint32)
        for row, item in zip(keys, bits, strict=True):
            row[:] = mt_words(item)
        return keys
    keys = raw.view(np.uint32)  # little-endian here: low then high half of each output
    keys[:, 0] = MT_FIRST_WORD
    return keys


def mt_image(bits: bytes, before: bytes = b"", after: bytes = b"") -> bytes:
    """``before``, :func:`mt_words` as the bytes of 624 uint32 in this machine's byte order (what
    the C states of Python's and NumPy's Mersenne Twisters hold), then ``after``.

    >>> mt_image(bytes(16), b"<", b">") == b"<" + mt_words(bytes(16)).tobytes() + b">"
    True
    """
    raw = _fast_expansion.outputs(bits, PCG_INCREMENT)
    if raw is None:
        return before + mt_words(bits).tobytes() + after
    # Little-endian here: the first word, then the rest of the outputs' bytes as they are.
    return before + MT_FIRST_WORD.to_bytes(4, "little") + raw.tobytes()[4:] + after
