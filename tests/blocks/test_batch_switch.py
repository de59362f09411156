"""A batch of samples, each in its block, switching from block to block directly
(``ReproducibleDataset.__getitems__``, ``_blocks.batch.each_in_block``): the numbers, the
caller's streams, the ledger's records and the repeated-key warnings are those of one ``with``
block per sample, and failures leave every caller's state back and no block open."""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import (
    BlockUsageError,
    GeneratorSource,
    RepetitionWarning,
    ReproducibleBlock,
    ReproducibleDataset,
    SampleIndex,
    register_generator,
    set_seed,
)
from reproducible_block._blocks import stack
from reproducible_block._blocks import states as _block_states
from reproducible_block._blocks.batch import each_in_block
from reproducible_block.diagnostics import read_ledger, record_blocks
from tests._draws import GENERATOR_KINDS, GeneratorKind
from tests._fast_switch import fast_paths

INDICES = [SampleIndex(index, epoch=2) for index in (4, 0, 7, 3)]


class Drawing:
    """A map-style dataset that draws from one generator kind in ``__getitem__``, as a
    torchvision-style transform does (it never sees a key)."""

    def __init__(self, kind: GeneratorKind, fail_at: int | None = None) -> None:
        self.kind = kind
        self.fail_at = fail_at

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> list[float]:
        drawn = self.kind.draw()
        if index == self.fail_at:
            raise KeyError(index)
        return drawn


def _lock_is_free() -> bool:
    """Whether another thread can take the block lock now (no block left holding it)."""
    found: list[bool] = []

    def take() -> None:
        taken = stack.lock.acquire(False)
        if taken:
            stack.lock.release()
        found.append(taken)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return found[0]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
def test_a_batch_gives_what_each_sample_gives_alone_and_the_caller_continues(
    generator_kind: GeneratorKind, fast: bool
) -> None:
    wrapped = ReproducibleDataset(Drawing(generator_kind))
    with fast_paths(fast):
        set_seed(5)
        before = generator_kind.state()
        batch = wrapped.__getitems__(INDICES)
        assert generator_kind.state() == before  # the caller's stream, untouched
        after_batch = generator_kind.draw()
        set_seed(5)  # another run, one sample at a time, with `with` blocks
        alone = [wrapped[index] for index in INDICES]
        assert generator_kind.draw() == after_batch
    assert batch == alone
    assert len({tuple(sample) for sample in batch}) == len(INDICES)  # a stream per sample


def test_sources_and_plain_int_indices_switch_alike(generator_kind: GeneratorKind) -> None:
    wrapped = ReproducibleDataset(Drawing(generator_kind), key="only-torch", sources=("torch",))
    set_seed(5)
    before = generator_kind.state()
    batch = wrapped.__getitems__([1, 2, 3])
    drew = generator_kind.state() != before  # a kind the blocks leave alone: its stream moved
    set_seed(5)
    alone = [wrapped[index] for index in (1, 2, 3)]
    assert batch == alone
    assert drew is (generator_kind.name != "torch")


class _Nested:
    """A dataset whose ``__getitem__`` draws, enters a block of its own, and draws again."""

    def __getitem__(self, index: int) -> list[float]:
        first = torch.rand(2).tolist()
        with ReproducibleBlock(("inner", index)):
            inner = torch.rand(2).tolist()
        return first + inner + torch.rand(2).tolist()


def test_a_block_nested_in_a_sample_is_as_in_a_with_block() -> None:
    wrapped = ReproducibleDataset(_Nested())
    set_seed(5)
    before = torch.get_rng_state()
    batch = wrapped.__getitems__(INDICES)
    assert torch.equal(torch.get_rng_state(), before)
    set_seed(5)
    assert batch == [wrapped[index] for index in INDICES]
    assert stack.open_count() == 0


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
@pytest.mark.parametrize("failing", [0, 2, 3], ids=["first", "middle", "last"])
def test_a_sample_that_raises_gives_the_caller_its_states_and_leaves_no_block(
    generator_kind: GeneratorKind, fast: bool, failing: int
) -> None:
    fail_at = int(INDICES[failing])
    wrapped = ReproducibleDataset(Drawing(generator_kind, fail_at=fail_at))
    set_seed(5)
    with fast_paths(fast):
        before = generator_kind.state()
        with pytest.raises(KeyError):
            wrapped.__getitems__(INDICES)
        assert generator_kind.state() == before
    assert stack.open_count() == 0
    assert _lock_is_free()


