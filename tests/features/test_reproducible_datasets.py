"""``ReproducibleDataset`` and ``ReproducibleIterableDataset`` in this process."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    ReproducibleDataset,
    ReproducibleIterableDataset,
    ReproducibleSampler,
    SampleIndex,
    set_seed,
)
from tests._sampler_datasets import LENGTH, Augmented, Stream


@pytest.fixture(autouse=True)
def _seeded() -> None:
    set_seed(5)


def test_a_sample_runs_in_the_block_of_its_key_epoch_and_index() -> None:
    wrapped = ReproducibleDataset(Augmented())
    with ReproducibleBlock(("sample", 2, 7)):
        expected = Augmented()[7]
    assert torch.equal(wrapped[SampleIndex(7, epoch=2)][1], expected[1])
    assert not torch.equal(wrapped[SampleIndex(7, epoch=3)][1], expected[1])  # new each epoch
    with ReproducibleBlock(("sample", 7)):
        plain = Augmented()[7]
    assert torch.equal(wrapped[7][1], plain[1])  # a plain int: the same every epoch


def test_the_callers_streams_continue_as_if_no_sample_ran() -> None:
    wrapped = ReproducibleDataset(Augmented())
    set_seed(5)
    wrapped[SampleIndex(1, epoch=0)]
    after = (torch.rand(()), np.random.rand(), random.random())
    set_seed(5)
    assert after == (torch.rand(()), np.random.rand(), random.random())


def test_getitems_gives_what_getitem_gives_in_any_order() -> None:
    wrapped = ReproducibleDataset(Augmented())
    indices = [SampleIndex(index, epoch=1) for index in (5, 0, 3)]
    batch = wrapped.__getitems__(indices)
    for index, sample in zip(indices, batch, strict=True):
        assert torch.equal(sample[1], wrapped[index][1])
    reversed_batch = wrapped.__getitems__(indices[::-1])
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batch, reversed_batch[::-1], strict=True))


def test_sources_limit_the_block_to_those_generators() -> None:
    wrapped = ReproducibleDataset(Augmented(), sources=("torch",))
    first = wrapped[SampleIndex(4, epoch=0)][1]
    second = wrapped[SampleIndex(4, epoch=0)][1]
    assert first[0] == second[0]  # torch: in the block
    assert first[1] != second[1]  # NumPy's global generator: not managed, it moved on


def test_the_wrapped_dataset_is_reachable_and_sets_the_length() -> None:
    inner = Augmented()
    wrapped = ReproducibleDataset(inner, key=("sample", "train"))
    assert wrapped.dataset is inner
    assert len(wrapped) == LENGTH
    assert wrapped.sample_key(SampleIndex(3, epoch=1)) == ("sample", "train", 1, 3)


def test_plain_lists_and_tensors_work_with_the_sampler() -> None:
    sampler = ReproducibleSampler(5)
    values = torch.arange(10, 15)
    assert [int(values[index]) for index in sampler] == [10 + i for i in sampler.order(0)]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ReproducibleDataset(3), ReproducibleBlockTypeError, "map-style"),  # type: ignore[arg-type]
        (lambda: ReproducibleDataset([1], key=1.5), ReproducibleBlockTypeError, "key"),  # type: ignore[arg-type]
        (
            lambda: ReproducibleDataset([1], sources=()),
            ReproducibleBlockValueError,
            "manages nothing",
        ),
        (lambda: ReproducibleDataset([1])[-1], ReproducibleBlockValueError, "index must be"),
        (lambda: ReproducibleIterableDataset(3), ReproducibleBlockTypeError, "iterable"),  # type: ignore[arg-type]
        (
            lambda: ReproducibleIterableDataset([]).set_epoch(-1),
            ReproducibleBlockValueError,
            "epoch",
        ),
    ],
)
def test_bad_input_is_refused(build: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_an_iterable_dataset_gets_a_stream_per_epoch() -> None:
    stream = ReproducibleIterableDataset(Stream())
    passes = [list(stream) for _ in range(3)]  # epochs 0, 1, 2 counted
    assert len({tuple(values) for values in passes}) == 3
    stream.set_epoch(1)
    assert stream.epoch == 1
    assert list(stream) == passes[1]
    assert list(stream) == passes[2]
    with ReproducibleBlock(("stream", 0), per_worker=True):
        assert list(Stream()) == passes[0]


class _WithEpoch(Stream):
    epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def test_set_epoch_reaches_the_wrapped_dataset() -> None:
    inner = _WithEpoch()
    ReproducibleIterableDataset(inner).set_epoch(4)
    assert inner.epoch == 4


@pytest.mark.parametrize(
    "key", ["sample", ("sample", "val"), ("run", np.int64(3)), ("é", 2**64 - 1)], ids=repr
)
def test_a_batch_keys_each_sample_as_getitem_does(key: Any) -> None:
    wrapped = ReproducibleDataset(Augmented(), key=key)
    indices = [SampleIndex(0, epoch=2**64 - 1), 3, SampleIndex(5, epoch=np.int64(1)), 5]
    batch = wrapped.__getitems__(indices)
    set_seed(5)
    alone = [wrapped[index] for index in indices]
    assert [index for index, _ in batch] == [0, 3, 5, 5]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batch, alone, strict=True))
    with ReproducibleBlock(wrapped.sample_key(indices[0]), replay=True):
        again = Augmented()[0]
    assert torch.equal(batch[0][1], again[1])
    assert not torch.equal(batch[2][1], batch[3][1])  # epoch 1 and a plain int: two keys


def test_a_batch_with_a_bad_index_is_refused_before_any_sample_runs() -> None:
    wrapped = ReproducibleDataset(Augmented())
    state = torch.get_rng_state()
    with pytest.raises(ReproducibleBlockValueError, match="2\\*\\*64"):
        wrapped.__getitems__([SampleIndex(0, epoch=0), SampleIndex(1, epoch=2**64)])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("value", "epoch"), [(-1, 0), (0, -1), (1.5, 0), (0, True)])
def test_a_sample_index_refuses_what_is_not_a_non_negative_int(value: Any, epoch: Any) -> None:
    with pytest.raises((ReproducibleBlockTypeError, ReproducibleBlockValueError)):
        SampleIndex(value, epoch)


def test_a_sample_index_keeps_numpy_integers_as_ints() -> None:
    index = SampleIndex(np.int64(3), np.uint8(2))
    assert (int(index), index.epoch, type(index.epoch)) == (3, 2, int)
