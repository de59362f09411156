"""get_rng_state/load_rng_state: every stream resumes exactly, through torch.save and torch.load."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
import torch

from reproducible_block import (
    NotSeededError,
    ReproducibleBlock,
    get_rng_state,
    load_rng_state,
    register_generator,
    set_seed,
    unregister_generator,
)
from reproducible_block._sources.registry import registry
from reproducible_block._streams.root import peek_seed, replace_seed
from reproducible_block.compat import Reproducible_Block

from .._draws import GeneratorKind
from .._raw import managed_setup


def through_file(value: Any) -> Any:
    """``value`` after torch.save and torch.load(weights_only=True), the way checkpoints go."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        assert all(isinstance(key, str) for key in value)
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def test_every_stream_continues_where_it_was_saved() -> None:
    managed = managed_setup()
    states = through_file(get_rng_state())
    expected = managed.draw()  # what comes next, had nothing happened
    for _ in range(3):
        managed.draw()
    set_seed(99)  # another root, other states
    load_rng_state(states)
    assert managed.draw() == expected


def test_gaussian_caches_and_positions_come_back_exactly() -> None:
    managed = managed_setup()
    raw = managed.capture()
    states = through_file(get_rng_state())
    managed.draw()
    load_rng_state(states)
    python, numpy, torch_state, user_torch, user_numpy = managed.capture()
    assert python == raw[0]
    assert python[2] is not None
    assert numpy[0] == raw[1][0]
    assert np.array_equal(numpy[1], raw[1][1])
    assert numpy[2:] == raw[1][2:]
    assert numpy[3] == 1
    assert torch.equal(torch_state, raw[2])
    assert torch.equal(user_torch, raw[3])
    assert user_numpy == raw[4]


@pytest.mark.parametrize("bit_generator", ["PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937"])
def test_registered_numpy_generators_of_every_bit_generator(bit_generator: str) -> None:
    generator = np.random.Generator(getattr(np.random, bit_generator)(5))
    register_generator(generator, name="user")
    set_seed(3)
    generator.random(3)
    generator.integers(0, 10, 3, dtype=np.uint32)  # leaves a buffered 32-bit half
    states = through_file(get_rng_state())
    expected = generator.integers(0, 2**32, 4, dtype=np.uint32).tolist()
    generator.random(10)
    load_rng_state(states)
    assert generator.integers(0, 2**32, 4, dtype=np.uint32).tolist() == expected


def test_entries_hold_only_what_weights_only_loads() -> None:
    managed_setup()
    states = get_rng_state()
    allowed = (torch.Tensor, int, float, str, type(None))
    assert all(isinstance(leaf, allowed) for leaf in leaves(states))
    assert not any(isinstance(leaf, np.ndarray) for leaf in leaves(states))
    (entry,) = through_file(states)
    assert entry["format_version"] == 1
    assert entry["derivation"] == 1
    assert (entry["rank"], entry["world_size"], entry["open_blocks"]) == (0, 1, [])
    assert list(entry["sources"]) == list(registry.names())
    assert entry["root"]["seed"] == 11


def test_blocks_and_compat_blocks_derive_the_same_after_a_load() -> None:
    set_seed(21)
    with ReproducibleBlock("init"):
        block_expected = torch.rand(3)
    with Reproducible_Block(block_seed=4, reset_state_after=True):
        compat_expected = (random.random(), np.random.rand(), torch.rand(3))
    states = through_file(get_rng_state())
    set_seed(22)
    load_rng_state(states)
    with ReproducibleBlock("init"):
        assert torch.equal(torch.rand(3), block_expected)
    with Reproducible_Block(block_seed=4, reset_state_after=True):
        compat = (random.random(), np.random.rand(), torch.rand(3))
    assert compat[:2] == compat_expected[:2]
    assert torch.equal(compat[2], compat_expected[2])


def test_a_state_saved_before_set_seed_restores_no_root() -> None:
    replace_seed(None)
    states = through_file(get_rng_state())
    set_seed(5)
    load_rng_state(states)
    assert peek_seed() is None
    with pytest.raises(NotSeededError), ReproducibleBlock("x"):
        pass  # pragma: no cover - entering raises


def test_the_root_is_saved_as_its_seed_alone() -> None:
    register_generator(torch.Generator(), name="gone")
    set_seed(8)
    unregister_generator("gone")
    (entry,) = get_rng_state()
    assert entry["root"] == {"seed": 8}
    assert "gone" not in entry["sources"]
    set_seed(9)
    load_rng_state([entry])
    assert peek_seed() == 8


def test_a_decorated_training_function_resumes_inside_its_block() -> None:
    set_seed(4)
    saved: dict[str, Any] = {}

    @ReproducibleBlock("train")
    def train(steps: int, resume: dict[str, Any] | None = None) -> list[float]:
        if resume is not None:
            load_rng_state(resume["rng"])
        start = 0 if resume is None else resume["step"]
        losses = []
        for step in range(start, steps):
            if step == 3 and resume is None:
                saved.update(through_file({"step": step, "rng": get_rng_state()}))
            losses.append(torch.rand(()).item() + random.random())
        return losses

    full = train(6)
    caller_expected = torch.rand(2)
    set_seed(4)
    assert train(6, resume=saved) == full[3:]
    assert torch.equal(torch.rand(2), caller_expected)  # the caller's stream is its own again
    assert saved["rng"][0]["open_blocks"] == ["ReproducibleBlock('train')"]


def test_each_generator_kind_comes_back_to_its_saved_state(generator_kind: GeneratorKind) -> None:
    set_seed(3)
    generator_kind.draw()
    saved, states = generator_kind.state(), through_file(get_rng_state())
    expected = generator_kind.draw()
    set_seed(4)
    generator_kind.draw()
    load_rng_state(states)
    assert generator_kind.state() == saved
    assert generator_kind.draw() == expected
