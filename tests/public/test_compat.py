"""Reproducible_Block behaves exactly as torch-reproducible-block 0.0.1, checked against an oracle.

The oracle below is 0.0.1's documented behaviour written with raw calls: set_seed seeds the three
libraries and snapshots them; entering resets to the snapshot and makes `block_seed` rounds of
`random.randint(1, 10)`, `np.random.randint(1, 10)`, `torch.randint(1, 10, (1,))`; exit restores
the caller's state only with reset_state_after=True.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import Reproducible_Block, ReproducibleBlock
from tests._plain_source import global_states, unplug_torch


class Oracle:
    snapshot: tuple[Any, ...] = ()

    @classmethod
    def set_seed(cls, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        cls.snapshot = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    @classmethod
    @contextmanager
    def block(cls, block_seed: int, reset_state_after: bool = False) -> Iterator[None]:
        caller = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.setstate(cls.snapshot[0])
        np.random.set_state(cls.snapshot[1])
        torch.set_rng_state(cls.snapshot[2])
        for _ in range(block_seed):
            random.randint(1, 10)
            np.random.randint(1, 10)
            torch.randint(1, 10, (1,))
        yield
        if reset_state_after:
            random.setstate(caller[0])
            np.random.set_state(caller[1])
            torch.set_rng_state(caller[2])


def program(set_seed: Callable[[int], None], block: Callable[..., Any]) -> list[object]:
    """The package README's program shape: model sections in blocks, draws outside them."""
    out: list[object] = []
    set_seed(42)
    out.append(torch.rand(2))
    with block(64):
        out.append(torch.nn.Conv2d(3, 4, 2).weight.detach().clone())
        out.append(np.random.rand(2))
    out.append((random.random(), torch.rand(2)))  # continues from block 64's stream
    with block(44):
        out.append(torch.nn.Linear(4, 3).weight.detach().clone())
    with block(128, reset_state_after=True):
        out.append((torch.randn(3), random.randint(0, 100), np.random.randn(3)))
    out.append((torch.rand(2), np.random.rand(1), random.random()))
    with block(0):
        out.append(torch.rand(2))
    return out


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_same_program_gives_bit_identical_tensors() -> None:
    expected = program(Oracle.set_seed, Oracle.block)
    actual = program(Reproducible_Block.set_seed, Reproducible_Block)
    assert len(actual) == len(expected)
    assert all(_equal(a, e) for a, e in zip(actual, expected, strict=True))


def test_decorator_form_matches_the_with_form() -> None:
    @Reproducible_Block(block_seed=7)
    def init(width: int, *, bias: bool = True) -> torch.Tensor:
        return torch.nn.Linear(width, width, bias=bias).weight.detach().clone()

    Reproducible_Block.set_seed(1)
    decorated = init(3, bias=False)
    Oracle.set_seed(1)
    with Oracle.block(7):
        expected = torch.nn.Linear(3, 3, bias=False).weight.detach().clone()
    assert torch.equal(decorated, expected)
    assert init.__name__ == "init"


def test_compat_set_seed_also_roots_new_blocks() -> None:
    Reproducible_Block.set_seed(5)
    with ReproducibleBlock("new"):
        first = torch.rand(2)
    rb.set_seed(5)
    with ReproducibleBlock("new"):
        assert torch.equal(torch.rand(2), first)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, TypeError),
        ({"block_seed": None}, TypeError),
        ({"block_seed": 1.0}, TypeError),
        ({"block_seed": "a"}, TypeError),
        ({"block_seed": True}, TypeError),
        ({"block_seed": -1}, ValueError),
        ({"block_seed": 1, "reset_state_after": 1}, TypeError),
    ],
)
def test_where_0_0_1_asserted_or_misbehaved_we_raise(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        Reproducible_Block(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, rb.ReproducibleBlockError)


def test_entering_before_set_seed_raises_runtime_error() -> None:
    rb._streams.root.replace_seed(None)
    block = Reproducible_Block(block_seed=3)  # construction is fine (decorate at import time)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="set_seed"), block:
        pass  # pragma: no cover - never entered
    assert torch.equal(torch.get_rng_state(), state)


class SingleSlotOracle(Oracle):
    """0.0.1's reset_state_after: one saved state per block object, overwritten by each entry."""

    def __init__(self, block_seed: int) -> None:
        self.block_seed = block_seed
        self.initial: tuple[Any, ...] = ()

    def __enter__(self) -> None:
        self.initial = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.setstate(self.snapshot[0])
        np.random.set_state(self.snapshot[1])
        torch.set_rng_state(self.snapshot[2])
        for _ in range(self.block_seed):
            random.randint(1, 10)
            np.random.randint(1, 10)
            torch.randint(1, 10, (1,))

    def __exit__(self, *exc_info: object) -> None:
        random.setstate(self.initial[0])
        np.random.set_state(self.initial[1])
        torch.set_rng_state(self.initial[2])


def recursion(block: Any) -> list[object]:
    """A recursive function whose every call enters the same block object, drawing around."""
    out: list[object] = []

    def step(depth: int) -> None:
        with block:
            out.append(torch.rand(2))
            if depth:
                out.append(random.random())
                step(depth - 1)
                out.append(np.random.rand())
        out.append(torch.rand(1))

    step(2)
    return out


def test_a_recursive_block_with_reset_state_after_behaves_as_0_0_1() -> None:
    Oracle.set_seed(3)
    torch.rand(5)
    expected = recursion(SingleSlotOracle(4))
    Reproducible_Block.set_seed(3)
    torch.rand(5)
    actual = recursion(Reproducible_Block(block_seed=4, reset_state_after=True))
    assert all(_equal(a, e) for a, e in zip(actual, expected, strict=True))


def test_the_class_methods_and_reference_state_of_0_0_1() -> None:
    rb._streams.root.replace_seed(None)
    assert Reproducible_Block.reference_state is None
    Reproducible_Block.set_seed(42)
    reference = Reproducible_Block.reference_state
    assert reference is not None
    assert set(reference) == {"py", "np", "torch"}
    Oracle.set_seed(42)
    assert reference["py"] == Oracle.snapshot[0]
    assert torch.equal(reference["torch"], Oracle.snapshot[2])
    first = (random.random(), torch.rand(2), np.random.random())
    Reproducible_Block.reset_to_reference_state()
    again = (random.random(), torch.rand(2), np.random.random())
    assert first[0] == again[0]
    assert torch.equal(first[1], again[1])
    assert first[2] == again[2]


def test_set_reference_state_moves_the_reference_until_the_next_set_seed() -> None:
    Reproducible_Block.set_seed(1)
    torch.rand(3)
    Reproducible_Block.set_reference_state()
    captured = Reproducible_Block.get_random_state()
    with Reproducible_Block(block_seed=0):
        expected = torch.rand(2)
    Reproducible_Block.set_random_state(captured)
    assert torch.equal(torch.rand(2), expected)  # block 0 resets to the captured reference
    Reproducible_Block.set_seed(1)  # a new set_seed makes the seeded state the reference again
    with Reproducible_Block(block_seed=0):
        seeded = torch.rand(2)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(2), seeded)
    rb.set_seed(2)  # a new root from the new API drops the captured reference too
    assert torch.equal(
        Reproducible_Block.reference_state["torch"],  # type: ignore[index]
        torch.Generator().manual_seed(2).get_state(),
    )


