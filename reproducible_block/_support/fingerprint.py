"""Digests of generator states: to compare two captures, and to print a short fingerprint.

A state is whatever a source's ``capture()`` returns: tuples of ints (Python ``random``), NumPy's
``("MT19937", key array, ...)``, torch byte tensors, a bit generator's nested dict, an int (the
CUDA seed queued before CUDA starts). They are encoded canonically (type-tagged, length-prefixed)
into BLAKE2b, so equal states give equal digests and the digest never depends on object identity.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from reproducible_block._support.errors import ReproducibleBlockTypeError
from reproducible_block._support.transforms import outside_functorch

__all__ = [
    "FINGERPRINT_LENGTH",
    "fingerprint",
    "plain_tensor",
    "same_state",
    "state_digest",
]

#: Hex characters in a printed fingerprint (48 bits: enough to tell states apart by eye).
FINGERPRINT_LENGTH = 12

_SCALARS = (bool, int, float, complex, str, bytes, type(None), np.generic)


_functorch = getattr(torch._C, "_functorch", None)
_is_wrapped: Any = getattr(_functorch, "is_functorch_wrapped_tensor", None)
_unwrapped: Any = getattr(_functorch, "get_unwrapped", None)


def plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """``value`` without its ``torch.func`` wrappers (under ``grad``, ``vmap``: the tensor
    they wrap, batch dimension included), whose bytes can be read; other tensors as they are."""
    if _is_wrapped is None or _unwrapped is None:  # pragma: no cover - a torch without functorch
        return value
    while _is_wrapped(value):
        value = _unwrapped(value)
    return value


def _feed_sparse(digest: Any, value: torch.Tensor) -> None:
    """A sparse tensor by its values: the coalesced COO indices and values (whatever its
    layout, and however its entries were accumulated), not its dense form."""
    coo = value.detach()
    if coo.layout is not torch.sparse_coo:
        coo = coo.to_sparse()  # CSR, CSC, BSR, BSC: the same entries as COO
    coo = coo.coalesce()
    digest.update(f"X{coo.dtype}{tuple(coo.shape)}".encode())
    _feed(digest, coo.indices())
    _feed(digest, coo.values())


def _feed(digest: Any, value: object) -> None:
    if isinstance(value, torch.Tensor):
        value = plain_tensor(value)
        with outside_functorch():  # under torch.func, ops on it would wrap it again
            if value.layout is not torch.strided:
                _feed_sparse(digest, value)
                return
            # The values, not the view: a conjugate or negative view's bits are its base's.
            flat = value.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
            digest.update(f"T{flat.dtype}{tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray) and value.dtype != object:
        digest.update(f"A{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, _SCALARS):
        digest.update(f"S{type(value).__qualname__}:{value!r};".encode())
    elif isinstance(value, (tuple, list)) and all(type(item) is int for item in value):
        # Fast path for Python random's 625 words: repr of a sequence of ints is canonical.
        digest.update(f"I{type(value).__qualname__}{value!r};".encode())
    elif isinstance(value, (tuple, list)):
        digest.update(f"L{type(value).__qualname__}{len(value)}(".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    else:
        try:
            encoded = pickle.dumps(value, protocol=4)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            raise ReproducibleBlockTypeError(
                f"cannot digest a generator state holding {type(value).__name__} {value!r}: "
                "states must be tensors, arrays, numbers, str, containers of those, or "
                "picklable objects. Make the source's capture() return such a value."
            ) from error
        digest.update(b"P")
        digest.update(encoded)


def state_digest(state: object) -> bytes:
    """A 32-byte digest of ``state``: equal states give equal digests.

    >>> import random
    >>> state_digest(random.getstate()) == state_digest(random.getstate())
    True
    """
    digest = hashlib.blake2b(digest_size=32)
    _feed(digest, state)
    return digest.digest()


def same_state(first: object, second: object) -> bool:
    """Whether two generator states are equal (arrays by dtype and values, tensors likewise).

    >>> import numpy as np
    >>> same_state({"key": np.arange(3)}, {"key": np.arange(3)})
    True
    >>> same_state({"key": np.arange(3)}, {"key": np.arange(3, dtype=np.int8)})
    False
    """
    return state_digest(first) == state_digest(second)


def fingerprint(state: object) -> str:
    """A short hex fingerprint of ``state`` for reports and logs.

    >>> import torch
    >>> len(fingerprint(torch.get_rng_state())) == FINGERPRINT_LENGTH
    True
    """
    return state_digest(state).hex()[:FINGERPRINT_LENGTH]
