"""Running generators, coroutines and async generators one step at a time inside a block.

A decorated generator must keep its block's stream across ``yield`` (its own draws continue on
each resume) while the caller, between two resumes, draws from the caller's stream. So every
step switches in: restore the block's saved states (fresh ones on the first step), run the step,
save the block's states, give the caller's back. The same holds for each resume of a coroutine
after an ``await`` and for each step of an async generator.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol

from reproducible_block._blocks.stack import Frame, enter, leave
from reproducible_block._support.transforms import (
    dynamo_callback,
    is_dynamo_compiling,
)

__all__ = ["Stream", "run_async_generator", "run_coroutine", "run_generator"]


class _Steppable(Protocol):
    def send(self, value: Any, /) -> Any: ...
    def throw(self, error: BaseException, /) -> Any: ...
    def close(self) -> Any: ...


class Stream:
    """A block's stream that lives across steps: the states it had when it last stepped out.

    ``block`` is a ``ReproducibleBlock``; its sources and fresh states are resolved at the
    first step (so a missing root raises there, as entering the block would).
    """

    __slots__ = ("_block", "_sources", "_states")

    def __init__(self, block: Any) -> None:
        self._block = block
        self._sources: Sequence[Any] = ()
        self._states: list[Any] | None = None

    def step_in(self) -> Frame:
        if is_dynamo_compiling() or dynamo_callback() is not None:  # inline: bench "repeated key"
            from reproducible_block._support.compiled import hidden_call

            return hidden_call(self._step_in)
        states = self._states  # _step_in(), inlined: every resume comes here
        if states is None:
            return self._step_in()
        return enter(self._block, self._sources, states)

    def step_out(self, frame: Frame) -> None:
        if is_dynamo_compiling() or dynamo_callback() is not None:
            from reproducible_block._support.compiled import hidden_call

            hidden_call(self._step_out, frame)
        else:
            self._states = leave(frame, keep=True)

    def _step_in(self) -> Frame:
        states = self._states
        if states is None:
            selection, states = self._block._states()
            self._sources = selection.sources
        return enter(self._block, self._sources, states)

    def _step_out(self, frame: Frame) -> None:
        self._states = leave(frame, keep=True)


def _drive(stream: Stream, target: _Steppable) -> Generator[Any, Any, Any]:
    """Delegate to ``target`` like ``yield from``, switching to the block's stream each step."""
    value: Any = None
    error: BaseException | None = None
    while True:
        frame = stream.step_in()
        try:
            result = target.send(value) if error is None else target.throw(error)
        except StopIteration as stop:
            return stop.value
        finally:
            stream.step_out(frame)
        error = None
        try:
            value = yield result
        except GeneratorExit:
            frame = stream.step_in()
            try:
                target.close()
            finally:
                stream.step_out(frame)
            raise
        except BaseException as exc:
            error = exc


def run_generator(stream: Stream, generator: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """The decorated generator: ``generator`` driven inside the block's stream."""
    return _drive(stream, generator)


class _StepAwaitable:
    def __init__(self, stream: Stream, target: _Steppable) -> None:
        self._stream = stream
        self._target = target

    def __await__(self) -> Generator[Any, Any, Any]:
        return _drive(self._stream, self._target)


async def _run_coroutine(stream: Stream, coroutine: Awaitable[Any]) -> Any:
    return await _StepAwaitable(stream, coroutine)  # type: ignore[arg-type]


# The weak references that close a decorated coroutine's inner coroutine when the outer one goes.
_watching: set[weakref.ref[Any]] = set()


def _closer(coroutine: Coroutine[Any, Any, Any]) -> Callable[[weakref.ref[Any]], None]:
    def close(watch: weakref.ref[Any]) -> None:
        _watching.discard(watch)
        # Only one that never started: a suspended one is closed by the outer one's own close
        # (which Python runs after this), inside the block's stream.
        if (
            getattr(coroutine, "cr_frame", None) is not None
            and inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED
        ):
            coroutine.close()

    return close


def run_coroutine(stream: Stream, coroutine: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """The decorated coroutine: every resume of ``coroutine`` runs in the block's stream.

    ``coroutine`` is made at the call, as a plain coroutine is (wrong arguments raise there),
    and closed when the decorated one goes: one closed, or cancelled by asyncio, before its
    first step never runs ``coroutine``, which must not then warn "never awaited".
    """
    outer = _run_coroutine(stream, coroutine)
    _watching.add(weakref.ref(outer, _closer(coroutine)))
    return outer


async def run_async_generator(
    stream: Stream, generator: AsyncGenerator[Any, Any]
) -> AsyncGenerator[Any, Any]:
    """The decorated async generator: each of its steps runs in the block's stream."""
    value: Any = None
    error: BaseException | None = None
    while True:
        step = generator.asend(value) if error is None else generator.athrow(error)
        try:
            item = await _StepAwaitable(stream, step)
        except StopAsyncIteration:
            return
        error = None
        try:
            value = yield item
        except GeneratorExit:
            await _StepAwaitable(stream, generator.aclose())
            raise
        except BaseException as exc:
            error = exc
