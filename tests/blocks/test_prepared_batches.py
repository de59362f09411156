"""``ReproducibleBlock.prepare``: a batch of keys derived at once gives the states and streams
that deriving each key on entry gives, with the fast paths on and off."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from reproducible_block import ReproducibleBlock, register_generator, set_seed
from reproducible_block._blocks import states
from reproducible_block._sources.registry import registry
from reproducible_block._sources.torch_random import torch_cpu_state, torch_cpu_states
from reproducible_block._streams.derivation import mt_keys, mt_words
from tests._fast_switch import fast_paths

BITS = [bytes(range(16)), bytes(16), b"\xff" * 16, bytes(range(100, 116))]


def _same(first: object, second: object) -> bool:
    if isinstance(first, torch.Tensor):
        return isinstance(second, torch.Tensor) and torch.equal(first, second)
    return first == second


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
def test_a_batch_of_keys_is_each_key_derived_alone(fast: bool) -> None:
    with fast_paths(fast):
        keys = mt_keys(BITS)
        assert keys.shape == (len(BITS), 624)
        assert all((row == mt_words(item)).all() for row, item in zip(keys, BITS, strict=True))
        for source in registry.builtin():
            batch = source.from_bits_batch(BITS)
            alone = [source.from_bits(item) for item in BITS]
            assert all(_same(a, b) for a, b in zip(batch, alone, strict=True)), source


def test_batched_torch_states_are_tensors_of_their_own() -> None:
    # torch's set_state reads a state from the start of its storage: a view at an offset
    # would install another key (or crash), so every state must start its own storage.
    generator = torch.Generator()
    for state, item in zip(torch_cpu_states(BITS), BITS, strict=True):
        assert state.storage_offset() == 0
        generator.set_state(state)
        assert torch.equal(generator.get_state(), torch_cpu_state(item))


def _draws(sources: tuple[str, ...] | None = None) -> list[float]:
    """A draw from each of the built-in generators among ``sources`` (None: all three)."""
    draws = {
        "random": random.random,
        "numpy": lambda: float(np.random.random()),
        "torch": lambda: float(torch.rand(())),
    }
    return [draw() for name, draw in draws.items() if sources is None or name in sources]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
@pytest.mark.parametrize("sources", [None, ("torch",), ("random", "numpy")])
def test_prepared_blocks_draw_what_unprepared_blocks_draw(
    fast: bool, sources: tuple[str, ...] | None
) -> None:
    set_seed(3)
    keys = [("sample", index) for index in range(6)] + ["train", ("sample", 2)]  # a repeat
    with fast_paths(fast):
        states.clear_cache()
        expected = []
        for key in keys:
            with ReproducibleBlock(key, sources=sources):
                expected.append(_draws(sources))
        states.clear_cache()
        ReproducibleBlock.prepare(keys, sources=sources)
        assert states.cached_states() == len(set(keys))
        got = []
        for key in keys:
            with ReproducibleBlock(key, sources=sources):
                got.append(_draws(sources))
    assert got == expected


def test_prepare_folds_the_worker_and_rank_as_blocks_do() -> None:
    set_seed(5)
    keys = [("sample", index) for index in range(3)]
    states.clear_cache()
    ReproducibleBlock.prepare(keys, per_worker=True, per_rank=True)
    assert states.cached_states() == 3
    prepared = []
    for key in keys:
        with ReproducibleBlock(key, per_worker=True, per_rank=True):
            prepared.append(_draws())
    assert states.cached_states() == 3  # every entry found its prepared states
    states.clear_cache()
    derived = []
    for key in keys:
        with ReproducibleBlock(key, per_worker=True, per_rank=True):
            derived.append(_draws())
    assert prepared == derived


def test_prepare_derives_registered_generators_too() -> None:
    mine = torch.Generator()
    register_generator(mine, name="mine")  # the autouse fixture unregisters it
    set_seed(1)
    states.clear_cache()
    with ReproducibleBlock(("sample", 1)):
        expected = torch.rand(3, generator=mine)
    states.clear_cache()
    ReproducibleBlock.prepare([("sample", 0), ("sample", 1)])
    with ReproducibleBlock(("sample", 1)):
        assert torch.equal(torch.rand(3, generator=mine), expected)


def test_prepare_keeps_only_what_the_cache_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(states, "CACHE_SIZE", 4)
    set_seed(0)
    states.clear_cache()
    ReproducibleBlock.prepare([("sample", index) for index in range(10)])
    assert states.cached_states() == 4
    with ReproducibleBlock(("sample", 9)):  # among the last four: no derivation on entry
        pass
    assert states.cached_states() == 4


def test_prepare_checks_every_key_before_it_derives_any() -> None:
    set_seed(0)
    states.clear_cache()
    with pytest.raises(TypeError, match="bool"):
        ReproducibleBlock.prepare([("sample", 0), ("sample", True)])
    assert states.cached_states() == 0
    with pytest.raises(TypeError, match="per_worker"):
        ReproducibleBlock.prepare([("sample", 0)], per_worker=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sources"):
        ReproducibleBlock.prepare([("sample", 0)], sources=())
    assert states.cached_states() == 0


def test_prepare_changes_no_generator() -> None:
    set_seed(0)
    before = (random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state())
    ReproducibleBlock.prepare([("sample", index) for index in range(5)])
    after = (random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state())
    assert before[0] == after[0]
    assert (before[1]["state"]["key"] == after[1]["state"]["key"]).all()
    assert torch.equal(before[2], after[2])


def test_a_prepared_key_is_not_the_key_with_a_bool_in_its_place() -> None:
    set_seed(0)
    ReproducibleBlock.prepare([("sample", 1), ("sample", 0)])
    assert ReproducibleBlock(("sample", 1)).key == ("sample", 1)
    with pytest.raises(TypeError, match="bool"):  # True == 1, and hashes alike
        ReproducibleBlock(("sample", True))
    with pytest.raises(TypeError, match="bool"):
        ReproducibleBlock(("sample", False))
    with pytest.raises(TypeError, match="list"):  # unhashable: the usual message
        ReproducibleBlock(("sample", [1]))  # type: ignore[arg-type]
