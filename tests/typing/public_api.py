"""The public API as users write it, checked by ``mypy --strict`` (pyproject.toml, [tool.mypy]).

Not a test module (no ``test_`` prefix: pytest does not collect it) and never run: mypy reads it.
Each ``assert_type`` fails the type check if an annotation of the library drifts, above all if
``@ReproducibleBlock(...)`` stops keeping the signature of what it decorates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.stateful import Stateful
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import assert_type

import reproducible_block as rb
from reproducible_block import (
    ReproducibleBlock,
    ReproducibleDataset,
    ReproducibleIterableDataset,
    ReproducibleSampler,
    SampleIndex,
    WorkerInit,
    configure_deterministic_mode,
    deterministic_mode,
    get_rng_state,
    load_rng_state,
    numpy_generator,
    register_generator,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block.diagnostics import (
    ConsumptionReport,
    EnvironmentReport,
    OpDivergence,
    OpTrace,
    RunDiff,
    assert_deterministic,
    compare_traces,
    diff_runs,
    environment_report,
    find_nondeterminism,
    ledger_note,
    record_blocks,
    trace_ops,
    track_consumption,
)
from reproducible_block.testing import isolated_random_state

# Seeding.
assert_type(set_seed(0), int)
assert_type(set_seed(), int)
assert_type(set_seed(7, deterministic=True), int)
register_generator(torch.Generator(), name="sampler")
register_generator(np.random.default_rng(0), name="augment")

# The block as a context manager.
with ReproducibleBlock("init") as block:
    assert_type(block, ReproducibleBlock)
    weights = torch.randn(3)
with ReproducibleBlock(("epoch", 3), sources=["torch"], enabled=True, per_rank=True):
    pass
assert_type(block.key, rb.BlockKey)
with ReproducibleBlock("evaluation", replay=True) as replayed:  # re-entered on purpose
    assert_type(replayed.replay, bool)
repetition: type[UserWarning] = rb.RepetitionWarning


# The block as a decorator: the decorated callables keep their signatures.
@ReproducibleBlock("noise")
def noise(shape: tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape) * scale


keeps_signature: Callable[[tuple[int, ...], float], torch.Tensor] = noise
assert_type(noise((2,)), torch.Tensor)
assert_type(noise((2,), scale=0.5), torch.Tensor)
noise("2")  # type: ignore[arg-type]  # mypy sees the parameters (strict: no unused ignores)


class Net(torch.nn.Module):
    @ReproducibleBlock("net-init")
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, width)

    @ReproducibleBlock("dropout", key_from="step")
    def jitter(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return x + torch.rand_like(x)


net = Net(4)
assert_type(net.jitter(torch.zeros(4), step=1), torch.Tensor)
net.jitter(torch.zeros(4), step="one")  # type: ignore[arg-type]
Net("wide")  # type: ignore[arg-type]


@ReproducibleBlock("stream")
def stream(count: int) -> Iterator[float]:
    for _ in range(count):
        yield float(torch.rand(()))


assert_type(list(stream(3)), list[float])


@ReproducibleBlock("async-stream")
async def async_stream(count: int) -> AsyncIterator[int]:
    for index in range(count):
        yield index


assert_type(async_stream(2), AsyncIterator[int])

# Checkpoints.
states = get_rng_state()
assert_type(states, list[dict[str, Any]])
load_rng_state(states)
load_rng_state(states, on_world_size_change="error")
rng_state = rb.RNGState(on_world_size_change="derive")
assert_type(rng_state.state_dict(), dict[str, Any])
rng_state.load_state_dict(rng_state.state_dict())
stateful: Stateful = rng_state  # torch.distributed.checkpoint's protocol

# Data loading.
dataset = TensorDataset(torch.arange(8))
loader = DataLoader(
    dataset,
    batch_size=2,
    shuffle=True,
    num_workers=2,
    worker_init_fn=seed_worker,
    generator=torch_generator("order"),
)
loader = DataLoader(dataset, num_workers=2, worker_init_fn=WorkerInit())
seed_worker(0)

# The sampler and the dataset wrappers.
sampler = ReproducibleSampler(dataset, "order", shuffle=True, num_replicas=2, rank=1)
sampler.set_epoch(3)
assert_type(sampler.epoch, int)
assert_type(len(sampler), int)
assert_type(sampler.order(3), list[int])
assert_type(sampler.state_dict(), dict[str, Any])
assert_type(sampler.state_dict(consumed=4), dict[str, Any])
sampler.load_state_dict(sampler.state_dict())
assert_type(SampleIndex(3, epoch=1).epoch, int)
wrapped = ReproducibleDataset(dataset, "sample", sources=("torch",))
assert_type(wrapped[SampleIndex(3, epoch=1)], tuple[torch.Tensor, ...])
assert_type(wrapped.sample_key(3), rb.BlockKey)
loader = DataLoader(wrapped, sampler=sampler, batch_size=4)
iterable = ReproducibleIterableDataset([1, 2, 3], "stream")
iterable.set_epoch(0)
assert_type(next(iter(iterable)), int)
assert_type(torch_generator(("order", 1), device="cpu", per_rank=True), torch.Generator)
assert_type(numpy_generator("augment", per_worker=False), np.random.Generator)

# Deterministic settings.
configure_deterministic_mode(warn_only=True)
with deterministic_mode(warn_only=False) as settings:
    assert_type(settings, deterministic_mode)

# Diagnostics.
with track_consumption(["torch", "numpy"]) as report:
    torch.rand(1)
assert_type(report, ConsumptionReport)
assert_type(report.consumed, tuple[str, ...])
assert_type(assert_deterministic(noise, (2,)), torch.Tensor)
assert_type(trace_ops(noise, (2,)), OpTrace)
assert_type(compare_traces(trace_ops(noise, (2,)), trace_ops(noise, (2,))), OpDivergence | None)
assert_type(find_nondeterminism(noise, (2,), scale=2.0), OpDivergence | None)
with record_blocks("ledger.jsonl", watch={"weights": weights}):
    ledger_note("loss", 0.5)
assert_type(diff_runs("run-a", "run-b"), RunDiff)
assert_type(environment_report(), EnvironmentReport)

# Users' tests.
with isolated_random_state():
    set_seed(1)
