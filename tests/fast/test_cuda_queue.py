"""The CUDA source before CUDA starts: torch's queued seeding, swapped without initialising CUDA.

torch queues ``manual_seed_all``/``manual_seed`` calls until CUDA initialises, also on a machine
without CUDA, so the CUDA source's whole CPU side runs here: what it reads is torch's own record,
what it writes is what torch would apply at initialisation. The source is added to the built-in
sources for the test, as it is on a machine with a GPU. Blocks swap the record directly with the
fast paths on (``_fast.cuda_queue``) and through torch's public seeding with them off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from reproducible_block import ReproducibleBlock, get_rng_state, load_rng_state, set_seed
from reproducible_block._sources.devices import CudaSource, QueuedSeeds
from reproducible_block._sources.registry import registry
from tests._fast_switch import fast_paths

TRACKER: Any = torch.cuda._lazy_seed_tracker  # type: ignore[attr-defined]


@pytest.fixture
def fast_on() -> Iterator[None]:
    """The fast paths on: the test checks the record is swapped directly."""
    with fast_paths(True):
        yield


def tracker_fields() -> tuple[Any, Any, Any]:
    return TRACKER.manual_seed_all_cb, TRACKER.manual_seed_cb, TRACKER.call_order


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[CudaSource]:
    """A CUDA source managed as on a GPU machine; torch's record is put back afterwards."""
    saved = tracker_fields()
    source = CudaSource()
    monkeypatch.setattr(registry, "_builtin", (*registry.builtin(), source))
    registry._changed()
    try:
        yield source
    finally:
        TRACKER.manual_seed_all_cb, TRACKER.manual_seed_cb, TRACKER.call_order = saved
        monkeypatch.undo()
        registry._changed()


def test_the_source_swaps_torchs_record_directly_here(cuda: CudaSource) -> None:
    assert cuda._queue.tracker is TRACKER
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


def test_it_reads_what_torch_queued_not_what_it_wrote(cuda: CudaSource) -> None:
    set_seed(3)
    assert cuda.get_state() == QueuedSeeds((("all", 3),))
    torch.manual_seed(7)  # a user's or another library's seeding, before CUDA starts
    assert cuda.get_state() == QueuedSeeds((("all", 7),))
    torch.cuda.manual_seed(9)  # the current device only, queued after
    assert cuda.get_state() == QueuedSeeds((("all", 7), ("current", 9)))
    torch.cuda.manual_seed_all(11)
    assert cuda.get_state() == QueuedSeeds((("current", 9), ("all", 11)))


@pytest.mark.parametrize(
    "calls", [(), (("all", 5),), (("all", 5), ("current", 2**64 - 1)), (("current", 1), ("all", 2))]
)
def test_set_state_queues_what_get_state_reads(
    cuda: CudaSource, calls: tuple[tuple[str, int], ...], fast_on: None
) -> None:
    cuda.set_state(QueuedSeeds(calls))
    assert cuda.get_state() == QueuedSeeds(calls)


def _at_cuda_start(calls: tuple[tuple[str, int], ...]) -> tuple[int, int]:
    """The seeds CUDA's initialisation gives (every other device, the current one) for queued
    ``calls``: each device's generator starts from torch's default seed."""
    others = current = torch.Generator().initial_seed()
    for kind, seed in calls:
        current = seed
        if kind == "all":
            others = seed
    return others, current


@pytest.mark.parametrize(
    "calls",
    [
        (),
        (("all", 5),),
        (("all", 5), ("current", 2**64 - 1)),
        (("current", 1), ("all", 2)),
        (("current", 3),),
    ],
)
def test_without_the_fast_paths_cuda_starts_in_the_same_states(
    cuda: CudaSource, calls: tuple[tuple[str, int], ...]
) -> None:
    set_seed(0)
    with fast_paths(False):
        torch.cuda.manual_seed_all(11)  # something queued that the public calls cannot empty
        cuda.set_state(QueuedSeeds(calls))
        assert _at_cuda_start(cuda.get_state().calls) == _at_cuda_start(calls)
        if any(kind == "all" for kind, _ in calls):
            assert cuda.get_state() == QueuedSeeds(calls)  # read back as it was queued


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
def test_a_block_leaves_the_same_cuda_start_with_either_path(cuda: CudaSource, fast: bool) -> None:
    set_seed(0)
    torch.cuda.manual_seed(4)
    before = cuda.get_state()
    with fast_paths(fast):
        with ReproducibleBlock("gpu"):
            inside = cuda.get_state()
        assert _at_cuda_start(cuda.get_state().calls) == _at_cuda_start(before.calls)
    assert _at_cuda_start(inside.calls)[0] not in (0, 4)


