"""Decorated generators, coroutines and async generators keep their stream across yields."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import torch

import reproducible_block as rb
from reproducible_block import ReproducibleBlock, set_seed


def _block_draws(key: str, count: int) -> list[float]:
    with ReproducibleBlock(key):
        return [torch.rand(1).item() for _ in range(count)]


@ReproducibleBlock("gen")
def draws(count: int) -> Iterator[float]:
    for _ in range(count):
        yield torch.rand(1).item()


def test_generator_stream_continues_across_yields_and_caller_is_untouched() -> None:
    set_seed(0)
    expected_caller = [torch.rand(1).item() for _ in range(3)]
    set_seed(0)
    expected = _block_draws("gen", 3)
    caller, produced = [], []
    for value in draws(3):
        produced.append(value)
        caller.append(torch.rand(1).item())  # the caller draws between resumes
    assert produced == expected
    assert caller == expected_caller
    assert inspect.isgeneratorfunction(draws)


def test_each_generator_call_starts_afresh_and_interleaved_generators_are_independent() -> None:
    set_seed(0)
    expected = _block_draws("gen", 3)
    first, second = draws(3), draws(3)
    pairs = list(zip(first, second, strict=True))
    assert [a for a, _ in pairs] == expected
    assert [b for _, b in pairs] == expected


def test_send_throw_and_close_reach_the_generator_inside_its_stream() -> None:
    log: list[object] = []

    @ReproducibleBlock("echo")
    def echo() -> Iterator[float]:
        try:
            while True:
                try:
                    received = yield torch.rand(1).item()
                    log.append(received)
                except ValueError as error:
                    log.append(f"caught {error}")
        finally:
            log.append(torch.rand(1).item())

    set_seed(0)
    expected = _block_draws("echo", 4)
    caller_expected = torch.rand(1).item()
    set_seed(0)
    generator = echo()
    assert next(generator) == expected[0]
    assert generator.send("hello") == expected[1]
    assert generator.throw(ValueError("bad")) == expected[2]
    generator.close()
    assert log == ["hello", "caught bad", expected[3]]
    assert torch.rand(1).item() == caller_expected


def test_generator_return_value_is_kept() -> None:
    @ReproducibleBlock("ret")
    def returns() -> Iterator[int]:
        yield 1
        return 7

    def outer() -> Iterator[int]:
        result = yield from returns()
        yield result

    set_seed(0)
    assert list(outer()) == [1, 7]


@ReproducibleBlock("coro")
async def coroutine_draws(count: int) -> list[float]:
    values = []
    for _ in range(count):
        values.append(torch.rand(1).item())
        await asyncio.sleep(0)
    return values


def test_coroutine_keeps_its_stream_across_awaits_while_tasks_interleave() -> None:
    set_seed(0)
    expected = _block_draws("coro", 3)

    async def noisy_neighbour() -> None:
        for _ in range(5):
            torch.rand(1)
            await asyncio.sleep(0)

    async def main() -> tuple[list[float], list[float]]:
        first, second, _ = await asyncio.gather(
            coroutine_draws(3), coroutine_draws(3), noisy_neighbour()
        )
        return first, second

    assert inspect.iscoroutinefunction(coroutine_draws)
    assert asyncio.run(main()) == (expected, expected)


def test_cancelled_coroutine_restores_the_caller() -> None:
    @ReproducibleBlock("cancel")
    async def slow() -> None:
        torch.rand(1)
        await asyncio.sleep(10)

    set_seed(0)
    expected = torch.rand(2)
    set_seed(0)

    async def main() -> None:
        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert torch.equal(torch.rand(2), expected)


@ReproducibleBlock("agen")
async def async_draws(count: int) -> AsyncIterator[float]:
    for _ in range(count):
        await asyncio.sleep(0)
        yield torch.rand(1).item()


def test_async_generator_keeps_its_stream_and_caller_is_untouched() -> None:
    set_seed(0)
    expected_caller = [torch.rand(1).item() for _ in range(3)]
    set_seed(0)
    expected = _block_draws("agen", 3)

    async def main() -> tuple[list[float], list[float]]:
        produced, caller = [], []
        async for value in async_draws(3):
            produced.append(value)
            caller.append(torch.rand(1).item())
        return produced, caller

    assert inspect.isasyncgenfunction(async_draws)
    assert asyncio.run(main()) == (expected, expected_caller)


def test_async_generator_closed_early_and_athrow() -> None:
    set_seed(0)
    expected = _block_draws("agen", 2)

    async def main() -> list[float]:
        generator = async_draws(5)
        values = [await generator.__anext__(), await generator.__anext__()]
        with pytest.raises(KeyError):
            await generator.athrow(KeyError("stop"))
        await generator.aclose()
        return values

    assert asyncio.run(main()) == expected


def test_with_block_held_across_await_by_two_tasks_is_reported() -> None:
    set_seed(0)

    async def first_holder(b_entered: asyncio.Event) -> None:
        with ReproducibleBlock("a"):
            await b_entered.wait()  # B opens its block while A's is open, then A closes first

    async def second_holder(b_entered: asyncio.Event) -> None:
        with ReproducibleBlock("b"):
            b_entered.set()
            for _ in range(3):
                await asyncio.sleep(0)

    async def main() -> None:
        b_entered = asyncio.Event()
        await asyncio.gather(first_holder(b_entered), second_holder(b_entered))

    with pytest.raises(rb.BlockUsageError, match="reverse order"):
        asyncio.run(main())


def test_disabled_decorators_run_generators_and_coroutines_in_the_callers_stream() -> None:
    @ReproducibleBlock("off", enabled=False)
    def gen() -> Iterator[float]:
        yield torch.rand(1).item()

    @ReproducibleBlock("off", enabled=False)
    async def coro() -> float:
        return torch.rand(1).item()

    @ReproducibleBlock("off", enabled=False)
    async def agen() -> AsyncIterator[float]:
        yield torch.rand(1).item()

    async def first_of_agen() -> float:
        values = [value async for value in agen()]
        return values[0]

    set_seed(0)
    expected = [torch.rand(1).item() for _ in range(3)]
    set_seed(0)
    assert [next(gen()), asyncio.run(coro()), asyncio.run(first_of_agen())] == expected


def test_async_generator_closed_while_suspended_runs_its_cleanup_in_its_stream() -> None:
    cleanup: list[float] = []

    @ReproducibleBlock("closing")
    async def agen() -> AsyncIterator[float]:
        try:
            while True:
                yield torch.rand(1).item()
        finally:
            cleanup.append(torch.rand(1).item())

    set_seed(0)
    expected = _block_draws("closing", 2)
    caller = torch.rand(1).item()
    set_seed(0)

    async def main() -> float:
        generator = agen()
        first = await generator.__anext__()
        await generator.aclose()
        return first

    assert asyncio.run(main()) == expected[0]
    assert cleanup == [expected[1]]
    assert torch.rand(1).item() == caller


# KeyboardInterrupt raised inside a decorated function of each kind, after a step in its stream.


@ReproducibleBlock("interrupted")
def interrupted_function() -> None:
    torch.rand(1)
    raise KeyboardInterrupt


@ReproducibleBlock("interrupted")
def interrupted_generator() -> Iterator[None]:
    torch.rand(1)
    yield
    torch.rand(1)
    raise KeyboardInterrupt


@ReproducibleBlock("interrupted")
async def interrupted_coroutine() -> None:
    torch.rand(1)
    await asyncio.sleep(0)
    torch.rand(1)
    raise KeyboardInterrupt


@ReproducibleBlock("interrupted")
async def interrupted_async_generator() -> AsyncIterator[None]:
    torch.rand(1)
    yield
    torch.rand(1)
    raise KeyboardInterrupt


async def _exhaust(steps: AsyncIterator[None]) -> None:
    async for _ in steps:
        torch.rand(1)  # the caller's draw between two steps


INTERRUPTED = {  # how to run it, and how many draws the caller makes between steps
    "function": (interrupted_function, 0),
    "generator": (lambda: [torch.rand(1) for _ in interrupted_generator()], 1),
    "coroutine": (lambda: asyncio.run(interrupted_coroutine()), 0),
    "async generator": (lambda: asyncio.run(_exhaust(interrupted_async_generator())), 1),
}


@pytest.mark.parametrize(("run", "caller_draws"), INTERRUPTED.values(), ids=list(INTERRUPTED))
def test_keyboard_interrupt_inside_gives_the_caller_its_state_back(
    run: Callable[[], object], caller_draws: int
) -> None:
    set_seed(0)
    with pytest.raises(KeyboardInterrupt):
        run()
    after = torch.get_rng_state()
    set_seed(0)
    for _ in range(caller_draws):
        torch.rand(1)
    assert torch.equal(after, torch.get_rng_state())
    with ReproducibleBlock("next"):  # no block left open, the lock is free
        assert rb.environment_report()["open_blocks"] == 1