def test_reset_to_reference_state_needs_a_seed() -> None:
    rb._streams.root.replace_seed(None)
    with pytest.raises(RuntimeError, match="set_seed"):
        Reproducible_Block.reset_to_reference_state()
    with pytest.raises(RuntimeError, match="set_seed"):
        Reproducible_Block.set_reference_state()


def test_a_decorated_function_pickles_by_reference() -> None:
    from tests._decorated import legacy_noise

    assert pickle.loads(pickle.dumps(legacy_noise)) is legacy_noise
    Reproducible_Block.set_seed(0)
    assert torch.equal(legacy_noise(), legacy_noise())


def test_reference_state_is_read_from_block_objects_and_assigned_as_in_0_0_1() -> None:
    Reproducible_Block.set_seed(3)
    block = Reproducible_Block(block_seed=2)
    from_block, from_class = block.reference_state, Reproducible_Block.reference_state
    assert from_block is not None
    assert from_class is not None
    assert from_block["py"] == from_class["py"]
    assert torch.equal(from_block["torch"], from_class["torch"])
    torch.rand(4)
    random.random()
    saved = Reproducible_Block.get_random_state()
    Reproducible_Block.reference_state = saved  # 0.0.1: a plain class attribute
    with block:
        inside = (torch.rand(2), random.random())
    Oracle.snapshot = (saved["py"], saved["np"], saved["torch"])
    with Oracle.block(2):
        assert torch.equal(torch.rand(2), inside[0])
        assert random.random() == inside[1]


@pytest.mark.parametrize("state", [None, {"py": 1}, [1, 2, 3]])
def test_assigning_another_value_as_reference_state_is_refused(state: object) -> None:
    Reproducible_Block.set_seed(3)
    with pytest.raises(TypeError, match=r"get_random_state\(\) returns"):
        Reproducible_Block.reference_state = state  # type: ignore[assignment]
    reference = Reproducible_Block.reference_state
    assert reference is not None
    assert torch.equal(reference["torch"], torch.Generator().manual_seed(3).get_state())


def test_the_reset_to_the_reference_state_is_all_or_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Reproducible_Block.set_seed(3)
    random.random()
    np.random.rand()
    unplug_torch(monkeypatch)  # fails after Python's random and NumPy's global are reset
    before = global_states()
    with pytest.raises(OSError, match="unplugged"):
        Reproducible_Block.reset_to_reference_state()
    assert global_states() == before
    with pytest.raises(OSError, match="unplugged"), Reproducible_Block(block_seed=2):
        pass
    assert global_states() == before


def test_setting_a_random_state_is_all_or_nothing() -> None:
    Reproducible_Block.set_seed(3)
    state = Reproducible_Block.get_random_state()
    torch.rand(2)
    random.random()
    np.random.rand()
    before = global_states()
    broken = {**state, "torch": torch.zeros(3, dtype=torch.uint8)}  # refused by torch, last
    with pytest.raises(RuntimeError):
        Reproducible_Block.set_random_state(broken)
    assert global_states() == before
    Reproducible_Block.reference_state = broken
    with pytest.raises(RuntimeError), Reproducible_Block(block_seed=1):
        pass
    assert global_states() == before
