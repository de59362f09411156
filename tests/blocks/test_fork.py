"""Blocks in forked children: no deadlock on a lock held by another thread, open blocks continue.

Every lock the library owns is replaced in a forked child (the thread that held it does not exist
there): the block lock (``_stack``) and the registry's (``_sources.registry``); deriving a fresh
key takes no lock of ours (each thread has its own PCG64). Children are real ``os.fork`` or
``multiprocessing`` fork processes, waited for with a bound and killed past it.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.queues import Queue
from typing import Any

import numpy as np
import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._sources.registry import registry

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


# Raw os.fork: the child runs ``child()`` and exits with 0 (1 if it raised), never returning into
# pytest; the parent waits at most ``timeout`` seconds, then kills it.


def exit_code_within(pid: int, timeout: float) -> int | None:
    """The exit code of the child ``pid``, or None if it had not exited after ``timeout`` s (it
    is killed then)."""
    descriptor = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([descriptor], [], [], timeout)
    finally:
        os.close(descriptor)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def fork_and_wait(
    child: Callable[[], bytes | None], timeout: float = 30.0
) -> tuple[int | None, bytes]:
    """Fork; the child runs ``child()`` and exits. The child's exit code (None: it hung and was
    killed) and the bytes ``child()`` returned, sent back through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read)
            data = child()
            if data:
                os.write(write, data)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    code = exit_code_within(pid, timeout)
    with os.fdopen(read, "rb") as pipe:
        return code, pipe.read()


@contextmanager
def thread_running(loop: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``loop(stop)`` in a thread for the duration of the section."""
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forks_while_another_thread_derives_fresh_keys_never_hang_the_child() -> None:
    # Deriving a fresh key runs a PCG64 with its lock held and the GIL released: a fork at that
    # moment must not leave the child a lock it needs (one shared PCG64 did, in 2175cc9).
    set_seed(0)

    def derive(stop: threading.Event) -> None:
        key = 0
        while not stop.is_set():
            with ReproducibleBlock(("thread", key)):
                pass
            key += 1

    def child() -> None:
        with ReproducibleBlock(("child", os.getpid())):  # a fresh key: derived in the child
            torch.rand(1)

    with thread_running(derive):
        for attempt in range(40):
            code, _ = fork_and_wait(child, timeout=20)
            assert code == 0, f"fork {attempt}: the child {'hung' if code is None else 'failed'}"


def _draws() -> bytes:
    return pickle.dumps((random.random(), float(np.random.rand()), torch.rand(2).tolist()))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_another_thread_holds_a_block_draws_the_callers_streams() -> None:
    # The other thread's block never closes in the child: outside blocks, the child must draw
    # what the code outside that block would, not from the block's stream.
    set_seed(0)
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with (
            ReproducibleBlock("holder", sources=("torch", "numpy")),
            ReproducibleBlock("inner", sources=("random", "torch")),
        ):
            inside.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(timeout=30)
        code, data = fork_and_wait(_draws)
    finally:
        release.set()
        thread.join(timeout=60)
    assert code == 0
    assert pickle.loads(data) == pickle.loads(_draws())  # the parent, its blocks closed


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_while_another_thread_finds_the_built_in_sources_can_use_blocks() -> None:
    # The registry's lock is held while the built-in sources are found, at the first block of
    # the process: a child forked then must not inherit it held.
    set_seed(0)
    with ReproducibleBlock("child"):
        expected = torch.rand(3).tolist()
    held, release = threading.Event(), threading.Event()

    def finder() -> None:
        with registry._lock:  # what registry.builtin() holds while it finds the sources
            held.set()
            release.wait(timeout=60)

    def child() -> bytes:
        registry._builtin = None  # as in a process whose first block is being entered
        registry._changed()  # (no selection cached either)
        with ReproducibleBlock("child"):
            return pickle.dumps(torch.rand(3).tolist())

    thread = threading.Thread(target=finder)
    thread.start()
    try:
        assert held.wait(timeout=30)
        code, data = fork_and_wait(child, timeout=30)
    finally:
        release.set()
        thread.join(timeout=60)
    assert code == 0, "the child hung on the registry's lock" if code is None else code
    assert pickle.loads(data) == expected


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forks_while_another_thread_switches_blocks_never_hang_or_half_switch_the_child() -> None:
    # Entering and leaving a block holds NumPy's bit generator lock around the raw copies and
    # switches several generators in turn: a fork in the middle left the child a lock held by a
    # thread it does not have (it hung), or generators half in the other thread's block.
    from reproducible_block.testing import isolated_random_state

    set_seed(0)
    with isolated_random_state():
        # What the code outside blocks draws next (Python's random reseeds in a forked child).
        expected = pickle.loads(_draws())[1:]

    def switch(stop: threading.Event) -> None:
        while not stop.is_set():
            with ReproducibleBlock("thread"):  # a repeated key: the fast paths' hot path
                pass

    def child() -> bytes:
        outside = pickle.loads(_draws())[1:]
        with ReproducibleBlock("child"):
            inside = _draws()
        return pickle.dumps((outside, inside))

    with ReproducibleBlock("child"):
        expected_inside = _draws()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: a fork lands mid-switch more often
    try:
        with thread_running(switch):
            for attempt in range(30):
                code, data = fork_and_wait(child, timeout=20)
                hung = "hung" if code is None else "failed"
                assert code == 0, f"fork {attempt}: the child {hung}"
                assert pickle.loads(data) == (expected, expected_inside), f"fork {attempt}"
    finally:
        sys.setswitchinterval(interval)
