"""Block keys: what a key may be, and its injective encoding into 32-bit words.

A key is a non-negative int, a str, or a flat tuple of those, e.g. ``("epoch", 3)``. The encoding
is type-tagged and length-prefixed, so distinct keys always give distinct words: ``1``, ``"1"``
and ``(1,)`` are three different keys. Its length depends on the key's size (a few words), never
on its value, so key ``10**12`` costs what key ``1`` costs.
"""

from __future__ import annotations

import numpy as np

from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError

__all__ = ["MAX_KEY_INT", "MAX_KEY_STR_LENGTH", "MAX_KEY_TUPLE_LENGTH", "BlockKey", "encode_key",
           "encode_name", "encode_per_rank", "validate_and_encode", "validate_key"]

KeyPart = int | str
BlockKey = int | str | tuple[KeyPart, ...]

MAX_KEY_INT = 2**64 - 1
MAX_KEY_STR_LENGTH = 4096
MAX_KEY_TUPLE_LENGTH = 32

_TAG_INT = 1
_TAG_STR = 2
_TAG_TUPLE = 3
_TAG_RANK = 4
_WORD = 0xFFFFFFFF
_ALLOWED = (
    "a non-negative int (at most 2**64 - 1), a str (at most 4096 characters), "
    "or a non-empty flat tuple of those (at most 32 items), e.g. ('epoch', 3)"
)


def _validate_part(part: object, where: str) -> KeyPart:
    if isinstance(part, (bool, np.bool_)):
        raise ReproducibleBlockTypeError(
            f"block key{where} is the bool {part!r}; allowed: {_ALLOWED}. "
            "Use an int or a str if you meant a key."
        )
    if isinstance(part, (int, np.integer)):
        value = int(part)
        if value < 0 or value > MAX_KEY_INT:
            raise ReproducibleBlockValueError(
                f"block key{where} is {value}, out of range; allowed: {_ALLOWED}. "
                "For larger identifiers use a str or a tuple of ints."
            )
        return value
    if isinstance(part, str):
        if len(part) > MAX_KEY_STR_LENGTH:
            raise ReproducibleBlockValueError(
                f"block key{where} is a str of {len(part)} characters; allowed: {_ALLOWED}. "
                "Use a shorter name, or a tuple of short parts."
            )
        return part
    if callable(part):
        raise ReproducibleBlockTypeError(
            f"block key{where} is the callable {part!r}: ReproducibleBlock needs a key. "
            "Write @ReproducibleBlock(key), not @ReproducibleBlock."
        )
    raise ReproducibleBlockTypeError(
        f"block key{where} is {type(part).__name__} {part!r}; allowed: {_ALLOWED}."
    )


def validate_key(key: object) -> BlockKey:
    """Return ``key`` normalised (NumPy integers become int), or raise a clear error.

    >>> validate_key(("epoch", 3))
    ('epoch', 3)
    >>> validate_key(-1)
    Traceback (most recent call last):
    ...
    reproducible_block._errors.ReproducibleBlockValueError: block key is -1, out of range; ...
    """
    if isinstance(key, tuple):
        if not key:
            raise ReproducibleBlockValueError(
                f"block key is the empty tuple; allowed: {_ALLOWED}."
            )
        if len(key) > MAX_KEY_TUPLE_LENGTH:
            raise ReproducibleBlockValueError(
                f"block key is a tuple of {len(key)} items; allowed: {_ALLOWED}."
            )
        parts: list[KeyPart] = []
        for index, part in enumerate(key):
            if isinstance(part, tuple):
                raise ReproducibleBlockTypeError(
                    f"block key item {index} is a nested tuple {part!r}; allowed: {_ALLOWED}. "
                    "Flatten it: ('a', 1, 'b', 2) instead of (('a', 1), ('b', 2))."
                )
            parts.append(_validate_part(part, f" item {index}"))
        return tuple(parts)
    return _validate_part(key, "")


def _encode_part(part: KeyPart, out: list[int]) -> None:
    if isinstance(part, int):
        words = []
        value = part
        while True:
            words.append(value & _WORD)
            value >>= 32
            if not value:
                break
        out.append(_TAG_INT)
        out.append(len(words))
        out.extend(words)
    else:
        data = part.encode("utf-8", "surrogatepass")
        out.append(_TAG_STR)
        out.append(len(data))
        padded = data + b"\0" * (-len(data) % 4)
        out.extend(int.from_bytes(padded[i : i + 4], "little") for i in range(0, len(padded), 4))


def encode_key(key: BlockKey) -> tuple[int, ...]:
    """Encode a validated key into 32-bit words, injectively.

    >>> encode_key(1) != encode_key("1") != encode_key((1,))
    True
    >>> len(encode_key(10**12)) - len(encode_key(1))
    1
    """
    out: list[int] = []
    if isinstance(key, tuple):
        out.append(_TAG_TUPLE)
        out.append(len(key))
        for part in key:
            _encode_part(part, out)
    else:
        _encode_part(key, out)
    return tuple(out)


_plain_cache: dict[object, tuple[BlockKey, tuple[int, ...]]] = {}
_PLAIN_CACHE_SIZE = 1024


def validate_and_encode(key: object) -> tuple[BlockKey, tuple[int, ...]]:
    """``validate_key`` then ``encode_key``, remembered for plain str and int keys.

    Only keys of exact type ``str`` or ``int`` are remembered (``True == 1``, so a bool must never
    hit the entry of ``1``); the memory is bounded.
    """
    kind = type(key)
    if kind is str or kind is int:
        found = _plain_cache.get((kind, key))
        if found is not None:
            return found
    checked = validate_key(key)
    result = (checked, encode_key(checked))
    if kind is str or kind is int:
        if len(_plain_cache) >= _PLAIN_CACHE_SIZE:
            _plain_cache.clear()
        _plain_cache[(kind, key)] = result
    return result


def encode_name(name: str) -> tuple[int, ...]:
    """Encode a source name the same injective way (used to give each source its own stream)."""
    out: list[int] = []
    _encode_part(name, out)
    return tuple(out)


def encode_per_rank(key_words: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Fold a global rank into an encoded key: distinct from every plain key and every other rank.

    No plain key's words start with the rank tag, and the rank is length-prefixed, so the result
    stays injective in (key, rank).

    >>> words = encode_key("dropout")
    >>> len({words, encode_per_rank(words, 0), encode_per_rank(words, 1)})
    3
    """
    out: list[int] = [_TAG_RANK]
    _encode_part(rank, out)
    out.extend(key_words)
    return tuple(out)
