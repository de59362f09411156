"""A generator kind the library does not know, added by subclassing GeneratorSource.

The kind defined here stands for a CuPy-like generator object: it is not a torch or NumPy
generator, keeps its state as a counter and a key, and draws from its own formula. Registered
with register_generator, it must be isolated by blocks, seeded by set_seed, saved and loaded by
checkpoints (through a real torch.save / torch.load(weights_only=True)), with no library change.
"""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
import torch

from reproducible_block import (
    GeneratorSource,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    get_rng_state,
    load_rng_state,
    register_generator,
    registered_generators,
    set_seed,
    unregister_generator,
)
from reproducible_block._support.checks import invalid, read_fields, read_int
from tests._plain_source import PlainSource


class CounterGenerator:
    """A user's generator object: a key and a counter, each draw hashes (key, counter)."""

    def __init__(self) -> None:
        self.key = 0
        self.counter = 0

    def draw(self) -> int:
        self.counter += 1
        return random.Random((self.key << 64) | self.counter).getrandbits(32)


class CounterSource(GeneratorSource[tuple[int, int]]):
    """Manages a CounterGenerator: the whole user-side code of a new generator kind."""

    def __init__(self, generator: CounterGenerator) -> None:
        self.generator = generator

    def get_state(self) -> tuple[int, int]:
        return (self.generator.key, self.generator.counter)

    def set_state(self, state: tuple[int, int]) -> None:
        self.generator.key, self.generator.counter = state

    def from_bits(self, bits: bytes) -> tuple[int, int]:
        return (int.from_bytes(bits, "little"), 0)

    def to_checkpoint(self, state: tuple[int, int]) -> Any:
        return {"key": str(state[0]), "counter": state[1]}  # a 128-bit key does not fit in int64

    def from_checkpoint(self, data: object, where: str) -> tuple[int, int]:
        fields = read_fields(data, where, ("key", "counter"))
        if not isinstance(fields["key"], str) or not fields["key"].isdecimal():
            raise invalid(f"{where}['key']", fields["key"], "a decimal str")
        return (int(fields["key"]), read_int(fields["counter"], f"{where}['counter']", 0, 2**62))


@pytest.fixture
def counter() -> CounterGenerator:
    generator = CounterGenerator()
    register_generator(CounterSource(generator), name="counter")
    return generator


def test_set_seed_seeds_it_from_the_seed_and_its_name(counter: CounterGenerator) -> None:
    set_seed(1)
    first = [counter.draw() for _ in range(3)]
    set_seed(1)
    assert [counter.draw() for _ in range(3)] == first
    set_seed(2)
    assert [counter.draw() for _ in range(3)] != first


def test_blocks_isolate_it_and_give_the_caller_its_state_back(counter: CounterGenerator) -> None:
    set_seed(0)
    with ReproducibleBlock("augment"):
        inside = [counter.draw() for _ in range(3)]
    counter.draw()  # the caller draws in between
    caller = counter.counter
    with ReproducibleBlock("augment"):
        assert [counter.draw() for _ in range(3)] == inside
    assert counter.counter == caller
    with ReproducibleBlock("other"):
        assert [counter.draw() for _ in range(3)] != inside


def test_only_the_blocks_that_name_it_manage_it(counter: CounterGenerator) -> None:
    set_seed(0)
    with ReproducibleBlock("k", sources=("counter",)):
        named = counter.draw()
    before = counter.counter
    with ReproducibleBlock("k", sources=("torch",)):
        counter.draw()
    assert counter.counter == before + 1
    with ReproducibleBlock("k"):
        assert counter.draw() == named


def test_checkpoints_save_and_load_it(counter: CounterGenerator) -> None:
    set_seed(0)
    counter.draw()
    buffer = io.BytesIO()
    torch.save(get_rng_state(), buffer)
    expected = [counter.draw() for _ in range(3)]
    buffer.seek(0)
    states = torch.load(buffer, weights_only=True)
    assert states[0]["sources"]["counter"]["kind"] == f"{__name__}.CounterSource"
    load_rng_state(states)
    assert [counter.draw() for _ in range(3)] == expected


def test_its_checkpoint_checks_run_before_anything_changes(counter: CounterGenerator) -> None:
    set_seed(0)
    states = get_rng_state()
    states[0]["sources"]["counter"]["state"]["key"] = "not a number"
    torch_state = torch.get_rng_state()
    before = (counter.key, counter.counter)
    with pytest.raises(ReproducibleBlockValueError, match=r"\['counter'\]\['state'\]\['key'\]"):
        load_rng_state(states)
    assert (counter.key, counter.counter) == before
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_the_default_checkpoint_format_keeps_plain_states() -> None:
    source = PlainSource({"seed": 1, "words": [2, 3]})
    register_generator(source, name="plain")
    set_seed(0)
    saved = get_rng_state()
    source.state = {"seed": 9, "words": []}
    load_rng_state(saved)
    assert source.state == saved[0]["sources"]["plain"]["state"]
    assert set(source.state) == {"seed", "words"}


def test_the_default_checkpoint_format_refuses_what_weights_only_cannot_load() -> None:
    register_generator(PlainSource(object()), name="opaque")
    with pytest.raises(ReproducibleBlockTypeError, match=r"Override PlainSource.to_checkpoint"):
        get_rng_state()
    unregister_generator("opaque")
    source = PlainSource({"seed": 1})
    register_generator(source, name="plain")
    states = get_rng_state()
    states[0]["sources"]["plain"]["state"] = {3: "non-str key"}
    with pytest.raises(ReproducibleBlockValueError, match="plain data"):
        load_rng_state(states)
    assert source.state == {"seed": 1}


def test_a_source_is_registered_once_and_a_refusal_changes_nothing() -> None:
    source = PlainSource(0)
    register_generator(source, name="once")
    with pytest.raises(ReproducibleBlockValueError, match="already managed as 'once'"):
        register_generator(source, name="twice")
    assert source.name == "once"
    other = PlainSource(0)
    with pytest.raises(ReproducibleBlockValueError, match="already managed"):
        register_generator(other, name="once")
    assert other.name == ""
    assert registered_generators() == ("once",)


def test_built_in_sources_cannot_be_registered_again() -> None:
    from reproducible_block._sources.registry import registry

    with pytest.raises(ReproducibleBlockValueError, match="built-in source"):
        register_generator(registry.builtin()[0], name="python-again")


def test_a_kind_names_its_checkpoint_kind_after_its_class() -> None:
    assert CounterSource.checkpoint_kind == f"{__name__}.CounterSource"
    assert PlainSource.checkpoint_kind != CounterSource.checkpoint_kind
