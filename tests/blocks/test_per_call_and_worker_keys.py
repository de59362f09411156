"""Per-call keys (``key_from=``) and per-worker keys (``per_worker=True``).

A decorated per-step function starts its block afresh at every call: without ``key_from`` it
replays one dropout mask on every step. ``key_from`` takes a key part from each call's
arguments, on every binding kind; ``per_worker`` gives each DataLoader worker its own stream.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from reproducible_block import (
    BlockUsageError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    set_seed,
)
from reproducible_block._blocks import stack as _stack
from tests._decorated import step_noise
from tests._worker_datasets import PerWorkerStreams, SharedStreams


def in_block(key: Any) -> torch.Tensor:
    with ReproducibleBlock(key):
        return torch.rand(2)


def masks(step_function: Callable[[int], torch.Tensor], steps: int = 4) -> int:
    """How many distinct dropout masks ``steps`` calls give."""
    return len({tuple(step_function(step).tolist()) for step in range(steps)})


def test_a_decorated_step_replays_its_mask_without_key_from_and_not_with_it() -> None:
    set_seed(0)

    @ReproducibleBlock("step")
    def replayed(step: int) -> torch.Tensor:
        return nn.functional.dropout(torch.ones(16), 0.5)

    @ReproducibleBlock("step", key_from="step")
    def per_step(step: int) -> torch.Tensor:
        return nn.functional.dropout(torch.ones(16), 0.5)

    assert masks(replayed) == 1
    assert masks(per_step) == 4
    with ReproducibleBlock(("step", 2)):
        assert torch.equal(nn.functional.dropout(torch.ones(16), 0.5), per_step(2))


class Model:
    @ReproducibleBlock("method", key_from="step")
    def method(self, batch: int, step: int) -> torch.Tensor:
        """Draws for a step."""
        return torch.rand(2)

    @ReproducibleBlock("classmethod", key_from="step")
    @classmethod
    def klass(cls, batch: int, step: int) -> torch.Tensor:
        """Draws for a step."""
        assert cls is Model
        return torch.rand(2)

    @ReproducibleBlock("staticmethod", key_from="step")
    @staticmethod
    def static(batch: int, step: int) -> torch.Tensor:
        """Draws for a step."""
        return torch.rand(2)


@ReproducibleBlock("function", key_from="step")
def function(batch: int, step: int) -> torch.Tensor:
    """Draws for a step."""
    return torch.rand(2)


@ReproducibleBlock("init", key_from="step")
class Built:
    """Construction runs in ("init", step)."""

    def __init__(self, batch: int, step: int) -> None:
        self.drawn = torch.rand(2)


BINDINGS: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "function": (function, "function"),
    "method": (Model().method, "method"),
    "method via class": (lambda batch, step: Model.method(Model(), batch, step), "method"),
    "classmethod via class": (Model.klass, "classmethod"),
    "classmethod via instance": (Model().klass, "classmethod"),
    "staticmethod via class": (Model.static, "staticmethod"),
    "staticmethod via instance": (Model().static, "staticmethod"),
    "class": (lambda batch, step: Built(batch, step).drawn, "init"),
}


@pytest.mark.parametrize("kind", sorted(BINDINGS))
@pytest.mark.parametrize("by_keyword", [False, True])
def test_key_from_names_an_argument_on_every_binding_kind(kind: str, by_keyword: bool) -> None:
    decorated, key = BINDINGS[kind]
    set_seed(0)
    expected = in_block((key, 3))
    torch.rand(5)
    got = decorated(7, step=3) if by_keyword else decorated(7, 3)
    assert torch.equal(got, expected)
    assert not torch.equal(decorated(7, 4), expected)


def test_the_metadata_survives() -> None:
    set_seed(0)
    assert function.__name__ == "function"
    assert function.__doc__ == "Draws for a step."
    assert str(inspect.signature(function)) == "(batch: 'int', step: 'int') -> 'torch.Tensor'"
    assert str(inspect.signature(Model().method)) == (
        "(batch: 'int', step: 'int') -> 'torch.Tensor'"
    )
    assert type(Built(0, 0)) is Built


def test_a_tuple_key_gets_the_part_appended_and_defaults_count() -> None:
    set_seed(0)

    @ReproducibleBlock(("train", "step"), key_from="step")
    def train(batch: int, *, step: int = 5) -> torch.Tensor:
        return torch.rand(2)

    assert torch.equal(train(0, step=2), in_block(("train", "step", 2)))
    assert torch.equal(train(0), in_block(("train", "step", 5)))  # the default


def test_key_from_a_callable_gives_one_part_or_several() -> None:
    set_seed(0)

    @ReproducibleBlock("batch", key_from=lambda batch, epoch: batch["index"])
    def one(batch: dict[str, int], epoch: int) -> torch.Tensor:
        return torch.rand(2)

    @ReproducibleBlock("batch", key_from=lambda batch, epoch: (epoch, batch["index"]))
    def several(batch: dict[str, int], epoch: int) -> torch.Tensor:
        return torch.rand(2)

    assert torch.equal(one({"index": 4}, epoch=1), in_block(("batch", 4)))
    assert torch.equal(several({"index": 4}, epoch=1), in_block(("batch", 1, 4)))


class Stepper:
    @ReproducibleBlock("stepper", key_from=lambda step: step)
    def step(self, step: int) -> torch.Tensor:
        return torch.rand(2)


def test_a_callable_gets_a_methods_arguments_without_self() -> None:
    set_seed(0)
    assert torch.equal(Stepper().step(6), in_block(("stepper", 6)))


@ReproducibleBlock("generator", key_from="epoch")
def epoch_draws(epoch: int) -> Iterator[torch.Tensor]:
    for _ in range(2):
        yield torch.rand(2)


@ReproducibleBlock("coroutine", key_from="epoch")
async def epoch_draw(epoch: int) -> torch.Tensor:
    await asyncio.sleep(0)
    return torch.rand(2)


@ReproducibleBlock("async-generator", key_from="epoch")
async def epoch_stream(epoch: int) -> AsyncIterator[torch.Tensor]:
    for _ in range(2):
        await asyncio.sleep(0)
        yield torch.rand(2)


def test_generators_and_coroutines_take_their_key_from_each_call() -> None:
    set_seed(0)
    with ReproducibleBlock(("generator", 1)):
        expected = [torch.rand(2), torch.rand(2)]
    got = list(epoch_draws(1))
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert not torch.equal(next(epoch_draws(2)), expected[0])
    assert torch.equal(asyncio.run(epoch_draw(3)), in_block(("coroutine", 3)))

    async def collect() -> list[torch.Tensor]:
        return [item async for item in epoch_stream(4)]

    with ReproducibleBlock(("async-generator", 4)):
        expected = [torch.rand(2), torch.rand(2)]
    got = asyncio.run(collect())
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_key_from_with_a_with_block_is_refused_at_entry() -> None:
    set_seed(0)
    block = ReproducibleBlock("step", key_from="step")  # a decorator in the making: allowed
    before = torch.get_rng_state()
    with pytest.raises(BlockUsageError, match=r"key_from.*decorate"), block:
        pass
    assert torch.equal(torch.get_rng_state(), before)
    assert _stack.open_count() == 0


def test_a_disabled_block_ignores_key_from() -> None:
    set_seed(0)
    calls = []

    @ReproducibleBlock("off", key_from=lambda step: calls.append(step), enabled=False)
    def off(step: int) -> int:
        return step

    assert off(3) == 3
    assert calls == []


def test_bad_key_from_arguments_are_refused_at_decoration() -> None:
    with pytest.raises(ReproducibleBlockTypeError, match="key_from must be the name"):
        ReproducibleBlock("step", key_from=3)  # type: ignore[arg-type]
    with pytest.raises(ReproducibleBlockTypeError, match="key_from must be the name"):
        ReproducibleBlock("step", key_from="not a name")
    with pytest.raises(ReproducibleBlockValueError, match=r"names no argument.*\['batch'\]"):
        ReproducibleBlock("step", key_from="step")(lambda batch: batch)
    with pytest.raises(ReproducibleBlockValueError, match="names no argument"):
        ReproducibleBlock("step", key_from="rest")(lambda *rest: rest)


class Named:
    @ReproducibleBlock("self", key_from="self")
    def method(self) -> None: ...


def test_key_from_self_names_the_instance_which_is_no_key_part() -> None:
    set_seed(0)
    with pytest.raises(ReproducibleBlockTypeError, match=r"key_from='self'.*Named object"):
        Named().method()


def test_a_value_that_is_no_key_part_is_a_clear_error() -> None:
    set_seed(0)

    @ReproducibleBlock("step", key_from="step")
    def train(step: Any) -> None: ...

    with pytest.raises(ReproducibleBlockTypeError, match=r"key_from='step' of .*train.* 0\.5"):
        train(0.5)
    with pytest.raises(ReproducibleBlockValueError, match=r"key_from='step'.*out of range"):
        train(-1)
    with pytest.raises(ReproducibleBlockTypeError, match="does not pass the argument 'step'"):
        train()  # type: ignore[call-arg]
    assert _stack.open_count() == 0


def test_key_from_functions_and_blocks_pickle() -> None:
    set_seed(0)
    assert pickle.loads(pickle.dumps(step_noise)) is step_noise
    assert torch.equal(step_noise(3), in_block(("step-noise", 3)))
    block = ReproducibleBlock("step", key_from="step")
    assert (
        repr(copy.deepcopy(block)) == repr(block) == ("ReproducibleBlock('step', key_from='step')")
    )
    assert block.key_from == "step"


def worker_draws(dataset: IterableDataset[tuple[int, float]]) -> dict[int, list[float]]:
    """Each of two fork workers' draws, by worker id."""
    loader = DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=120
    )
    draws: dict[int, list[float]] = {0: [], 1: []}
    for worker, value in loader:
        draws[worker].append(value)
    return draws


@pytest.mark.slow
def test_per_worker_gives_each_worker_its_stream_and_repeats_between_runs() -> None:
    set_seed(0)
    per_worker = worker_draws(PerWorkerStreams())
    assert per_worker[0] != per_worker[1]
    assert worker_draws(PerWorkerStreams()) == per_worker
    # The main process folds in worker id 0.
    assert [value for _, value in PerWorkerStreams()] == per_worker[0]
    # Without per_worker, both workers draw the same stream.
    shared = worker_draws(SharedStreams())
    assert shared[0] == shared[1]
