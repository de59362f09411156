"""Draw helpers shared by the tests: one draw function per managed source, a snapshot of all, and
the generator kinds behind the ``generator_kind`` fixture."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from reproducible_block import register_generator


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


@dataclass(frozen=True)
class GeneratorKind:
    """One kind of generator a block manages, for the ``generator_kind`` fixture (conftest.py):
    ``draw()`` takes three numbers from it, ``state()`` reads its state as a comparable value."""

    name: str
    draw: Callable[[], list[float]]
    state: Callable[[], object]


def _registered_torch() -> GeneratorKind:
    generator = torch.Generator()
    register_generator(generator, name="user-torch")
    return GeneratorKind(
        "registered-torch",
        lambda: torch.rand(3, generator=generator).tolist(),
        lambda: generator.get_state().tolist(),
    )


def _registered_numpy() -> GeneratorKind:
    generator = np.random.default_rng(0)
    register_generator(generator, name="user-numpy")
    return GeneratorKind(
        "registered-numpy",
        lambda: generator.random(3).tolist(),
        lambda: generator.bit_generator.state,
    )


def _numpy_global_state() -> object:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return name, keys.tolist(), position, has_gauss, cached


# Every kind, as a factory: the registered kinds register their generator when made (in a test).
GENERATOR_KINDS: dict[str, Callable[[], GeneratorKind]] = {
    "numpy": lambda: GeneratorKind("numpy", draw_numpy, _numpy_global_state),
    "random": lambda: GeneratorKind("random", draw_python, random.getstate),
    "registered-numpy": _registered_numpy,
    "registered-torch": _registered_torch,
    "torch": lambda: GeneratorKind("torch", draw_torch, lambda: torch.get_rng_state().tolist()),
}
