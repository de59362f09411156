"""``ReproducibleSampler`` and ``SampleIndex`` without processes: the order, epochs, the split
between ranks, the state and its refusals."""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler
from torch.utils.data._utils.collate import default_collate

from reproducible_block import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    ReproducibleSampler,
    SampleIndex,
    set_seed,
    torch_generator,
)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    set_seed(11)


def take(sampler: ReproducibleSampler, count: int | None = None) -> list[int]:
    indices = iter(sampler)
    if count is None:
        return [int(index) for index in indices]
    return [int(next(indices)) for _ in range(count)]


def global_sequence(order: list[int], start: int, stop: int) -> list[int]:
    return [order[position % len(order)] for position in range(start, stop)]


def test_the_order_is_a_permutation_from_the_epochs_torch_generator() -> None:
    sampler = ReproducibleSampler(list(range(30)))
    expected = torch.randperm(30, generator=torch_generator(("order", 0))).tolist()
    assert take(sampler) == expected
    assert sorted(expected) == list(range(30))


def test_without_shuffle_the_order_is_range() -> None:
    sampler = ReproducibleSampler(7, shuffle=False)
    assert take(sampler) == take(sampler) == list(range(7))


def test_each_new_pass_takes_the_next_epoch_and_set_epoch_sets_it() -> None:
    sampler = ReproducibleSampler(20)
    orders = [take(sampler) for _ in range(3)]
    assert orders == [sampler.order(epoch) for epoch in range(3)]
    assert len({tuple(order) for order in orders}) == 3  # a forgotten set_epoch never repeats
    sampler.set_epoch(1)
    assert sampler.epoch == 1
    assert take(sampler) == orders[1]
    assert take(sampler) == orders[2]  # and counting goes on from there


def test_an_iterator_that_is_never_advanced_takes_no_epoch() -> None:
    sampler = ReproducibleSampler(10)
    iter(sampler)  # the DataLoader makes and drops one like this
    assert [index.epoch for index in sampler] == [0] * 10  # type: ignore[attr-defined]


def test_the_order_changes_with_the_key_and_the_root() -> None:
    first = take(ReproducibleSampler(50))
    assert take(ReproducibleSampler(50, key="other")) != first
    set_seed(12)
    assert take(ReproducibleSampler(50)) != first


def test_draws_elsewhere_do_not_move_the_order() -> None:
    first = take(ReproducibleSampler(50))
    torch.rand(100)
    np.random.rand(3)
    assert take(ReproducibleSampler(50)) == first