def test_a_block_queues_its_seed_and_gives_torchs_record_back(
    cuda: CudaSource, fast_on: None
) -> None:
    set_seed(0)
    torch.cuda.manual_seed(4)
    before = tracker_fields()
    with ReproducibleBlock("gpu"):
        inside = cuda.get_state()
    with ReproducibleBlock("gpu"):
        assert cuda.get_state() == inside
    with ReproducibleBlock("other"):
        assert cuda.get_state() != inside
    assert tracker_fields() == before  # the very objects torch had queued
    (call,) = inside.calls
    assert call[0] == "all"
    assert call[1] not in (0, 4)


def test_the_block_seed_is_the_same_on_every_rank_and_device(
    cuda: CudaSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeds = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)  # the launcher's rank
        set_seed(0)
        with ReproducibleBlock("init"):
            seeds.append(cuda.get_state())
        with ReproducibleBlock("init", per_rank=True):
            seeds.append(cuda.get_state())
    shared, rank0, shared_again, rank1 = seeds
    assert shared == shared_again
    assert rank0 != rank1
    assert shared.calls[0][0] == "all"  # one seed for every device, as torch.manual_seed


def test_checkpoints_save_and_load_the_queued_seeding(cuda: CudaSource) -> None:
    set_seed(1)
    torch.cuda.manual_seed(6)
    (entry,) = get_rng_state()
    assert entry["sources"]["cuda"] == {
        "kind": "cuda",
        "state": {
            "device_count": torch.cuda.device_count(),
            "queued": [["all", 1], ["current", 6]],
        },
    }
    torch.manual_seed(2)
    load_rng_state([entry])
    assert cuda.get_state() == QueuedSeeds((("all", 1), ("current", 6)))
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


def test_set_seed_queues_the_recipes_seed(cuda: CudaSource) -> None:
    set_seed(12)
    fields = tracker_fields()
    assert cuda.get_state() == QueuedSeeds((("all", 12),))
    assert fields[2][-1] is fields[0]  # torch applies the seed-all call last


def test_a_replaced_record_is_the_one_blocks_swap(
    cuda: CudaSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch reads torch.cuda._lazy_seed_tracker when it queues and when CUDA starts: a record
    # replaced after the source was made is the one blocks must swap (issue 21).
    set_seed(3)
    old_record = tracker_fields()
    fresh = type(TRACKER)()
    monkeypatch.setattr(torch.cuda, "_lazy_seed_tracker", fresh)
    torch.cuda.manual_seed_all(5)  # queued in the new record
    assert cuda.get_state() == QueuedSeeds((("all", 5),))
    with ReproducibleBlock("queued"):
        inside = cuda.get_state()
        assert fresh.call_order[-1][0] is not None
        assert inside != QueuedSeeds((("all", 5),))
    with ReproducibleBlock("queued"):
        assert cuda.get_state() == inside
    assert cuda.get_state() == QueuedSeeds((("all", 5),))
    assert tracker_fields() == old_record  # the old record: untouched


class _CountingRecord(type(TRACKER)):  # type: ignore[misc]
    """torch's record, counting the writes to it (each instance its own)."""

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, "writes", self.__dict__.get("writes", 0) + 1)
        super().__setattr__(name, value)


def test_checking_the_records_layout_never_writes_the_record_torch_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check queued a seed in the live record and put the old fields back: a seed another
    # thread queued in between was lost (issue 21).
    record = _CountingRecord()
    monkeypatch.setattr(torch.cuda, "_lazy_seed_tracker", record)
    torch.cuda.manual_seed_all(5)
    writes = record.writes
    source = CudaSource()
    assert source._queue.tracker is record  # checked, and used
    assert record.writes == writes
    assert source.get_state() == QueuedSeeds((("all", 5),))


def test_a_queued_callback_without_a_seed_is_refused(cuda: CudaSource) -> None:
    from reproducible_block import ReproducibleBlockValueError

    set_seed(0)
    TRACKER.manual_seed_all_cb = (lambda: None, ())  # a callback no seeding call of torch's queues
    TRACKER.call_order = [None, TRACKER.manual_seed_all_cb]
    with pytest.raises(ReproducibleBlockValueError, match="holds no seed"):
        cuda.get_state()


def test_a_torch_without_the_record_is_seeded_through_its_public_calls(
    cuda: CudaSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reproducible_block._fast.cuda_queue import SeedQueue, queued_calls

    monkeypatch.setattr(torch.cuda, "_lazy_seed_tracker", None)
    assert queued_calls() == ()
    assert SeedQueue().tracker is None


class _RefusingRecord(type(TRACKER)):  # type: ignore[misc]
    """A record whose queueing works otherwise than torch's."""

    def queue_seed_all(self, cb: Any, traceback: Any) -> None:
        raise TypeError("queued differently")


def test_a_record_that_queues_otherwise_is_not_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproducible_block._fast.cuda_queue import SeedQueue

    monkeypatch.setattr(torch.cuda, "_lazy_seed_tracker", _RefusingRecord())
    assert SeedQueue().tracker is None