class _Refusing(GeneratorSource[int]):
    """A registered generator whose ``set_state`` refuses the ``refuse``-th state it is given
    (counting from 1): a source that fails while a batch switches to the next sample."""

    def __init__(self, refuse: int) -> None:
        self.state = 0
        self.calls = 0
        self.refuse = refuse

    def get_state(self) -> int:
        return self.state

    def set_state(self, state: int) -> None:
        self.calls += 1
        if self.calls == self.refuse:
            raise RuntimeError("refused")
        self.state = state

    def from_bits(self, bits: bytes) -> int:
        return int.from_bytes(bits, "little")


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "public"])
def test_a_source_that_fails_mid_switch_gives_every_caller_state_back(fast: bool) -> None:
    refusing = _Refusing(refuse=2)  # the first sample installs, the switch to the second fails
    register_generator(refusing, name="refusing")  # the autouse fixture unregisters it
    wrapped = ReproducibleDataset(Drawing(GeneratorKind("torch", lambda: [], lambda: 0)))
    set_seed(5)
    with fast_paths(fast):
        caller = refusing.state
        before = torch.get_rng_state()
        with pytest.raises(RuntimeError, match="refused"):
            wrapped.__getitems__(INDICES)
        assert torch.equal(torch.get_rng_state(), before)
    assert refusing.state == caller
    assert refusing.calls == 3  # the first sample's state, the refused one, the caller's
    assert stack.open_count() == 0
    assert _lock_is_free()


class _Seeding:
    def __getitem__(self, index: int) -> float:
        set_seed(index)
        return 0.0


def test_set_seed_in_a_sample_is_refused_as_in_a_with_block() -> None:
    wrapped = ReproducibleDataset(_Seeding())
    set_seed(5)
    before = torch.get_rng_state()
    with pytest.raises(BlockUsageError, match="inside an open block"):
        wrapped.__getitems__(INDICES)
    assert torch.equal(torch.get_rng_state(), before)
    assert stack.open_count() == 0


class _LeavesABlockOpen:
    def __init__(self) -> None:
        self.left: list[ReproducibleBlock] = []

    def __getitem__(self, index: int) -> float:
        block = ReproducibleBlock(("left-open", index))
        block.__enter__()
        self.left.append(block)
        return 0.0


def test_a_sample_that_leaves_a_block_open_is_refused_as_in_a_with_block() -> None:
    dataset = _LeavesABlockOpen()
    wrapped = ReproducibleDataset(dataset)
    set_seed(5)
    before = torch.get_rng_state()
    with pytest.raises(BlockUsageError, match="closing while a block opened after it"):
        wrapped.__getitems__(INDICES)
    (left,) = dataset.left  # the first sample only: its block could not close
    left.__exit__(None, None, None)
    assert torch.equal(torch.get_rng_state(), before)
    assert stack.open_count() == 0


def test_every_sample_gets_its_ledger_record(tmp_path: Path) -> None:
    wrapped = ReproducibleDataset(Drawing(GeneratorKind("torch", lambda: [], lambda: 0)))
    set_seed(5)
    with record_blocks(tmp_path / "batch.jsonl"):
        wrapped.__getitems__(INDICES)
    set_seed(5)
    with record_blocks(tmp_path / "alone.jsonl"):
        for index in INDICES:
            wrapped[index]
    # Every field but the time of the exit ("t", which orders records across processes).
    batch = [_untimed(record) for record in read_ledger(tmp_path / "batch.jsonl").records]
    alone = [_untimed(record) for record in read_ledger(tmp_path / "alone.jsonl").records]
    assert [record["key"] for record in batch] == [["sample", 2, int(i)] for i in INDICES]
    assert batch == alone


