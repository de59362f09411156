"""Diagnostics: which generators some code consumed, and whether a function is deterministic."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.registry import check_sources, registry
from reproducible_block._streams import root as _root
from reproducible_block._support.errors import (
    BlockUsageError,
    NondeterminismError,
    ReproducibleBlockTypeError,
)
from reproducible_block._support.fingerprint import state_digest
from reproducible_block.diagnostics._compare import first_difference

__all__ = ["ConsumptionReport", "assert_deterministic", "run_from_same_state", "track_consumption"]

P = ParamSpec("P")
R = TypeVar("R")


class ConsumptionReport:
    """What :func:`track_consumption` saw: for each tracked source, whether its state changed.

    Read it after the ``with`` section ends; before, it raises :class:`BlockUsageError`.
    """

    def __init__(self, sources: tuple[str, ...]) -> None:
        self._sources = sources
        self._changed: dict[str, bool] | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        """The names of the tracked sources, in registry order."""
        return self._sources

    def _result(self) -> dict[str, bool]:
        if self._changed is None:
            raise BlockUsageError(
                "this consumption report is read inside its `with track_consumption()` "
                "section; read .consumed and .untouched after the section ends."
            )
        return self._changed

    @property
    def consumed(self) -> tuple[str, ...]:
        """The sources whose state changed inside the section (they were drawn from or reseeded)."""
        return tuple(name for name, changed in self._result().items() if changed)

    @property
    def untouched(self) -> tuple[str, ...]:
        """The sources whose state at the end equals their state at the start."""
        return tuple(name for name, changed in self._result().items() if not changed)

    def _finish(self, changed: dict[str, bool]) -> None:
        self._changed = changed

    def __getstate__(self) -> dict[str, Any]:
        if self._changed is None:  # a copy would stay open for good: its section never ends
            raise BlockUsageError(
                "this consumption report is copied or pickled inside its `with "
                "track_consumption()` section; copy it after the section ends."
            )
        return self.__dict__

    def __repr__(self) -> str:
        if self._changed is None:
            return f"<ConsumptionReport sources={self._sources!r}, section still open>"
        return f"ConsumptionReport(consumed={self.consumed!r}, untouched={self.untouched!r})"


def _digests(sources: tuple[GeneratorSource[Any], ...]) -> list[bytes]:
    with _stack.held("track_consumption()"):
        return [state_digest(source.get_state()) for source in sources]


@contextmanager
def track_consumption(sources: Iterable[str] | None = None) -> Iterator[ConsumptionReport]:
    """Report, per generator source, whether the code in the ``with`` section changed its state.

    The states are compared as the section sees them: at its start and at its end (also when
    it raises). Inside a block, the section sees the block's stream, so an empty ``consumed``
    shows that the block drew nothing. Around blocks, a block's own draws do not count (the block
    gives its caller's state back on exit), so what is ``consumed`` there was drawn by code
    outside blocks. ``sources`` names the sources to track (default: every managed source).

    A state that changed and came back to its start value counts as untouched. CUDA's state is
    a queued seed until CUDA initialises: initialising it inside the section counts as consuming.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> from reproducible_block.diagnostics import track_consumption
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("eval"), track_consumption() as inside:
    ...     _ = torch.ones(3).sum()
    >>> with track_consumption() as around:
    ...     with ReproducibleBlock("init"):
    ...         _ = torch.rand(3)
    ...     _ = torch.rand(3)  # outside every block
    >>> inside.consumed == () and around.consumed == ("torch",)
    True
    """
    tracked = registry.select(check_sources(sources)).sources
    report = ConsumptionReport(tuple(source.name for source in tracked))
    before = _digests(tracked)
    try:
        yield report
    finally:
        after = _digests(tracked)
        report._finish(
            {
                source.name: start != end
                for source, start, end in zip(tracked, before, after, strict=True)
            }
        )


def run_from_same_state(calls: Sequence[Callable[[], R]]) -> list[R]:
    """Run each of ``calls`` from the caller's current random state; then put that state back.

    Every managed generator and the root are captured first and restored before each call
    after the first, and at the end (also when a call raises), so the caller continues as if
    nothing had run. The calls replay on purpose: each starts with an empty record of the keys
    entered (no :class:`~reproducible_block.RepetitionWarning` for a key the caller or another
    call entered), and the caller's record comes back at the end.
    """
    with _stack.held("running from the same random state"):
        sources = registry.active()
        saved = [source.save() for source in sources]
        entered = _repetition.snapshot()
    root = _root.peek_seed()
    results: list[R] = []
    try:
        for index, call in enumerate(calls):
            if index:
                _atomic.restore_all(sources, saved)
                _root.replace_seed(root)
            _repetition.forget()
            results.append(call())
    finally:
        _atomic.restore_all(sources, saved)
        _root.replace_seed(root)
        _repetition.restore(entered)
    return results


def assert_deterministic(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn(*args, **kwargs)`` twice from the same random state and compare the results.

    Both runs start from the caller's current state of every managed generator (and the same
    root seed); afterwards the caller's state is put back, as if ``fn`` had not run. Returns the
    first run's result. If the results differ (tensors and arrays by value, dtype and shape;
    numbers, str, and lists, tuples, dicts and dataclasses of those), raises
    :class:`NondeterminismError` naming the path to the first differing element, such as
    ``result[1]['logits'][3, 0]``, and how large the difference is.

    Pitfalls: ``fn`` must not depend on what it changes (a model it trains in place, a counter),
    and must draw only from managed generators (register others with ``register_generator``).
    Wrap the call in ``deterministic_mode()`` to make torch raise at a nondeterministic kernel.

    >>> import torch
    >>> from reproducible_block.diagnostics import assert_deterministic
    >>> result = assert_deterministic(lambda n: {"noise": torch.randn(n)}, 3)
    >>> result["noise"].shape == (3,)
    True
    """
    if not callable(fn):
        raise ReproducibleBlockTypeError(
            f"assert_deterministic() needs a callable first, then its arguments; got "
            f"{type(fn).__name__} {fn!r}. Write assert_deterministic(model, x), not "
            "assert_deterministic(model(x))."
        )
    first, second = run_from_same_state([functools.partial(fn, *args, **kwargs)] * 2)
    found = first_difference(first, second)
    if found is not None:
        name = getattr(fn, "__qualname__", repr(fn))
        detail = "; ".join(
            part
            for part in (
                "" if found.magnitude is None else f"absolute difference {found.magnitude:.3g}",
                found.summary,
            )
            if part
        )
        raise NondeterminismError(
            f"{name} gave different results on two runs from the same random state, first at "
            f"result{found.path}: {found.description}"
            + (f" ({detail})" if detail else "")
            + ". Look for a generator reproducible_block does not manage (register_generator), "
            "state that the function changes between calls, or a nondeterministic kernel (run "
            "inside deterministic_mode() to make torch raise at it).",
            path=found.path,
            difference=found.magnitude,
        )
    return first
