"""Decorated generators, coroutines and async generators keep their stream across yields."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterator,
)
from typing import Any

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
        assert rb.diagnostics.environment_report()["open_blocks"] == 1


# Resumables stopped before their first step: a decorated one behaves as the plain one does.


async def plain_coroutine() -> None:
    torch.rand(1)


async def plain_async_generator() -> AsyncGenerator[None, None]:
    torch.rand(1)
    yield


def plain_generator() -> Generator[None, None, None]:
    torch.rand(1)
    yield


COROUTINES = {
    "plain": plain_coroutine,
    "decorated": ReproducibleBlock("unstarted")(plain_coroutine),
}
ASYNC_GENERATORS = {
    "plain": plain_async_generator,
    "decorated": ReproducibleBlock("unstarted")(plain_async_generator),
}


async def _task_cancelled_before_it_runs(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    task = asyncio.ensure_future(make())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _gather_cancelled_before_it_runs(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    gathered = asyncio.gather(make(), make())
    gathered.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gathered


async def _wait_for_timed_out_before_it_runs(
    make: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(make(), timeout=0)


async def _closed_without_being_awaited(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    make().close()


def _unstarted_warnings(run: Callable[[], object]) -> list[str]:
    """The warnings ``run`` gives, once everything it left behind is collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
        gc.collect()
    return [str(warning.message) for warning in caught]


@pytest.mark.parametrize(
    "stop",
    [
        _task_cancelled_before_it_runs,
        _gather_cancelled_before_it_runs,
        _wait_for_timed_out_before_it_runs,
        _closed_without_being_awaited,
    ],
)
@pytest.mark.parametrize("kind", list(COROUTINES))
def test_a_coroutine_stopped_before_it_starts_does_not_warn(
    kind: str, stop: Callable[[Callable[[], Coroutine[Any, Any, None]]], Awaitable[None]]
) -> None:
    set_seed(0)
    before = torch.get_rng_state()
    assert _unstarted_warnings(lambda: asyncio.run(stop(COROUTINES[kind]))) == []  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)  # nothing ran


def test_a_coroutine_whose_first_step_is_refused_does_not_warn() -> None:
    rb._streams.root.replace_seed(None)  # the first step raises before the coroutine runs
    with pytest.raises(rb.NotSeededError):
        _unstarted_warnings(lambda: asyncio.run(COROUTINES["decorated"]()))
    assert _unstarted_warnings(gc.collect) == []


def test_a_decorated_coroutine_still_refuses_wrong_arguments_when_called() -> None:
    @ReproducibleBlock("arguments")
    async def takes_one(value: int) -> int:
        return value

    with pytest.raises(TypeError):
        takes_one(1, 2)  # type: ignore[call-arg, unused-coroutine]


@pytest.mark.parametrize("kind", list(ASYNC_GENERATORS))
def test_an_async_generator_closed_before_it_starts_does_not_warn(kind: str) -> None:
    async def stop() -> None:
        await ASYNC_GENERATORS[kind]().aclose()
        ASYNC_GENERATORS[kind]()  # dropped unstarted

    set_seed(0)
    before = torch.get_rng_state()
    assert _unstarted_warnings(lambda: asyncio.run(stop())) == []
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("decorated", [False, True])
def test_a_generator_closed_or_thrown_into_before_it_starts_runs_nothing(decorated: bool) -> None:
    make = ReproducibleBlock("unstarted")(plain_generator) if decorated else plain_generator
    set_seed(0)
    before = torch.get_rng_state()

    def stop() -> None:
        make().close()
        with pytest.raises(KeyError):
            make().throw(KeyError("early"))
        make()  # dropped unstarted

    assert _unstarted_warnings(stop) == []
    assert torch.equal(torch.get_rng_state(), before)


def test_a_suspended_coroutine_dropped_unclosed_runs_its_cleanup_in_its_stream() -> None:
    cleanup: list[float] = []

    class Pause:
        def __await__(self) -> Generator[None, None, None]:
            yield

    @ReproducibleBlock("dropped")
    async def paused() -> None:
        torch.rand(1)
        try:
            await Pause()
        finally:
            cleanup.append(torch.rand(1).item())

    set_seed(0)
    expected = _block_draws("dropped", 2)
    caller = torch.rand(1).item()
    set_seed(0)
    coroutine = paused()
    coroutine.send(None)  # one step, suspended at the pause
    del coroutine  # collected unclosed: Python closes it
    gc.collect()
    assert cleanup == [expected[1]]
    assert torch.rand(1).item() == caller
