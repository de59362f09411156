"""torch's private record of the CUDA seeding queued until CUDA starts, read and swapped directly.

Until CUDA initialises, ``torch.cuda.manual_seed_all``/``manual_seed`` queue their seeding in
``torch.cuda._lazy_seed_tracker`` (three fields: the latest seed-all call, the latest
current-device call, and their order). Reading it (:func:`queued_calls`) is the only way to know
what is queued, so the switch leaves it on. Writing it is the speed trick: torch's own calls
format a stack trace each time they queue (about 100 µs); :class:`SeedQueue` swaps the three
fields with callbacks of ours instead, its layout checked once on a private record of the same
class, and only while torch still uses the record it was made for (checked at every use) and
the switch is on.
"""

from __future__ import annotations

from typing import Any

import torch

from reproducible_block._fast import views
from reproducible_block._support.errors import ReproducibleBlockValueError

__all__ = ["Fields", "SeedAll", "SeedCurrent", "SeedQueue", "queued_calls", "queued_fields"]

#: Queued calls, in the order they apply: ("all", seed) or ("current", seed).
Calls = tuple[tuple[str, int], ...]


class SeedAll:
    """A queued ``manual_seed_all``, as torch queues one, minus the stack trace it formats."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self) -> None:  # pragma: no cover - runs when CUDA initialises (a GPU)
        for index in range(torch.cuda.device_count()):
            torch.cuda.default_generators[index].manual_seed(self.seed)


class SeedCurrent(SeedAll):
    """A queued ``manual_seed`` of the device current at CUDA's initialisation."""

    __slots__ = ()

    def __call__(self) -> None:  # pragma: no cover - runs when CUDA initialises (a GPU)
        torch.cuda.default_generators[torch.cuda.current_device()].manual_seed(self.seed)


def _queued_seed(callback: object) -> int | None:
    """The seed a queued callback applies: ours, or the ``seed`` torch's closure captured."""
    if isinstance(callback, SeedAll):
        return callback.seed
    code = getattr(callback, "__code__", None)
    closure = getattr(callback, "__closure__", None)
    if code is None or closure is None or "seed" not in code.co_freevars:
        return None
    value = closure[code.co_freevars.index("seed")].cell_contents
    return value if isinstance(value, int) else None


class Fields:
    """The three fields of torch's record, as saved on a block's hot path (never mutated)."""

    __slots__ = ("order", "seed_all", "seed_current")

    def __init__(self, seed_all: Any, seed_current: Any, order: Any) -> None:
        self.seed_all = seed_all
        self.seed_current = seed_current
        self.order = order

    def calls(self, before: str = "blocks") -> Calls:
        """The queued calls these fields hold, in the order they apply (``before``: what the
        error's fix must come before).

        >>> queued_fields((("current", 1), ("all", 2))).calls()
        (('current', 1), ('all', 2))
        """
        calls = []
        for entry in self.order:
            if entry is not None:
                seed = _queued_seed(entry[0])
                if seed is None:  # a callback torch's own calls never queue
                    raise ReproducibleBlockValueError(
                        f"the CUDA seeding queued in torch ({entry[0]!r}) holds no seed "
                        f"reproducible_block can read; call torch.cuda.init() before {before}."
                    )
                calls.append(("all" if entry is self.seed_all else "current", seed))
        return tuple(calls)


def queued_fields(calls: Calls) -> Fields:
    """The record's fields for queued calls (ours, with no stack trace)."""
    seed_all = seed_current = None
    order: list[Any] = []
    for kind, seed in calls:
        entry = ((SeedAll if kind == "all" else SeedCurrent)(seed), ())
        if kind == "all":
            seed_all = entry
        else:
            seed_current = entry
    # torch keeps [the other one, the latest]; the latest is the last call.
    if calls and calls[-1][0] == "all":
        order = [seed_current, seed_all]
    elif calls:
        order = [seed_all, seed_current]
    return Fields(seed_all, seed_current, order)


def queued_calls() -> Calls:
    """The calls queued in the record torch uses now (empty without one), in the order they
    apply; what the public path reads too, as no public API reports it."""
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    if tracker is None:  # a torch without the record
        return ()
    return Fields(
        getattr(tracker, "manual_seed_all_cb", None), None, getattr(tracker, "call_order", ())
    ).calls("saving states")


class SeedQueue:
    """torch's record, checked once, for :meth:`read` and :meth:`write` on a block's hot path.

    The check runs on a private record of the same class, never on the one torch uses: a seed
    another thread queued while it ran would be lost. If the layout differs, blocks use the
    public calls.
    """

    def __init__(self) -> None:
        self.tracker: Any = None
        #: torch's lock around its lazy initialisation, which reads the record.
        self.lock: Any = getattr(torch.cuda, "_initialization_lock", None)
        tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
        fields = ("manual_seed_all_cb", "manual_seed_cb", "call_order")
        if (
            tracker is None
            or self.lock is None
            or not all(hasattr(tracker, name) for name in fields)
        ):
            return  # a torch without the record
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            return  # pragma: no cover - needs a GPU
        entry = (SeedAll(0xC0FFEE), ())
        try:
            scratch = type(tracker)()
            scratch.queue_seed_all(*entry)
        except Exception:  # a torch whose record differs
            return
        if (
            all(hasattr(scratch, name) for name in fields)
            and scratch.manual_seed_all_cb == entry
            and scratch.call_order[-1] is scratch.manual_seed_all_cb
        ):
            self.tracker = tracker

    def live(self) -> Any:
        """The checked record, if the switch is on and torch still uses it (and the same
        lock); else None."""
        tracker = self.tracker
        if (
            tracker is None
            or not views.ENABLED
            or getattr(torch.cuda, "_lazy_seed_tracker", None) is not tracker
            or getattr(torch.cuda, "_initialization_lock", None) is not self.lock
        ):
            return None
        return tracker

    @staticmethod
    def read(tracker: Any) -> Fields:
        return Fields(tracker.manual_seed_all_cb, tracker.manual_seed_cb, tracker.call_order)

    @staticmethod
    def write(tracker: Any, fields: Fields) -> None:
        tracker.manual_seed_all_cb = fields.seed_all
        tracker.manual_seed_cb = fields.seed_current
        tracker.call_order = fields.order