def _untimed(record: dict[str, object]) -> dict[str, object]:
    return {field: value for field, value in record.items() if field != "t"}


def test_plain_int_indices_repeated_in_a_later_batch_warn_once_per_key() -> None:
    wrapped = ReproducibleDataset(Drawing(GeneratorKind("torch", lambda: [], lambda: 0)))
    drawing = ReproducibleDataset(Drawing(GENERATOR_KINDS["torch"]()))
    set_seed(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawing.__getitems__([1, 2, 3])
        drawing.__getitems__([SampleIndex(1, epoch=0), SampleIndex(2, epoch=0)])  # other keys
        assert not caught
        drawing.__getitems__([3, 1, 2])  # "epoch" 2 with plain ints: the same keys again
        drawing.__getitems__([1, 2, 3])
        wrapped.__getitems__([5, 5])  # a key repeated that draws nothing: never warned
    messages = [str(warning.message) for warning in caught]
    assert all(warning.category is RepetitionWarning for warning in caught)
    assert len(messages) == 3
    assert all("('sample', " in message for message in messages)


def test_each_in_block_falls_back_to_with_for_blocks_that_are_more_than_a_switch() -> None:
    set_seed(5)
    blocks = [
        ReproducibleBlock(("mixed", 0)),
        ReproducibleBlock(("mixed", 1), enabled=False),  # draws from the caller's stream
        ReproducibleBlock(("mixed", 2), sources=("torch",)),  # other sources: a close, an entry
        ReproducibleBlock(("mixed", 3)),
    ]
    before = torch.get_rng_state()
    batch = each_in_block(blocks, lambda _: torch.rand(2).tolist(), range(4))
    moved = not torch.equal(torch.get_rng_state(), before)  # the disabled block drew from it
    set_seed(5)
    alone: list[Any] = []
    for block in blocks:
        with block:
            alone.append(torch.rand(2).tolist())
    assert batch == alone
    assert moved
    assert stack.open_count() == 0


def test_each_in_block_refuses_more_items_than_blocks() -> None:
    set_seed(5)
    with pytest.raises(ValueError, match="zip"):
        each_in_block([ReproducibleBlock("one")], str, [1, 2])
    assert stack.open_count() == 0


def test_a_batch_with_keys_already_derived_gives_what_each_sample_gives_alone() -> None:
    drawing = ReproducibleDataset(Drawing(GENERATOR_KINDS["torch"]()))
    set_seed(5)
    ReproducibleBlock.prepare([("sample", 2, 0), ("sample", 2, 3)])  # cached; 4 and 7 are not
    batch = drawing.__getitems__(INDICES)
    ReproducibleBlock.clear_prepared()
    set_seed(5)
    assert batch == [drawing[index] for index in INDICES]


def test_a_batch_leaves_the_derived_state_cache_to_other_blocks() -> None:
    drawing = ReproducibleDataset(Drawing(GENERATOR_KINDS["torch"]()))
    set_seed(5)
    ReproducibleBlock.clear_prepared()
    with ReproducibleBlock("train"):  # a block the program enters again and again
        pass
    drawing.__getitems__([SampleIndex(index, epoch=1) for index in range(300)])
    assert _block_states.cached_states() == 1  # "train" only: 300 fresh keys pushed nothing out


def test_a_repeated_key_in_a_batch_is_warned_at_the_callers_line() -> None:
    drawing = ReproducibleDataset(Drawing(GENERATOR_KINDS["torch"]()))
    set_seed(5)
    drawing.__getitems__([1])
    line = sys._getframe().f_lineno + 2  # the line of the call below
    with pytest.warns(RepetitionWarning) as caught:
        drawing.__getitems__([1])
    assert f"{__file__}:{line}" in str(caught[0].message)
