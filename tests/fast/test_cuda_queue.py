"""The CUDA source before CUDA starts: torch's queued seeding, swapped without initialising CUDA.

torch queues ``manual_seed_all``/``manual_seed`` calls until CUDA initialises, also on a machine
without CUDA, so the CUDA source's whole CPU side runs here: what it reads is torch's own record,
what it writes is what torch would apply at initialisation. The source is added to the built-in
sources for the test, as it is on a machine with a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from reproducible_block import ReproducibleBlock, get_rng_state, load_rng_state, set_seed
from reproducible_block._sources.registry import registry
from reproducible_block._sources.torch_random import CudaSource, QueuedSeeds

TRACKER: Any = torch.cuda._lazy_seed_tracker  # type: ignore[attr-defined]


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
    cuda: CudaSource, calls: tuple[tuple[str, int], ...]
) -> None:
    cuda.set_state(QueuedSeeds(calls))
    assert cuda.get_state() == QueuedSeeds(calls)


def test_a_block_queues_its_seed_and_gives_torchs_record_back(cuda: CudaSource) -> None:
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
            "device_count": torch.cuda.device_count(), "queued": [["all", 1], ["current", 6]]
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
