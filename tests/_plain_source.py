"""User-defined generator kinds for the tests: plain data (all defaults), and one that fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reproducible_block import GeneratorSource


class PlainSource(GeneratorSource[Any]):
    """Keeps the defaults of GeneratorSource: its state is plain data, or is not."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def get_state(self) -> Any:
        return self.state

    def set_state(self, state: Any) -> None:
        self.state = state

    def from_bits(self, bits: bytes) -> Any:
        return {"seed": int.from_bytes(bits[:8], "little"), "words": [bits[8], bits[9]]}


class Unplugged(GeneratorSource[int]):
    """A generator whose device goes away: once ``plugged`` is False, setting its state fails."""

    def __init__(self) -> None:
        self.state = 0
        self.plugged = True

    def get_state(self) -> int:
        return self.state

    def set_state(self, state: int) -> None:
        if not self.plugged:
            raise OSError("device unplugged")
        self.state = state

    def from_bits(self, bits: bytes) -> int:
        return bits[0]


@dataclass
class EqualitySource(GeneratorSource[int]):
    """A source as users write one: a dataclass with eq=True, hence not hashable."""

    state: int = 0

    def get_state(self) -> int:
        return self.state

    def set_state(self, state: int) -> None:
        self.state = state

    def from_bits(self, bits: bytes) -> int:
        return bits[0]


class UnpluggedTorch(Unplugged):
    """An :class:`Unplugged` that stands in for torch's global generator (its slot), for the
    paths that change only the built-in generators: seed_worker, the compat reset."""

    slot = "torch"


def unplug_torch(monkeypatch: Any) -> UnpluggedTorch:
    """Make an unplugged :class:`UnpluggedTorch` the last built-in source, after Python's
    ``random`` and NumPy's global (which are then changed before it fails)."""
    from reproducible_block._sources.registry import registry

    python, numpy = registry.builtin()[:2]
    failing = UnpluggedTorch()
    failing.plugged = False
    monkeypatch.setattr(registry, "_builtin", (python, numpy, failing))
    return failing


def global_states() -> bytes:
    """Python's ``random``, NumPy's global and torch's CPU generator, as comparable bytes."""
    import pickle
    import random

    import numpy as np
    import torch

    return pickle.dumps(
        (random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state().tolist())
    )