@pytest.mark.parametrize("length", [0, 1, 10, 11, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_the_ranks_split_one_global_sequence(length: int, world: int, drop_last: bool) -> None:
    samplers = [
        ReproducibleSampler(length, num_replicas=world, rank=rank, drop_last=drop_last)
        for rank in range(world)
    ]
    taken = [take(sampler) for sampler in samplers]
    counts = {len(indices) for indices in taken}
    assert len(counts) == 1  # every rank the same count, as DDP needs
    (count,) = counts
    assert all(len(sampler) == count for sampler in samplers)
    if drop_last:
        assert count == length // world
    else:
        assert count == (-(-length // world) if length else 0)
    interleaved = [taken[rank][step] for step in range(count) for rank in range(world)]
    order = ReproducibleSampler(length).order(0) if length else []
    assert interleaved == global_sequence(order, 0, count * world)


def test_padding_wraps_to_the_start_of_the_epochs_order() -> None:
    order = ReproducibleSampler(5).order(0)
    last = [take(ReproducibleSampler(5, num_replicas=4, rank=rank))[-1] for rank in range(4)]
    assert last == [order[4], order[0], order[1], order[2]]


def test_indices_carry_their_epoch() -> None:
    sampler = ReproducibleSampler(4)
    sampler.set_epoch(6)
    indices = list(sampler)
    assert all(type(index) is SampleIndex and index.epoch == 6 for index in indices)


def test_a_state_resumes_the_same_global_sequence_on_another_world_size() -> None:
    length = 23
    order = ReproducibleSampler(length).order(1)
    two = [ReproducibleSampler(length, num_replicas=2, rank=rank) for rank in range(2)]
    done: list[int] = []
    for sampler in two:
        sampler.set_epoch(1)
    iterators = [iter(sampler) for sampler in two]
    for _ in range(4):  # four rounds on 2 ranks: global positions 0..7
        done += [int(next(indices)) for indices in iterators]
    states = [sampler.state_dict() for sampler in two]
    assert states[0] == states[1]
    assert (states[0]["epoch"], states[0]["position"]) == (1, 8)
    saved = io.BytesIO()
    torch.save(states[0], saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    three = [ReproducibleSampler(length, num_replicas=3, rank=rank) for rank in range(3)]
    for sampler in three:
        sampler.load_state_dict(state)
    rest = [take(sampler) for sampler in three]
    assert all(len(indices) == 5 for indices in rest)  # 15 positions left, 5 rounds of 3
    done += [rest[rank][step] for step in range(5) for rank in range(3)]
    assert done == order  # 8 + 15 = 23: the global sequence, nothing repeated or skipped
    assert all(sampler.state_dict()["epoch"] == 2 for sampler in three)


def test_a_finished_pass_saves_the_next_epoch_from_its_start() -> None:
    sampler = ReproducibleSampler(6, num_replicas=4, rank=1)  # 8 padded positions
    take(sampler)
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)
    indices = iter(sampler)
    *_, last = [next(indices) for _ in range(2)]  # every index of the pass: not finished yet
    assert last.epoch == 1  # type: ignore[attr-defined]
    assert sampler.state_dict()["epoch"] == 2  # its iterator yielded all it takes


def test_consumed_gives_the_state_after_that_many_of_the_running_pass() -> None:
    sampler = ReproducibleSampler(20, num_replicas=2, rank=0)
    sampler.set_epoch(3)
    indices = iter(sampler)
    [next(indices) for _ in range(7)]  # prefetched further than consumed
    state = sampler.state_dict(consumed=4)
    assert (state["epoch"], state["position"]) == (3, 8)
    assert sampler.state_dict(consumed=10)["epoch"] == 4  # all it takes: the next epoch
    with pytest.raises(ReproducibleBlockTypeError, match="consumed must be"):
        sampler.state_dict(consumed=-1.0)  # type: ignore[arg-type]


def test_consumed_needs_a_pass() -> None:
    with pytest.raises(ReproducibleBlockValueError, match="no pass has started"):
        ReproducibleSampler(4).state_dict(consumed=1)


def test_set_epoch_keeps_a_loaded_position_for_the_loaded_epoch_only() -> None:
    state = {**ReproducibleSampler(10).state_dict(), "epoch": 2, "position": 4}
    sampler = ReproducibleSampler(10)
    sampler.load_state_dict(state)
    sampler.set_epoch(2)  # what Lightning and accelerate do at the top of the epoch
    assert take(sampler) == sampler.order(2)[4:]
    sampler.load_state_dict(state)
    sampler.set_epoch(5)
    assert take(sampler) == sampler.order(5)


def test_len_is_the_count_of_the_next_or_running_pass() -> None:
    sampler = ReproducibleSampler(10, num_replicas=3, rank=2)
    assert len(sampler) == 4
    sampler.load_state_dict({**sampler.state_dict(), "position": 6})
    assert len(sampler) == 2
    assert len(take(sampler)) == 2
    assert len(sampler) == 4


def test_batch_sampler_batches_the_order() -> None:
    sampler = ReproducibleSampler(10)
    batches = list(BatchSampler(sampler, batch_size=4, drop_last=False))
    assert [index for batch in batches for index in batch] == sampler.order(0)


def test_sample_index_is_an_int_everywhere_and_keeps_its_epoch() -> None:
    index = SampleIndex(3, epoch=4)
    assert index == 3
    assert hash(index) == hash(3)
    assert int(index) + 1 == 4
    assert type(index + 1) is int
    assert [0, 1, 2, 3][index] == 3
    assert int(np.arange(5)[index]) == 3
    assert int(torch.arange(5)[index]) == 3
    assert torch.equal(default_collate([index, SampleIndex(1, epoch=4)]), torch.tensor([3, 1]))
    for again in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index), copy.copy(index)):
        assert type(again) is SampleIndex
        assert again == 3
        assert again.epoch == 4
    assert repr(index) == "SampleIndex(3, epoch=4)"


@pytest.mark.parametrize(
    ("value", "epoch", "error"),
    [
        (-1, 0, ReproducibleBlockValueError),
        (1, -2, ReproducibleBlockValueError),
        (1.0, 0, ReproducibleBlockTypeError),
        (1, True, ReproducibleBlockTypeError),
    ],
)
def test_a_bad_sample_index_is_refused(value: Any, epoch: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="SampleIndex"):
        SampleIndex(value, epoch)


@pytest.mark.parametrize(
    ("arguments", "options", "error", "message"),
    [
        ((object(),), {}, ReproducibleBlockTypeError, "data_source must be a dataset"),
        ((-1,), {}, ReproducibleBlockValueError, "data_source must be"),
        ((True,), {}, ReproducibleBlockTypeError, "data_source must be a dataset"),
        ((4, ["order"]), {}, ReproducibleBlockTypeError, "key"),
        ((4,), {"shuffle": 1}, ReproducibleBlockTypeError, "shuffle must be True or False"),
        ((4,), {"num_replicas": 0}, ReproducibleBlockValueError, "num_replicas must be"),
        ((4,), {"num_replicas": 2, "rank": 2}, ReproducibleBlockValueError, "rank must be"),
        ((4,), {"drop_last": None}, ReproducibleBlockTypeError, "drop_last must be"),
    ],
)
def test_bad_arguments_are_refused(
    arguments: tuple[Any, ...], options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ReproducibleSampler(*arguments, **options)


def _state(**changes: Any) -> dict[str, Any]:
    return {**ReproducibleSampler(10).state_dict(), **changes}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([1, 2], "is a dict with the keys"),
        ({"epoch": 0, "position": 0}, "is a dict with the keys"),
        (_state(format=2), "format"),
        (_state(length=11), "dataset of 11 samples"),
        (_state(key="'data'"), "saved for the key 'data'"),
        (_state(shuffle=False), "shuffle=False"),
        (_state(epoch=-1), "epoch"),
        (_state(epoch="1"), "epoch"),
        (_state(position=11), "position"),
    ],
)
def test_a_bad_state_is_refused_and_nothing_changes(state: Any, message: str) -> None:
    sampler = ReproducibleSampler(10)
    indices = iter(sampler)
    next(indices)
    before = sampler.state_dict()
    with pytest.raises(ReproducibleBlockValueError, match=message):
        sampler.load_state_dict(state)
    assert sampler.state_dict() == before
    assert [int(index) for index in indices] == sampler.order(0)[1:]
