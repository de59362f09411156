"""Raw access to every generator a test manages, through Python/NumPy/torch only (no library)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reproducible_block import register_generator, set_seed


@dataclass
class Managed:
    """The generators a test registers next to the built-in ones."""

    user_torch: torch.Generator
    user_numpy: np.random.Generator

    def draw(self) -> list[Any]:
        """One draw from every managed generator, Gaussian caches included."""
        return [
            random.random(),
            random.gauss(0.0, 1.0),
            np.random.rand(2).tolist(),
            float(np.random.standard_normal()),
            torch.rand(2).tolist(),
            torch.rand(2, generator=self.user_torch).tolist(),
            self.user_numpy.integers(0, 2**63, 2).tolist(),
        ]

    def capture(self) -> list[Any]:
        """Every state, read with the generators' own APIs."""
        return [
            random.getstate(),
            np.random.get_state(),
            torch.get_rng_state(),
            self.user_torch.get_state(),
            self.user_numpy.bit_generator.state,
        ]

    def restore(self, states: list[Any]) -> None:
        python, numpy, torch_state, user_torch, user_numpy = states
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(torch_state)
        self.user_torch.set_state(user_torch)
        self.user_numpy.bit_generator.state = user_numpy


def managed_setup(seed: int = 11) -> Managed:
    """Register one torch and one NumPy generator, seed, and draw once.

    The draw leaves Python's and NumPy's Gaussian caches filled: each draws Gaussians in pairs
    and keeps the second for the next call.
    """
    managed = Managed(torch.Generator(), np.random.Generator(np.random.PCG64(0)))
    register_generator(managed.user_torch, name="user-torch")
    register_generator(managed.user_numpy, name="user-numpy")
    set_seed(seed)
    managed.draw()
    return managed
