"""Blocks in forked children: no deadlock on a lock held by another thread, open blocks continue."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.queues import Queue
from typing import Any

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed

fork = multiprocessing.get_context("fork")


def _block_draws_in_child(results: Queue[Any]) -> None:
    with ReproducibleBlock("child"):
        results.put(torch.rand(3).tolist())


def test_child_forked_while_another_thread_holds_a_block_can_use_blocks() -> None:
    set_seed(0)
    with ReproducibleBlock("child"):
        expected = torch.rand(3).tolist()
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with ReproducibleBlock("holder"):
            inside.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(timeout=30)
        results: Queue[Any] = fork.Queue()
        child = fork.Process(target=_block_draws_in_child, args=(results,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():  # pragma: no cover - the bug this test guards against
            child.kill()
            child.join(timeout=10)
            pytest.fail("the forked child hung on the block lock held by another thread")
        assert child.exitcode == 0
        assert results.get(timeout=10) == expected
    finally:
        release.set()
        thread.join(timeout=30)


def _continue_open_block(results: Queue[Any]) -> None:
    # Forked inside the parent's open block: the child finishes it and gets the caller's stream.
    inside = torch.rand(2).tolist()
    ReproducibleBlock.__exit__(_OPEN[0], None, None, None)
    results.put((inside, torch.rand(2).tolist()))


_OPEN: list[ReproducibleBlock] = []


def test_child_forked_inside_a_block_continues_and_closes_it() -> None:
    set_seed(0)
    with ReproducibleBlock("open"):
        torch.rand(1)
        expected_inside = torch.rand(2).tolist()
    expected_after = torch.rand(2).tolist()
    set_seed(0)
    block = ReproducibleBlock("open")
    _OPEN[:] = [block]
    results: Queue[Any] = fork.Queue()
    with block:
        torch.rand(1)
        child = fork.Process(target=_continue_open_block, args=(results,))
        child.start()
        child.join(timeout=60)
        if child.is_alive():  # pragma: no cover
            child.kill()
            pytest.fail("the forked child hung closing the block it inherited")
    assert child.exitcode == 0
    assert results.get(timeout=10) == (expected_inside, expected_after)
