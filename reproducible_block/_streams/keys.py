"""Block keys: what a key may be (its encoding is a derivation rule: see ``_derivation``).

A key is a non-negative int, a str, or a flat tuple of those, e.g. ``("epoch", 3)``. ``1``, ``"1"``
and ``(1,)`` are three different keys.
"""

from __future__ import annotations

import numpy as np

from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = ["MAX_KEY_INT", "MAX_KEY_STR_LENGTH", "MAX_KEY_TUPLE_LENGTH", "BlockKey", "validate_key"]

KeyPart = int | str
BlockKey = int | str | tuple[KeyPart, ...]

MAX_KEY_INT = 2**64 - 1
MAX_KEY_STR_LENGTH = 4096
MAX_KEY_TUPLE_LENGTH = 32

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
        return str(part)  # a str subclass (NumPy's np.str_) is the same key as the plain str
    if callable(part):
        raise ReproducibleBlockTypeError(
            f"block key{where} is the callable {part!r}: ReproducibleBlock needs a key. "
            "Write @ReproducibleBlock(key), not @ReproducibleBlock."
        )
    raise ReproducibleBlockTypeError(
        f"block key{where} is {type(part).__name__} {part!r}; allowed: {_ALLOWED}."
    )


def validate_key(key: object) -> BlockKey:
    """Return ``key`` normalised (NumPy integers become int, str subclasses str), or raise.

    >>> validate_key(("epoch", 3))
    ('epoch', 3)
    >>> validate_key(-1)
    Traceback (most recent call last):
    ...
    reproducible_block.ReproducibleBlockValueError: block key is -1, out of range; ...
    """
    if type(key) is tuple and 0 < len(key) <= MAX_KEY_TUPLE_LENGTH:
        # The common case, checked without building anything: plain int and str parts.
        for part in key:
            kind = type(part)
            if not (
                (kind is int and 0 <= part <= MAX_KEY_INT)
                or (kind is str and len(part) <= MAX_KEY_STR_LENGTH)
            ):
                break
        else:
            return key
    if isinstance(key, tuple):
        if not key:
            raise ReproducibleBlockValueError(f"block key is the empty tuple; allowed: {_ALLOWED}.")
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
