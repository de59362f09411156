"""Loader generators: a data order of its own, unmoved by validation passes, dropout or models."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reproducible_block import (
    NotSeededError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    numpy_generator,
    register_generator,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block._streams import root as _root
from tests._worker_datasets import AugmentedSamples, unbatch

EPOCHS = 3
LENGTH = 16


def validation_pass() -> None:
    """Creating an iterator over an unshuffled loader still draws from torch's global RNG."""
    next(iter(DataLoader(range(8), batch_size=4)))


def extra_dropout() -> None:
    torch.nn.Dropout(0.5)(torch.ones(8))


def nothing() -> None:
    pass


def shuffle_orders(between_epochs: Callable[[], None], how: str) -> list[list[int]]:
    """The shuffled order of each epoch, with ``between_epochs`` run after each epoch.

    ``how``: "global" (no generator: the usual DataLoader), "one" (one loader generator for the
    whole run) or "per-epoch" (the generator reset from ``("data", epoch)`` every epoch).
    """
    set_seed(0)
    generator = None
    if how == "one":
        generator = torch_generator("data")
    elif how == "per-epoch":
        generator = torch.Generator()
    loader = DataLoader(range(LENGTH), batch_size=4, shuffle=True, generator=generator)
    orders = []
    for epoch in range(EPOCHS):
        if how == "per-epoch" and generator is not None:
            generator.set_state(torch_generator(("data", epoch)).get_state())
        orders.append([index for batch in loader for index in batch.tolist()])
        between_epochs()
    return orders


@pytest.mark.parametrize("disturbance", [validation_pass, extra_dropout])
@pytest.mark.parametrize("how", ["one", "per-epoch"])
def test_shuffle_order_ignores_other_draws_with_a_loader_generator(
    disturbance: Callable[[], None], how: str
) -> None:
    undisturbed = shuffle_orders(nothing, how)
    assert shuffle_orders(disturbance, how) == undisturbed
    assert all(sorted(order) == list(range(LENGTH)) for order in undisturbed)
    assert len({tuple(order) for order in undisturbed}) == EPOCHS  # epochs are reshuffled


@pytest.mark.parametrize("disturbance", [validation_pass, extra_dropout])
def test_shuffle_order_moves_with_other_draws_without_a_loader_generator(
    disturbance: Callable[[], None],
) -> None:
    undisturbed = shuffle_orders(nothing, "global")
    disturbed = shuffle_orders(disturbance, "global")
    assert disturbed[0] == undisturbed[0]
    assert disturbed[1] != undisturbed[1]


def test_per_epoch_keys_let_a_resumed_run_repeat_the_order() -> None:
    full_run = shuffle_orders(nothing, "per-epoch")
    set_seed(0)  # a fresh process resuming at the last epoch
    _ = torch.rand(1000)  # having drawn differently, e.g. loading a checkpoint
    generator = torch_generator(("data", EPOCHS - 1))
    loader = DataLoader(range(LENGTH), batch_size=4, shuffle=True, generator=generator)
    assert [index for batch in loader for index in batch.tolist()] == full_run[-1]


def worker_torch_seeds(between: Callable[[], None], use_generator: bool) -> list[list[int]]:
    """The torch seed of each fork worker in two epochs, with ``between`` run in between."""
    set_seed(0)
    generator = torch_generator("data") if use_generator else None
    loader = DataLoader(
        AugmentedSamples(),
        batch_size=4,
        shuffle=True,
        generator=generator,
        num_workers=2,
        multiprocessing_context="fork",
        timeout=120,
        worker_init_fn=seed_worker,
    )
    seeds = []
    for _ in range(2):
        seeds.append(sorted({sample["torch_seed"] for sample in unbatch(loader)}))
        between()
    return seeds


@pytest.mark.slow
def test_loader_generator_also_fixes_the_workers_seeds() -> None:
    # The DataLoader draws its workers' base seed from the loader generator too.
    assert worker_torch_seeds(validation_pass, True) == worker_torch_seeds(nothing, True)
    without = worker_torch_seeds(nothing, False)
    assert worker_torch_seeds(validation_pass, False)[1] != without[1]


