"""Threads: blocks from several threads are serialised, so no block ever sees another's stream."""

from __future__ import annotations

import random
import threading

import numpy as np
import torch

from reproducible_block import ReproducibleBlock, set_seed

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
