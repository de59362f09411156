"""Blocks closed out of order: the error is raised, and every caller still gets its state back.

Two asyncio tasks that hold plain ``with`` blocks across ``await`` close them out of order. The
library raises BlockUsageError (the tasks' streams interleaved), but once every block has
closed, the code outside them must continue exactly where it was, as if no block had run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import numpy as np
import pytest
import torch

from reproducible_block import (
    BlockUsageError,
    GeneratorSource,
    ReproducibleBlock,
    register_generator,
    set_seed,
    unregister_generator,
)
from reproducible_block.diagnostics import environment_report
from tests._draws import BUILTIN_DRAWS, draw_all


def outside_draws_after(program: object) -> dict[str, list[float]]:
    """The draws outside blocks after ``program`` ran (errors swallowed)."""
    set_seed(0)
    draw_all()
    with contextlib.suppress(BlockUsageError):
        program()  # type: ignore[operator]
    return draw_all()


def nothing() -> None:
    pass


def interleaved_tasks() -> None:
    async def task(key: str, entered: asyncio.Event, other: asyncio.Event) -> None:
        with ReproducibleBlock(key):
            entered.set()
            await other.wait()
            torch.rand(3)  # each draws in its block
            np.random.rand(2)
            random.random()

    async def main() -> None:
        a_in, b_in = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(task("a", a_in, b_in))
        await a_in.wait()
        second = asyncio.ensure_future(task("b", b_in, asyncio.Event()))
        await b_in.wait()
        await first  # "a" closes while "b", opened after it, is open
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second

    asyncio.run(main())


def test_interleaved_asyncio_blocks_raise() -> None:
    set_seed(0)
    with pytest.raises(BlockUsageError, match="reverse order"):
        interleaved_tasks()


def test_after_interleaved_blocks_close_the_program_continues_its_own_streams() -> None:
    assert outside_draws_after(interleaved_tasks) == outside_draws_after(nothing)


SOURCES = [None, ("torch",), ("numpy", "random")]


def managed(names: tuple[str, ...] | None) -> set[str]:
    return set(BUILTIN_DRAWS) if names is None else set(names)


@pytest.mark.parametrize("a_sources", SOURCES)
@pytest.mark.parametrize("b_sources", SOURCES)
def test_each_caller_gets_its_state_back_whatever_the_blocks_manage(
    a_sources: tuple[str, ...] | None, b_sources: tuple[str, ...] | None
) -> None:
    set_seed(0)
    draw_all()
    first = ReproducibleBlock("a", sources=a_sources)
    second = ReproducibleBlock("b", sources=b_sources)
    first.__enter__()
    draw_all()
    second.__enter__()
    draw_all()
    with pytest.raises(BlockUsageError):
        first.__exit__(None, None, None)
    draw_all()
    second.__exit__(None, None, None)
    got = draw_all()

    # The reference draws, outside blocks, only what no open block managed at each step.
    set_seed(0)
    draw_all()
    for open_blocks in ([a_sources], [a_sources, b_sources], [b_sources]):
        covered = set().union(*(managed(names) for names in open_blocks))
        for name, draw in BUILTIN_DRAWS.items():
            if name not in covered:
                draw()
    assert got == draw_all()


def test_the_block_still_open_keeps_its_stream() -> None:
    set_seed(0)
    with ReproducibleBlock("b"):
        expected = torch.rand(4)
    first, second = ReproducibleBlock("a"), ReproducibleBlock("b")
    first.__enter__()
    second.__enter__()
    with pytest.raises(BlockUsageError):
        first.__exit__(None, None, None)
    assert torch.equal(torch.rand(4), expected)  # b's stream, undisturbed
    second.__exit__(None, None, None)


def test_exit_without_enter_is_a_clear_error() -> None:
    set_seed(0)
    block = ReproducibleBlock("z")
    with pytest.raises(BlockUsageError, match=r"not open.*`with block:`"):
        block.__exit__(None, None, None)
    with block:  # the block and the lock still work
        pass
    with pytest.raises(BlockUsageError, match="not open"):
        block.__exit__(None, None, None)


class FailsOnRestore(GeneratorSource[int]):
    """A registered generator that cannot take back its caller's state (its device went away)."""

    def __init__(self) -> None:
        self.state = 0

    def get_state(self) -> int:
        return self.state

    def set_state(self, state: int) -> None:
        if state == 0 and self.state != 0:
            raise OSError("device lost on restore")
        self.state = state

    def from_bits(self, bits: bytes) -> int:
        return 7  # a block's state

    def seed(self, seed: int) -> None:
        self.state = 0  # the caller's


def test_a_failing_restore_in_an_out_of_order_close_leaves_no_block_open() -> None:
    register_generator(FailsOnRestore(), name="fails")
    set_seed(0)
    draw_all()
    expected = draw_all()
    set_seed(0)
    draw_all()
    first = ReproducibleBlock("a")  # manages "fails"; the block opened after it does not
    second = ReproducibleBlock("b", sources=("torch",))
    first.__enter__()
    second.__enter__()
    with pytest.raises(OSError, match="on restore"):
        first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert draw_all() == expected  # the other generators got their caller's states back
    assert environment_report()["open_blocks"] == 0
    with ReproducibleBlock("next", sources=("torch",)):  # the lock is free
        pass
    unregister_generator("fails")  # not refused as "inside an open block"
    set_seed(1)


def test_sources_that_compare_equal_each_get_their_own_state_back() -> None:
    from tests._plain_source import EqualitySource

    first, second = EqualitySource(state=1), EqualitySource(state=2)
    register_generator(first, name="first")  # the autouse fixture unregisters them
    register_generator(second, name="second")
    set_seed(0)
    first.state, second.state = 10, 20
    outer = ReproducibleBlock("outer", sources=("first",))
    inner = ReproducibleBlock("inner", sources=("second",))
    outer.__enter__()
    inner.__enter__()
    second.state = first.state  # the two sources now compare equal (a dataclass's eq)
    assert first == second
    with pytest.raises(BlockUsageError):
        outer.__exit__(None, None, None)
    assert first.state == 10  # the caller's state, not left to the inner block
    inner.__exit__(None, None, None)
    assert second.state == 20
