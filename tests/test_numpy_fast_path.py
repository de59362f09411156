"""NumPy's global state saved through ctypes is exactly the public state, cached Gaussian included.

Every test runs twice: with the fast path and with the public ``get_state``/``set_state`` path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._activation import CACHE_SIZE, cached_states, clear_cache
from reproducible_block._sources import NumpyGlobalSource, registry


@pytest.fixture(params=[True, False], ids=["fast", "public"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(NumpyGlobalSource, "fast_path", request.param)
    return bool(request.param)


def _full_state() -> tuple[Any, ...]:
    name, key, position, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    return (name, key.tolist(), position, has_gauss, gauss)


def test_fast_path_is_available_with_this_numpy() -> None:
    source = registry.builtin()[1]
    assert isinstance(source, NumpyGlobalSource)
    assert source._fast_address() is not None


@pytest.mark.parametrize("before", [0, 1, 2, 3])
@pytest.mark.parametrize("inside", [0, 1, 2])
def test_full_state_after_a_block_equals_the_state_without_it(
    fast_path: bool, before: int, inside: int
) -> None:
    set_seed(0)
    np.random.randn(before)
    expected = _full_state()
    with ReproducibleBlock("g"):
        np.random.randn(inside)
        np.random.rand(inside)
    assert _full_state() == expected


@pytest.mark.parametrize("before", [0, 1])
def test_block_starts_without_the_callers_gaussian(fast_path: bool, before: int) -> None:
    set_seed(0)
    with ReproducibleBlock("g"):
        first = np.random.randn(3).tolist()
    set_seed(0)
    np.random.randn(before)
    with ReproducibleBlock("g"):
        assert np.random.randn(3).tolist() == first


def test_generator_keeps_its_own_cached_gaussian_across_yields(fast_path: bool) -> None:
    @ReproducibleBlock("gen")
    def normals() -> Iterator[float]:
        for _ in range(4):
            yield float(np.random.randn())  # odd: leaves a Gaussian cached between resumes

    set_seed(0)
    with ReproducibleBlock("gen"):
        expected = [float(np.random.randn()) for _ in range(4)]
    np.random.randn(1)
    outside = _full_state()
    got = []
    for value in normals():
        got.append(value)
        assert _full_state() == outside  # the caller's Gaussian is back between resumes
    assert got == expected


# A program: a list of operations, each a draw or a block around more operations.
operations = st.recursive(
    st.one_of(
        st.tuples(st.just("randn"), st.integers(0, 3)),
        st.tuples(st.just("rand"), st.integers(0, 3)),
    ),
    lambda children: st.tuples(st.just("block"), st.integers(0, 3), st.lists(children, max_size=4)),
    max_leaves=12,
)


def _run(program: list[Any], out: list[Any]) -> None:
    for operation in program:
        if operation[0] == "block":
            with ReproducibleBlock(operation[1]):
                _run(operation[2], out)
        elif operation[0] == "randn":
            out.append(np.random.randn(operation[1]).tolist())
        else:
            out.append(np.random.rand(operation[1]).tolist())


@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=6))
def test_fast_and_public_paths_give_the_same_draws_and_states(program: list[Any]) -> None:
    results = []
    for fast in (True, False):
        NumpyGlobalSource.fast_path = fast
        try:
            set_seed(0)
            out: list[Any] = []
            _run(program, out)
            results.append((out, _full_state()))
        finally:
            NumpyGlobalSource.fast_path = True
    assert results[0] == results[1]


def test_derived_state_cache_stays_bounded() -> None:
    set_seed(0)
    for index in range(CACHE_SIZE * 3):
        with ReproducibleBlock(("sample", index)):
            pass
    assert cached_states() <= CACHE_SIZE
    clear_cache()
    assert cached_states() == 0
    with ReproducibleBlock(("sample", 0)):  # recomputed on demand, the same stream
        pass
    assert cached_states() == 1
