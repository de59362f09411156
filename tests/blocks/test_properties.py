"""Property tests (Hypothesis): random programs of draws, blocks, nesting, exceptions, generators.

Invariants, each checked against an independent reference run:
- isolation: a block's own draws depend only on (seed, key): they equal the same block run right
  after ``set_seed`` with nothing before it, whatever ran before and however deeply it is nested;
- transparency: the draws outside blocks equal those of the same program with the blocks (and
  the decorated generators' own draws) removed, exceptions raised inside blocks included;
- generators: a decorated generator yields what the same key's block draws, while its caller
  draws from the caller's stream between resumes.

The example counts come from the Hypothesis profile (conftest.py): 500 by default, 50 under
``make quick``, 5000 under ``make fuzz``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reproducible_block import ReproducibleBlock, register_generator, set_seed

_GENERATORS: dict[str, Any] = {}


def _draw(source: int, count: int) -> list[float]:
    if source == 0:
        return [random.random() for _ in range(count)]
    if source == 1:
        return np.random.randn(count).tolist()  # odd counts leave a cached Gaussian
    if source == 2:
        return np.random.rand(count).tolist()
    if source == 3:
        return torch.rand(count).tolist()
    if source == 4:
        return torch.randn(count).tolist()
    if source == 5:
        return torch.rand(count, generator=_GENERATORS["torch"]).tolist()
    return _GENERATORS["numpy"].standard_normal(count).tolist()  # type: ignore[no-any-return]


SOURCES = 7


@pytest.fixture(autouse=True)
def _registered_generators() -> None:
    _GENERATORS["torch"] = torch.Generator()
    _GENERATORS["numpy"] = np.random.default_rng()
    register_generator(_GENERATORS["torch"], name="prop-torch")
    register_generator(_GENERATORS["numpy"], name="prop-numpy")
    # the root conftest's fixture unregisters them after the test


keys = st.one_of(
    st.integers(0, 4),
    st.sampled_from(["a", "b"]),
    st.tuples(st.just("epoch"), st.integers(0, 2)),
    st.just(10**12),
)
draws = st.tuples(st.just("draw"), st.integers(0, SOURCES - 1), st.integers(1, 3))
programs = st.lists(
    st.recursive(
        draws,
        lambda children: st.one_of(
            st.tuples(st.just("block"), keys, st.lists(children, max_size=4), st.booleans()),
            st.tuples(st.just("gen"), keys, st.integers(0, SOURCES - 1), st.integers(1, 3)),
        ),
        max_leaves=12,
    ),
    max_size=6,
)


class _Raised(Exception):
    pass


def _decorated_generator(key: Any, source: int, steps: int) -> Iterator[list[float]]:
    @ReproducibleBlock(key)
    def generate() -> Iterator[list[float]]:
        for _ in range(steps):
            yield _draw(source, 1)

    return generate()


def _execute(program: list[Any], own: list[Any], records: list[Any], with_blocks: bool) -> None:
    for operation in program:
        kind = operation[0]
        if kind == "draw":
            own.append(_draw(operation[1], operation[2]))
        elif kind == "block":
            _, key, body, raises = operation
            if not with_blocks:
                continue
            inside: list[Any] = []
            try:
                with ReproducibleBlock(key):
                    _execute(body, inside, records, with_blocks)
                    if raises:
                        raise _Raised
            except _Raised:
                pass
            records.append(("block", key, body, inside))
        else:
            _, key, source, steps = operation
            if with_blocks:
                yielded = []
                for value in _decorated_generator(key, source, steps):
                    yielded.append(value)
                    own.append(_draw(source, 1))
                records.append(("gen", key, (source, steps), yielded))
            else:
                own.extend(_draw(source, 1) for _ in range(steps))


def _reference(seed: int, record: tuple[Any, ...]) -> list[Any]:
    kind, key, body, _ = record
    set_seed(seed)
    inside: list[Any] = []
    with ReproducibleBlock(key):
        if kind == "block":
            _execute(body, inside, [], True)
        else:
            source, steps = body
            inside.extend(_draw(source, 1) for _ in range(steps))
    return inside


@given(st.integers(0, 2**32 - 1), programs)
def test_block_draws_depend_only_on_seed_and_key(seed: int, program: list[Any]) -> None:
    set_seed(seed)
    records: list[Any] = []
    _execute(program, [], records, with_blocks=True)
    for record in records:
        assert record[3] == _reference(seed, record), record[:2]


@given(st.integers(0, 2**32 - 1), programs)
def test_callers_stream_is_as_if_blocks_never_ran(seed: int, program: list[Any]) -> None:
    set_seed(seed)
    with_blocks: list[Any] = []
    _execute(program, with_blocks, [], with_blocks=True)
    after_with = [_draw(source, 1) for source in range(SOURCES)]
    set_seed(seed)
    without: list[Any] = []
    _execute(program, without, [], with_blocks=False)
    after_without = [_draw(source, 1) for source in range(SOURCES)]
    assert with_blocks == without
    assert after_with == after_without
