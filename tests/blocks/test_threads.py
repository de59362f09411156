"""Threads: blocks from several threads are serialised, so no block ever sees another's stream,
and a thread that would wait forever for another's block gets an error instead."""

from __future__ import annotations

import concurrent.futures
import os
import random
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import (
    BlockUsageError,
    ReproducibleBlock,
    set_block_wait_timeout,
    set_seed,
    torch_generator,
)
from reproducible_block._blocks import stack as _stack
from reproducible_block._blocks import states as _states
from reproducible_block._blocks.stack import WAIT_TIMEOUT_VARIABLE, get_block_wait_timeout

from .._spawn import run_python

THREADS, BLOCKS = 8, 100


def _draws() -> list[object]:
    return [torch.rand(4).tolist(), np.random.randn(3).tolist(), random.random()]


def test_blocks_from_many_threads_each_get_their_own_stream() -> None:
    set_seed(0)
    keys = [f"thread-{i}" for i in range(THREADS)]
    expected = {}
    for key in keys:
        with ReproducibleBlock(key):
            expected[key] = _draws()

    results: dict[str, list[list[object]]] = {key: [] for key in keys}
    errors: list[BaseException] = []
    start = threading.Barrier(len(keys))

    def worker(key: str) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(BLOCKS):
                with ReproducibleBlock(key):
                    results[key].append(_draws())
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    wrong = sum(draws != expected[key] for key in keys for draws in results[key])
    assert wrong == 0
    assert all(len(results[key]) == BLOCKS for key in keys)


def test_a_thread_waits_while_another_thread_holds_a_block() -> None:
    set_seed(0)
    with ReproducibleBlock("other"):
        expected = torch.rand(4)
    inside = threading.Event()
    release = threading.Event()
    seen: list[torch.Tensor] = []

    def holder() -> None:
        with ReproducibleBlock("holder"):
            inside.set()
            release.wait(timeout=30)

    def contender() -> None:
        with ReproducibleBlock("other"):
            seen.append(torch.rand(4))

    first = threading.Thread(target=holder)
    first.start()
    assert inside.wait(timeout=30)
    second = threading.Thread(target=contender)
    second.start()
    second.join(timeout=0.2)
    assert second.is_alive()  # blocked: the holder's block is open
    assert seen == []
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not first.is_alive()
    assert not second.is_alive()
    assert len(seen) == 1
    assert torch.equal(seen[0], expected)


def test_a_thread_pool_fed_from_inside_a_block_fails_instead_of_hanging() -> None:
    # The pool's tasks enter per-sample blocks while the main thread holds "train": without a
    # bounded wait they would wait for "train" forever.
    set_seed(0)
    set_block_wait_timeout(0.2)

    def sample(index: int) -> float:
        with ReproducibleBlock(("sample", index)):
            return random.random()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        with ReproducibleBlock("train"):
            future = pool.submit(sample, 1)
            with pytest.raises(BlockUsageError) as info:
                future.result(timeout=60)
        message = str(info.value)
        assert "ReproducibleBlock(('sample', 1))" in message
        assert "'MainThread'" in message
        assert "ReproducibleBlock('train')" in message
        assert "torch_generator(key)" in message
        assert "set_block_wait_timeout" in message
        # Outside the block the same task runs.
        assert pool.submit(sample, 1).result(timeout=60) == sample(1)


def _sample_in_a_block(index: int) -> torch.Tensor:
    with ReproducibleBlock(("sample", index)):
        return torch.rand(2)


def _sample_with_its_generator(index: int) -> torch.Tensor:
    return torch.rand(2, generator=torch_generator(("sample", index)))


@ReproducibleBlock("train")
def _train(
    load: Callable[[int], torch.Tensor], pool: concurrent.futures.Executor
) -> list[torch.Tensor]:
    """A training function that a thread-pool loader feeds, sample by sample."""
    futures = [pool.submit(load, index) for index in range(4)]
    return [future.result(timeout=60) for future in futures]


