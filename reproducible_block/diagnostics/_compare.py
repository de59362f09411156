"""Finding the first difference between two results, with its path and its size.

Results are tensors, NumPy arrays, numbers, str/bytes/None, and lists, tuples, dicts and
dataclasses of those. Equal means equal values and equal types, dtypes and shapes; NaN equals NaN
in the same place (a function that returns NaN every time is deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from reproducible_block._support.errors import ReproducibleBlockTypeError

__all__ = ["Difference", "Mismatch", "first_difference", "mismatch"]

_NUMBERS = (bool, int, float, complex, np.bool_, np.number)
_PLAIN = (str, bytes, type(None))
_MAX_SHOWN = 80


@dataclasses.dataclass(frozen=True)
class Difference:
    """Where two results first differ and how."""

    #: The path from the result to the element, e.g. ``[1]['logits'][3, 0]`` ("" for the result).
    path: str
    #: What differs, e.g. ``0.25 vs 0.5`` or ``shape (2, 3) vs (2, 4)``.
    description: str
    #: The absolute difference of the first differing numbers, if numbers differ.
    magnitude: float | None = None
    #: For arrays and tensors: how many elements differ, of how many, and the largest difference.
    summary: str = ""


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """How two arrays or tensors of one dtype and shape differ, element by element.

    ``str()`` is the one summary every diagnostic prints: "3 of 8 elements differ, largest
    absolute difference 0.25" (no largest difference for booleans and other non-numbers).
    """

    #: How many elements differ (NaN equals NaN in the same place).
    differing: int
    #: How many elements each holds.
    elements: int
    #: The largest absolute difference of the differing elements (0.0 when none differ); None
    #: for booleans and other values that are not numbers.
    largest: float | None
    #: The index of the first differing element, or None when none differ.
    first_index: tuple[int, ...] | None

    def __str__(self) -> str:
        text = f"{self.differing:,} of {self.elements:,} elements differ"
        if self.largest is None:
            return text
        return text + f", largest absolute difference {self.largest:.3g}"


def mismatch(first: torch.Tensor | np.ndarray, second: torch.Tensor | np.ndarray) -> Mismatch:
    """Count the elements where ``first`` and ``second`` (both tensors on one device, or both
    NumPy arrays without objects, of one dtype and shape) differ, and by how much at most.

    >>> import torch
    >>> found = mismatch(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 7.0]))
    >>> str(found) == "2 of 3 elements differ, largest absolute difference 4"
    True
    """
    if isinstance(first, torch.Tensor):
        return _tensor_mismatch(first, torch.as_tensor(second))
    return _array_mismatch(first, np.asarray(second))


def _tensor_mismatch(a: torch.Tensor, b: torch.Tensor) -> Mismatch:
    a, b = a.detach(), b.detach()
    if a.layout != torch.strided:
        a, b = a.to_dense(), b.to_dense()
    same = a == b
    if a.is_floating_point() or a.is_complex():
        same = same | (torch.isnan(a) & torch.isnan(b))
    differing = ~same
    count = int(differing.sum())
    first_index = tuple(int(i) for i in torch.nonzero(differing)[0]) if count else None
    largest: float | None = None
    if a.dtype != torch.bool:
        largest = 0.0
        if count:
            wide = torch.complex128 if a.is_complex() else torch.float64
            largest = float((a[differing].to(wide) - b[differing].to(wide)).abs().max())
    return Mismatch(count, a.numel(), largest, first_index)


def _array_mismatch(first: np.ndarray, second: np.ndarray) -> Mismatch:
    same = np.asarray(first == second)
    if first.dtype.kind in "fc":
        same = same | (np.isnan(first) & np.isnan(second))
    differing = ~same
    count = int(differing.sum())
    first_index = tuple(int(i) for i in np.argwhere(differing)[0]) if count else None
    largest: float | None = None
    if first.dtype.kind in "iufc":
        largest = 0.0
        if count:
            gaps = np.abs(first[differing].astype(np.complex128) - second[differing])
            largest = float(gaps.max())
    return Mismatch(count, first.size, largest, first_index)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _number_gap(first: Any, second: Any) -> float | None:
    """``|first - second|`` for numbers other than booleans, else None."""
    if isinstance(first, (bool, np.bool_)) or not isinstance(first, _NUMBERS):
        return None
    try:
        return float(abs(complex(first) - complex(second)))
    except OverflowError:  # ints beyond the range of floats
        return math.inf


def _same_number(first: Any, second: Any) -> bool:
    if first == second:
        return True
    both_nan = isinstance(first, (float, complex, np.inexact)) and (
        bool(np.isnan(first)) and bool(np.isnan(second))
    )
    return both_nan


def _index_text(index: tuple[int, ...]) -> str:
    return f"[{', '.join(str(i) for i in index)}]" if index else ""


def _array_difference(path: str, first: np.ndarray, second: np.ndarray) -> Difference | None:
    if first.dtype != second.dtype:
        return Difference(path, f"dtype {first.dtype} vs {second.dtype}")
    if first.shape != second.shape:
        return Difference(path, f"shape {first.shape} vs {second.shape}")
    if first.dtype == object:
        for index in np.ndindex(first.shape):
            found = _difference(path + _index_text(index), first[index], second[index])
            if found is not None:
                return found
        return None
    summary = mismatch(first, second)
    if summary.first_index is None:
        return None
    index = summary.first_index
    a, b = first[index].item(), second[index].item()
    return Difference(
        path + _index_text(index), f"{_show(a)} vs {_show(b)}", _number_gap(a, b), str(summary)
    )


def _tensor_difference(path: str, first: torch.Tensor, second: torch.Tensor) -> Difference | None:
    if first.dtype != second.dtype:
        return Difference(path, f"dtype {first.dtype} vs {second.dtype}")
    if first.shape != second.shape:
        return Difference(path, f"shape {tuple(first.shape)} vs {tuple(second.shape)}")
    if first.device != second.device:
        return Difference(path, f"device {first.device} vs {second.device}")
    summary = mismatch(first, second)
    if summary.first_index is None:
        return None
    index = summary.first_index
    a, b = first.detach(), second.detach()
    if a.layout != torch.strided:
        a, b = a.to_dense(), b.to_dense()
    x, y = a[index].item(), b[index].item()
    return Difference(
        path + _index_text(index), f"{_show(x)} vs {_show(y)}", _number_gap(x, y), str(summary)
    )


def _mapping_difference(
    path: str, first: Mapping[Any, Any], second: Mapping[Any, Any]
) -> Difference | None:
    only_first = [key for key in first if key not in second]
    only_second = [key for key in second if key not in first]
    if only_first or only_second:
        return Difference(
            path,
            f"keys only in the first: {_show(only_first)}, "
            f"only in the second: {_show(only_second)}",
        )
    for key in first:
        found = _difference(f"{path}[{key!r}]", first[key], second[key])
        if found is not None:
            return found
    return None


def _difference(path: str, first: Any, second: Any) -> Difference | None:
    if type(first) is not type(second):
        return Difference(path, f"type {type(first).__name__} vs {type(second).__name__}")
    if isinstance(first, torch.Tensor):
        return _tensor_difference(path, first, second)
    if isinstance(first, np.ndarray):
        return _array_difference(path, first, second)
    if isinstance(first, _NUMBERS):
        if _same_number(first, second):
            return None
        return Difference(path, f"{_show(first)} vs {_show(second)}", _number_gap(first, second))
    if isinstance(first, _PLAIN):
        return None if first == second else Difference(path, f"{_show(first)} vs {_show(second)}")
    if isinstance(first, (list, tuple)):
        if len(first) != len(second):
            return Difference(path, f"length {len(first)} vs {len(second)}")
        for index, (a, b) in enumerate(zip(first, second, strict=True)):
            found = _difference(f"{path}[{index}]", a, b)
            if found is not None:
                return found
        return None
    if isinstance(first, Mapping):
        return _mapping_difference(path, first, second)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        for field in dataclasses.fields(first):
            found = _difference(
                f"{path}.{field.name}", getattr(first, field.name), getattr(second, field.name)
            )
            if found is not None:
                return found
        return None
    return _other_difference(path, first, second)


def _other_difference(path: str, first: Any, second: Any) -> Difference | None:
    has_equality = getattr(type(first), "__eq__", None) is not object.__eq__
    equal = first == second if has_equality else None
    if not isinstance(equal, (bool, np.bool_)):
        raise ReproducibleBlockTypeError(
            f"cannot compare the two results at result{path}: {type(first).__name__} "
            f"{_show(first)} has no value equality. Return tensors, NumPy arrays, numbers, "
            "str/bytes/None, or lists, tuples, dicts and dataclasses of those "
            "(for a model, return its state_dict() or its outputs)."
        )
    return None if equal else Difference(path, f"{_show(first)} vs {_show(second)}")


def first_difference(first: object, second: object) -> Difference | None:
    """The first place where ``first`` and ``second`` differ, or None if they are equal.

    >>> import torch
    >>> found = first_difference({"x": torch.zeros(2, 2)}, {"x": torch.eye(2)})
    >>> found.path == "['x'][0, 0]" and found.magnitude == 1.0
    True
    >>> first_difference([1.0, float("nan")], [1.0, float("nan")]) is None
    True
    """
    return _difference("", first, second)
