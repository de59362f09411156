"""assert_deterministic(): two runs from one random state, compared, the caller's state kept."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    register_generator,
    set_seed,
)
from reproducible_block._streams.root import peek_seed
from reproducible_block.diagnostics import NondeterminismError, assert_deterministic


def _draws() -> tuple[float, np.ndarray, torch.Tensor]:
    return random.random(), np.random.rand(3), torch.rand(2)


def _same_draws(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def _states() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _restore(states: tuple[Any, ...]) -> None:
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def _differing(first: object, second: object) -> NondeterminismError:
    """The error raised for a function that returns ``first``, then ``second``."""
    results = iter([first, second])
    with pytest.raises(NondeterminismError) as caught:
        assert_deterministic(lambda: next(results))
    return caught.value


def test_runs_from_the_callers_state_and_gives_it_back() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    start = _states()
    result = assert_deterministic(_draws)
    after = _draws()
    _restore(start)
    expected = _draws()
    assert _same_draws(result, expected)
    _restore(start)
    assert _same_draws(after, _draws())


def test_passes_arguments_and_returns_the_first_result() -> None:
    def noisy(n: int, *, scale: float) -> dict[str, Any]:
        return {"noise": torch.randn(n) * scale, "ids": [np.random.randint(9), random.random()]}

    start = _states()
    result = assert_deterministic(noisy, 4, scale=2.0)
    _restore(start)
    assert torch.equal(result["noise"], torch.randn(4) * 2.0)
    assert result["ids"] == [np.random.randint(9), random.random()]


def test_inside_a_block_uses_and_keeps_the_blocks_stream() -> None:
    set_seed(0)
    with ReproducibleBlock("check"):
        result = assert_deterministic(torch.rand, 3)
        continued = torch.rand(3)
    with ReproducibleBlock("check"):
        expected = torch.rand(3)
        expected_next = torch.rand(3)
    assert torch.equal(result, expected)
    assert torch.equal(continued, expected)
    assert not torch.equal(expected_next, expected)


def test_function_that_reseeds_gets_the_root_back() -> None:
    set_seed(10)
    root = peek_seed()

    def reseeds() -> torch.Tensor:
        set_seed(20)
        with ReproducibleBlock("k"):
            return torch.rand(2)

    assert_deterministic(reseeds)
    assert peek_seed() == root


def test_registered_generators_are_replayed_too() -> None:
    rng = np.random.default_rng(4)
    register_generator(rng, name="own")
    first = assert_deterministic(rng.random, 3)
    np.testing.assert_array_equal(first, np.random.default_rng(4).random(3))


def test_unmanaged_generator_is_caught_with_path_and_size() -> None:
    unmanaged = np.random.default_rng(0)

    def model() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = torch.zeros(4, 2)
        logits[3, 0] = float(unmanaged.random())
        return torch.ones(2), {"logits": logits}

    error = _differing_call(model)
    replay = np.random.default_rng(0)
    first, second = np.float32(replay.random()), np.float32(replay.random())
    assert error.path == "[1]['logits'][3, 0]"
    assert error.difference == abs(float(first) - float(second))
    assert "result[1]['logits'][3, 0]" in str(error)
    assert "1 of 8 elements differ" in str(error)
    assert isinstance(error, AssertionError)
    assert isinstance(error, ReproducibleBlockError)


def _differing_call(fn: Any) -> NondeterminismError:
    with pytest.raises(NondeterminismError) as caught:
        assert_deterministic(fn)
    return caught.value


def test_state_is_restored_when_the_function_raises() -> None:
    start = _states()
    calls = itertools.count()

    def fails_second_time() -> float:
        if next(calls) == 1:
            raise KeyError("second")
        return random.random()

    with pytest.raises(KeyError):
        assert_deterministic(fails_second_time)
    after = _draws()
    _restore(start)
    assert _same_draws(after, _draws())


@dataclass
class Output:
    loss: float
    extra: tuple[int, ...]


@pytest.mark.parametrize(
    ("first", "second", "path", "difference", "says"),
    [
        (1.5, 2.0, "", 0.5, "1.5 vs 2.0"),
        ([1, 2, 3], [1, 2, 5], "[2]", 2.0, "3 vs 5"),
        ({"a": (0, True)}, {"a": (0, False)}, "['a'][1]", None, "True vs False"),
        ("x", "y", "", None, "'x' vs 'y'"),
        (torch.zeros(2, 3), torch.zeros(3, 2), "", None, "shape (2, 3) vs (3, 2)"),
        (torch.zeros(2), torch.zeros(2, dtype=torch.float64), "", None, "dtype"),
        (torch.tensor([1, 2]), torch.tensor([1, 7]), "[1]", 5.0, "2 vs 7"),
        (torch.tensor(True), torch.tensor(False), "", None, "True vs False"),
        (torch.zeros(2), torch.zeros(2, device="meta"), "", None, "device cpu vs meta"),
        (
            np.arange(6.0).reshape(2, 3),
            np.arange(6.0).reshape(2, 3) * [1, 1, 2],
            "[0, 2]",
            2.0,
            "2.0 vs 4.0",
        ),
        (np.zeros(2), np.zeros(3), "", None, "shape (2,) vs (3,)"),
        (np.zeros(2, np.int32), np.zeros(2, np.int64), "", None, "dtype"),
        (np.array(["a", "b"]), np.array(["a", "c"]), "[1]", None, "'b' vs 'c'"),
        (
            np.array([1, "z"], dtype=object),
            np.array([1, "w"], dtype=object),
            "[1]",
            None,
            "'z' vs 'w'",
        ),
        (np.float32(1), np.float32(3), "", 2.0, "vs"),
        ([1], (1,), "", None, "type list vs tuple"),
        ([1, 2], [1], "", None, "length 2 vs 1"),
        ({"a": 1}, {"b": 1}, "", None, "keys only in the first: ['a']"),
        (Output(0.5, (1, 2)), Output(0.5, (1, 3)), ".extra[1]", 1.0, "2 vs 3"),
        (10**400, 10**400 + 1, "", float("inf"), "vs"),
        (frozenset({1}), frozenset({2}), "", None, "frozenset({1}) vs frozenset({2})"),
    ],
)
def test_first_difference_is_located(
    first: object, second: object, path: str, difference: float | None, says: str
) -> None:
    error = _differing(first, second)
    assert error.path == path
    assert error.difference == difference
    assert says in str(error)


def test_largest_difference_is_summarised() -> None:
    error = _differing(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 2.0, 7.0]))
    assert error.path == "[0]"
    assert error.difference == 0.5
    assert "2 of 3 elements differ, largest absolute difference 4" in str(error)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        [torch.tensor([float("nan"), 1.0])],
        {"x": np.array([np.nan, 2.0]), "y": None, "z": b"raw"},
        torch.ones(2, 2).to_sparse(),
        Output(1.0, (2,)),
        frozenset({3}),
        np.array([1, "z", None], dtype=object),
    ],
)
def test_equal_results_pass(value: object) -> None:
    results = iter([value, value])
    assert assert_deterministic(lambda: next(results)) is value


def test_values_without_equality_are_refused() -> None:
    with pytest.raises(ReproducibleBlockTypeError, match="has no value equality"):
        assert_deterministic(object)


def test_a_non_callable_is_refused() -> None:
    with pytest.raises(ReproducibleBlockTypeError, match="needs a callable first"):
        assert_deterministic(torch.rand(2))  # type: ignore[call-overload]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    data=st.data(),
    change=st.floats(0.25, 100.0),
)
def test_changed_element_is_the_one_reported(
    shape: list[int], data: st.DataObject, change: float
) -> None:
    """Change one element of a nested tensor; the error names exactly that element."""
    index = tuple(data.draw(st.integers(0, size - 1)) for size in shape)
    key = data.draw(st.sampled_from(["logits", "loss", "x"]))
    base = torch.arange(float(np.prod(shape))).reshape(shape)
    changed = base.clone()
    changed[index] += change
    error = _differing((0, {key: base}), (0, {key: changed}))
    assert error.path == f"[1][{key!r}][{', '.join(map(str, index))}]"
    assert error.difference == abs(float(base[index]) - float(changed[index]))
