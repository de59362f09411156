"""What the block ledger reads of each Mersenne Twister in place (``twister_now``) equals what
a full ``save()`` gives (``twister_state``), with the fast paths on and off."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from reproducible_block import register_generator, unregister_generator
from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.registry import registry
from tests._fast_switch import fast_paths

DRAWS: list[Callable[[], object]] = [
    lambda: None,
    lambda: random.random(),
    lambda: random.gauss(0, 1),  # a cached Gaussian
    lambda: np.random.standard_normal(3),  # an odd count: NumPy caches one
    lambda: np.random.rand(700),  # past a twist
    lambda: torch.rand(5),
    lambda: torch.randn(1),  # torch caches a double normal
    lambda: torch.rand(700),
]


@pytest.fixture
def registered() -> Iterator[torch.Generator]:
    generator = torch.Generator()
    register_generator(generator, name="ledger-reads")
    try:
        yield generator
    finally:
        unregister_generator("ledger-reads")


def _twisters() -> list[GeneratorSource[object]]:
    return [source for source in registry.active() if source.mersenne_twister]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
def test_the_fields_read_in_place_are_those_of_a_full_save(
    fast: bool, registered: torch.Generator
) -> None:
    sources = _twisters()
    assert {"random", "numpy", "torch", "ledger-reads"} <= {source.name for source in sources}
    with fast_paths(fast):
        for draw in DRAWS:
            draw()
            torch.randn(1, generator=registered)
            for source in sources:
                assert source.twister_now() == source.twister_state(source.save()), source


def test_the_torch_engine_view_steps_aside_when_its_layout_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reproducible_block._fast import torch_cpu, views
    from reproducible_block._support import warnings as _warnings

    monkeypatch.setattr(_warnings, "_warned", {})
    monkeypatch.setattr(torch_cpu, "_engine_at", [])
    monkeypatch.setattr(views, "memory_view", lambda address, size: memoryview(bytearray(size)))
    generator = torch.Generator()
    with pytest.warns(RuntimeWarning, match="reading of torch's CPU generator"):
        assert torch_cpu.engine_view(generator) is None
    assert torch_cpu._engine_at == [None]  # looked for once


def test_the_torch_engine_view_follows_the_generator() -> None:
    from reproducible_block._fast import torch_cpu

    generator = torch.Generator()
    view = torch_cpu.engine_view(generator)
    assert view is not None  # the layout is the expected one here
    for size in (0, 3, 1000):
        torch.rand(size, generator=generator)
        torch.randn(1, generator=generator)
        assert view.twister_fields() == torch_cpu.twister_fields_of(generator.get_state())

    class Mine(torch.Generator):
        pass

    assert torch_cpu.engine_view(Mine()) is None  # a subclass may keep more: get_state()
