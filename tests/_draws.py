"""Draw helpers shared by the tests: one draw function per managed source, and a snapshot of all."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch


def draw_python() -> list[float]:
    return [random.random() for _ in range(3)]


def draw_numpy() -> list[float]:
    return np.random.rand(3).tolist()


def draw_torch() -> list[float]:
    return torch.rand(3).tolist()


BUILTIN_DRAWS: dict[str, Callable[[], list[float]]] = {
    "random": draw_python,
    "numpy": draw_numpy,
    "torch": draw_torch,
}


def draw_all() -> dict[str, list[float]]:
    """One draw from each built-in global source."""
    return {name: draw() for name, draw in BUILTIN_DRAWS.items()}


def recipe_seed(seed: int) -> None:
    """The usual recipe, by hand: what set_seed must be equivalent to."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
