"""Argument and checkpoint-field checks, in the library's error voice.

Every message says what was given, what is allowed and what to do. Argument checks raise at the
call that got the bad value; checkpoint readers (``read_*``) raise
:class:`ReproducibleBlockValueError` naming the field (``states[0]['sources']['torch']...``),
always before anything is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = [
    "MAX_WORD",
    "check_bool",
    "check_int",
    "describe",
    "invalid",
    "read_fields",
    "read_float",
    "read_int",
    "read_tensor",
    "read_words",
    "words_tensor",
]

MAX_WORD = 2**32 - 1
_CHECKPOINT_HINT = (
    "The checkpoint is corrupted or truncated, or was not written by "
    "reproducible_block.get_rng_state(); load an intact one."
)


def describe(value: object) -> str:
    """A short description of a value for an error message.

    >>> describe(torch.zeros(2)), describe({"b": 1, "a": 2}), describe(7)
    ('a torch.float32 tensor of shape (2,)', "a dict with the keys ['a', 'b']", 'int 7')
    >>> describe(torch.zeros(2).to_sparse())
    'a torch.float32 tensor of shape (2,) (sparse_coo)'
    >>> "on the meta device" in describe(torch.zeros(2, device="meta"))
    True
    """
    if isinstance(value, torch.Tensor):
        text = f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        if value.layout != torch.strided:
            text += f" ({str(value.layout).removeprefix('torch.')})"
        if value.is_meta:
            text += " (on the meta device, without data)"
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            text += f" (a {type(value).__name__})"
        return text
    if isinstance(value, dict):
        return f"a dict with the keys {sorted(map(str, value))}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_bool(value: object, name: str, meaning: str = "") -> bool:
    """``value`` if it is True or False, else a :class:`ReproducibleBlockTypeError`.

    ``meaning`` (a sentence) says what the flag does, for the message.
    """
    if value is True or value is False:
        return value
    raise ReproducibleBlockTypeError(
        f"{name} must be True or False; got {describe(value)}." + (f" {meaning}" if meaning else "")
    )


def check_int(
    value: object,
    name: str,
    low: int = 0,
    high: int | None = None,
    advice: str = "",
    *,
    allowed: str | None = None,
    read: bool = False,
) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no upper bound), else an error.

    The one integer check of arguments: NumPy integers are ints, a bool (Python's or NumPy's)
    is not. A wrong type is a :class:`ReproducibleBlockTypeError` (a
    :class:`ReproducibleBlockValueError` with ``read``, for a value read back from a pickle or
    the environment rather than passed), a number out of range a
    :class:`ReproducibleBlockValueError`. The message says ``name`` must be ``allowed`` (by
    default the range), what was given, then ``advice`` (a sentence: what to do).

    >>> check_int(np.uint8(7), "seed", 0, 255)
    7
    >>> check_int(-1, "worker_id", advice="Let the DataLoader call it.")
    Traceback (most recent call last):
    ...
    reproducible_block.ReproducibleBlockValueError: worker_id must be a non-negative int; got -1. Let the DataLoader call it.
    """  # noqa: E501
    if allowed is None:
        if high is not None:
            allowed = f"an int from {low} to {high}"
        else:
            allowed = "a non-negative int" if low == 0 else f"an int of at least {low}"
    tail = f" {advice}" if advice else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        error = ReproducibleBlockValueError if read else ReproducibleBlockTypeError
        raise error(f"{name} must be {allowed}; got {type(value).__name__} {shown}.{tail}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise ReproducibleBlockValueError(f"{name} must be {allowed}; got {number}.{tail}")
    return number


def invalid(where: str, value: object, expected: str) -> ReproducibleBlockValueError:
    """The error for a checkpoint field that is not what ``get_rng_state()`` writes."""
    return ReproducibleBlockValueError(
        f"{where} is {describe(value)}; expected {expected}. {_CHECKPOINT_HINT}"
    )


def read_fields(value: object, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a dict with exactly the keys ``names``."""
    if not isinstance(value, dict) or set(value) != set(names):
        raise invalid(where, value, f"a dict with the keys {sorted(names)}")
    return value


def read_int(value: object, where: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (a bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise invalid(where, value, f"an int from {low} to {high}")
    return value


def read_float(value: object, where: str) -> float:
    """``value`` as a float (not an int, not a bool)."""
    if not isinstance(value, float):
        raise invalid(where, value, "a float")
    return value


def read_tensor(value: object, where: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
    """A dense 1-D tensor of ``dtype`` and ``numel`` elements, copied to the CPU.

    Refuses tensors without data (``map_location="meta"``), sparse and other layouts, and
    tensor subclasses, so that no torch error escapes a checkpoint check.
    """
    if (
        not isinstance(value, torch.Tensor)
        or type(value) not in (torch.Tensor, torch.nn.Parameter)
        or value.layout != torch.strided
        or value.is_meta
        or value.dtype != dtype
        or value.dim() != 1
        or value.numel() != numel
    ):
        raise invalid(where, value, f"a dense 1-D {dtype} tensor of {numel} elements with data")
    try:
        return value.detach().to("cpu", copy=True).contiguous()
    except RuntimeError as error:  # pragma: no cover - a device tensor that cannot be read
        raise invalid(where, value, f"a tensor that can be copied to the CPU ({error})") from None


def words_tensor(words: Any) -> torch.Tensor:
    """Mersenne Twister words as an int64 tensor, the checkpoint form (torch lacks full uint32)."""
    return torch.from_numpy(np.asarray(words, dtype=np.int64).copy())


def read_words(value: object, where: str, count: int) -> np.ndarray:
    """``count`` Mersenne Twister words from a :func:`words_tensor`, as uint32."""
    tensor = read_tensor(value, where, torch.int64, count)
    if int(tensor.min()) < 0 or int(tensor.max()) > MAX_WORD:
        raise invalid(where, value, f"{count} values from 0 to 2**32 - 1")
    return tensor.numpy().astype(np.uint32)