def test_a_thread_pool_loader_inside_a_decorated_train_fails_naming_the_block() -> None:
    set_seed(0)
    set_block_wait_timeout(0.2)
    with (
        concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="loader") as pool,
        pytest.raises(BlockUsageError) as info,
    ):
        _train(_sample_in_a_block, pool)
    message = str(info.value)
    assert "waited 0.2 s for thread 'MainThread'" in message
    assert "which holds the block ReproducibleBlock('train')" in message
    assert "ReproducibleBlock(('sample', " in message
    assert "torch_generator(key)" in message
    assert _stack.open_count() == 0


def test_a_thread_pool_loader_with_per_sample_generators_needs_no_lock() -> None:
    set_seed(0)
    set_block_wait_timeout(0.2)
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="loader") as pool:
        loaded = _train(_sample_with_its_generator, pool)
    expected = [_sample_with_its_generator(index) for index in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(loaded, expected, strict=True))
    assert not torch.equal(loaded[0], loaded[1])


def test_other_users_of_the_lock_wait_boundedly_too() -> None:
    set_seed(0)
    set_block_wait_timeout(0.2)
    failures: list[BaseException] = []

    def report() -> None:
        try:
            rb.diagnostics.environment_report()
        except BaseException as error:
            failures.append(error)

    with ReproducibleBlock("train"):
        thread = threading.Thread(target=report)
        thread.start()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(failures) == 1
    assert isinstance(failures[0], BlockUsageError)
    assert "environment_report()" in str(failures[0])


def test_the_wait_limit_is_set_and_read_back() -> None:
    assert get_block_wait_timeout() == 60.0
    assert set_block_wait_timeout(5) == 60.0
    assert get_block_wait_timeout() == 5.0
    assert set_block_wait_timeout(None) == 5.0
    assert get_block_wait_timeout() is None
    assert set_block_wait_timeout(0.5) is None


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_wait_limit_is_refused_and_changes_nothing(bad: object, error: type) -> None:
    set_block_wait_timeout(7)
    with pytest.raises(error, match="seconds"):
        set_block_wait_timeout(bad)  # type: ignore[arg-type]
    assert get_block_wait_timeout() == 7.0


@pytest.mark.slow
@pytest.mark.parametrize(("value", "expected"), [("0.25", "0.25"), ("none", "None"), ("", "60.0")])
def test_the_environment_sets_the_default_wait(value: str, expected: str) -> None:
    env = {**os.environ, WAIT_TIMEOUT_VARIABLE: value}
    printed = run_python(
        "from reproducible_block._blocks.stack import get_block_wait_timeout as get; print(get())",
        env=env,
        check=True,
    ).stdout.strip()
    assert printed == expected


@pytest.mark.slow
def test_a_bad_environment_wait_is_a_clear_error_at_import() -> None:
    env = {**os.environ, WAIT_TIMEOUT_VARIABLE: "soon"}
    result = run_python("import reproducible_block", env=env)
    assert result.returncode != 0
    assert "REPRODUCIBLE_BLOCK_WAIT_TIMEOUT='soon'" in result.stderr


FRESH_KEYS = 300  # per thread: together they evict the derived-state cache many times over


@pytest.mark.parametrize("way", ["enter", "prepare"])
def test_threads_deriving_fresh_keys_at_once_get_the_single_threaded_streams(way: str) -> None:
    set_seed(0)
    keys = [
        [(f"fresh-{i}", j) if j % 2 else f"fresh-{i}-{j}" for j in range(FRESH_KEYS)]
        for i in range(THREADS)
    ]
    expected = {}
    for key in (key for per_thread in keys for key in per_thread):
        with ReproducibleBlock(key):
            expected[key] = torch.rand(2).tolist()
    _states.clear_cache()
    _states.plain_keys.clear()

    results: dict[object, list[float]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(own: list[object]) -> None:
        try:
            start.wait(timeout=30)
            if way == "prepare":
                ReproducibleBlock.prepare(own)  # type: ignore[arg-type]
            for key in own:
                with ReproducibleBlock(key):  # type: ignore[arg-type]
                    results[key] = torch.rand(2).tolist()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(own,)) for own in keys]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: races show within the test's keys
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert results == expected
    assert _states.cached_states() <= _states.CACHE_SIZE


def test_a_thread_that_ended_is_named_by_its_ident() -> None:
    assert _stack._thread_name(-1) == "ident -1"