def global_states() -> tuple[object, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


@pytest.mark.parametrize("inside_a_block", [False, True])
def test_loader_generators_leave_every_global_generator_alone(inside_a_block: bool) -> None:
    set_seed(0)
    with ReproducibleBlock("outer", enabled=inside_a_block):
        before = global_states()
        torch_generator(("data", 1))
        torch_generator(("data", 1), device=torch.device("cpu"))
        numpy_generator(("data", 1))
        assert global_states() == before


def test_same_key_same_stream_other_keys_or_roots_other_streams() -> None:
    set_seed(0)
    epoch0 = ("data", 0)
    first = torch.rand(5, generator=torch_generator(epoch0))
    assert torch.equal(torch.rand(5, generator=torch_generator(epoch0)), first)
    assert torch.equal(torch.rand(5, generator=torch_generator(("data", 0))), first)
    assert not torch.equal(torch.rand(5, generator=torch_generator(("data", 1))), first)
    numpy_first = numpy_generator(epoch0).random(5)
    assert np.array_equal(numpy_generator(epoch0).random(5), numpy_first)
    assert not np.array_equal(numpy_generator(("data", 1)).random(5), numpy_first)
    set_seed(1)
    assert not torch.equal(torch.rand(5, generator=torch_generator(epoch0)), first)
    assert not np.array_equal(numpy_generator(epoch0).random(5), numpy_first)


def test_loader_generators_are_independent_of_the_blocks_own_streams() -> None:
    set_seed(0)
    loader_torch = torch.rand(5, generator=torch_generator("augment"))
    loader_numpy = numpy_generator("augment").integers(0, 2**32, 5)
    with ReproducibleBlock("augment"):
        inside_torch = torch.rand(5)
        inside_numpy = np.random.randint(0, 2**32, 5, dtype=np.uint64)
    assert not torch.equal(loader_torch, inside_torch)
    assert not np.array_equal(loader_numpy, inside_numpy)


def test_registered_generator_named_like_a_loader_kind_gets_another_stream() -> None:
    mine = torch.Generator()
    register_generator(mine, name="loader.torch")
    set_seed(0)
    with ReproducibleBlock("augment"):
        inside = torch.rand(5, generator=mine)
    assert not torch.equal(torch.rand(5, generator=torch_generator("augment")), inside)


def test_loader_generators_need_a_root() -> None:
    _root.replace_seed(None)
    with pytest.raises(NotSeededError, match="torch_generator"):
        torch_generator("data")
    with pytest.raises(NotSeededError, match="numpy_generator"):
        numpy_generator("data")


@pytest.mark.parametrize("device", ["bogus", "cpu:x"])
def test_torch_generator_refuses_what_is_not_a_device(device: str) -> None:
    set_seed(0)
    with pytest.raises(ReproducibleBlockValueError, match="not a torch device"):
        torch_generator("data", device=device)


@pytest.mark.parametrize("device", [0, 1.5, None])
def test_torch_generator_refuses_a_device_of_another_type(device: object) -> None:
    set_seed(0)
    with pytest.raises(ReproducibleBlockTypeError, match="device must be"):
        torch_generator("data", device=device)  # type: ignore[arg-type]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize("device", ["meta", pytest.param("cuda", marks=NO_CUDA, id="cuda-absent")])
def test_torch_generator_refuses_a_device_without_a_generator(device: str) -> None:
    set_seed(0)
    with pytest.raises(ReproducibleBlockValueError, match="no generator here"):
        torch_generator("data", device=device)
    assert not torch.cuda.is_initialized()  # type: ignore[no-untyped-call]


@pytest.mark.cuda
def test_torch_generator_on_cuda() -> None:
    set_seed(0)
    generator = torch_generator(("data", 0), device="cuda")
    assert generator.device.type == "cuda"
    first = torch.rand(5, device="cuda", generator=generator)
    again = torch.rand(5, device="cuda", generator=torch_generator(("data", 0), device="cuda"))
    other = torch.rand(5, device="cuda", generator=torch_generator(("data", 1), device="cuda"))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
