"""Decorated functions, methods and classes, and blocks themselves, survive pickle and copy.

Module-level decorated functions pickle by reference (as plain functions do); instances of a
decorated class pickle, and the class stays itself; a copied or unpickled block is a fresh block
with the same key and options, never a second handle on the process's generators.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import (
    BlockUsageError,
    NotSeededError,
    ReproducibleBlock,
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    WorkerInit,
    deterministic_mode,
    register_generator,
    seed_worker,
    set_seed,
)
from reproducible_block._sources.registry import registry
from reproducible_block._streams import root as _root
from reproducible_block.compat import Reproducible_Block
from reproducible_block.deterministic import DeterministicSettings
from reproducible_block.diagnostics import (
    NondeterminismError,
    OpTrace,
    compare_traces,
    diff_runs,
    read_ledger,
    record_blocks,
    trace_ops,
    track_consumption,
)
from tests import _decorated
from tests._decorated import Net, Same, Wider, legacy_noise, noise


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_module_level_decorated_function_pickles_by_reference(protocol: int) -> None:
    assert pickle.loads(pickle.dumps(noise, protocol=protocol)) is noise
    set_seed(0)
    assert torch.equal(pickle.loads(pickle.dumps(noise))(3), noise(3))


def test_a_decorated_function_keeps_name_doc_and_signature() -> None:
    assert noise.__name__ == "noise"
    assert noise.__module__ == _decorated.__name__
    assert noise.__doc__ == 'Draws ``size`` numbers in the block "noise".'
    assert str(__import__("inspect").signature(noise)) == "(size: 'int') -> 'torch.Tensor'"


def test_a_local_decorated_function_refuses_pickling_with_a_clear_error() -> None:
    @ReproducibleBlock("local")
    def local() -> None: ...

    with pytest.raises(pickle.PicklingError, match="defined inside a function"):
        pickle.dumps(local)


def test_a_decorated_class_stays_itself_and_its_instances_pickle() -> None:
    set_seed(0)
    model = Net()
    assert type(model) is Net
    assert isinstance(model, torch.nn.Module)
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is Net
    assert torch.equal(clone.layer.weight, model.layer.weight)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # a whole model, as torch.save(model) users do
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False).layer.weight, model.layer.weight)


def test_construction_runs_in_the_block() -> None:
    set_seed(0)
    first = Net().layer.weight
    torch.rand(10)
    assert torch.equal(Net().layer.weight, first)


def test_subclasses_inherit_the_block_through_super_init() -> None:
    set_seed(0)
    base = Net(width=6).layer.weight
    assert torch.equal(Same(width=6).layer.weight, base)  # no __init__ of its own
    before = torch.get_rng_state()
    wider = Wider()
    assert torch.equal(wider.layer.weight, base)  # super().__init__() ran in the block
    torch.set_rng_state(before)
    caller = torch.nn.Linear(2, 2).weight  # extra was drawn from the caller's stream
    assert torch.equal(wider.extra.weight, caller)


def test_decorated_methods_pickle_bound_and_unbound() -> None:
    set_seed(0)
    model = Net()
    bound = pickle.loads(pickle.dumps(model.jitter))
    x = torch.zeros(2)
    assert torch.equal(bound(x), model.jitter(x))
    assert pickle.loads(pickle.dumps(Net.jitter))(model, x).shape == (2,)


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, lambda b: pickle.loads(pickle.dumps(b))]
)
def test_a_copy_of_an_entered_block_isolates_like_the_original(duplicate: object) -> None:
    set_seed(0)
    block = ReproducibleBlock("noise", sources=("torch", "numpy"), per_rank=True)
    with block:
        expected = torch.rand(3)
    twin = duplicate(block)  # type: ignore[operator]
    assert repr(twin) == repr(block)
    assert twin is not block
    caller = torch.get_rng_state()
    with twin:
        assert torch.equal(torch.rand(3), expected)
    assert torch.equal(torch.get_rng_state(), caller)  # the caller's stream did not move


def test_a_copy_taken_while_the_block_is_open_is_closed() -> None:
    set_seed(0)
    block = ReproducibleBlock("open")
    with block:
        twin = copy.deepcopy(block)
        with twin:  # nests like a new block with the same key
            pass
    with twin:
        pass


# Copies of decorated functions and methods: as Python copies functions and bound methods, so that
# copy.deepcopy of a model (an EMA copy) or of a config that holds one works.


class Holder:
    """An object holding a local decorated function and a bound decorated method."""

    def __init__(self) -> None:
        @ReproducibleBlock("local")
        def shift(x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand_like(x)

        self.net = Net()
        self.shift = shift
        self.jitter = self.net.jitter


class Static:
    @ReproducibleBlock("static")
    @staticmethod
    def draw() -> torch.Tensor:
        return torch.rand(2)

    @ReproducibleBlock("class")
    @classmethod
    def owner(cls) -> type:
        return cls


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy])
def test_decorated_functions_copy_as_functions_do(duplicate: Callable[[Any], Any]) -> None:
    set_seed(0)
    local = Holder().shift
    for function in (noise, legacy_noise, local, Net.jitter, Static.draw):
        assert duplicate(function) == function
    assert duplicate(Static.owner)() is Static
    x = torch.zeros(2)
    assert torch.equal(duplicate(local)(x), local(x))
    assert torch.equal(duplicate(Static.draw)(), Static.draw())


def test_a_deep_copy_of_an_object_binds_its_decorated_methods_to_the_copy() -> None:
    set_seed(0)
    holder = Holder()
    clone = copy.deepcopy(holder)
    assert clone.shift is holder.shift
    assert clone.jitter.__self__ is clone.net
    assert copy.copy(holder).jitter.__self__ is holder.net
    x = torch.zeros(3)
    assert torch.equal(clone.jitter(x), holder.jitter(x))
    ema = copy.deepcopy(holder.net)  # the EMA idiom, on a decorated class
    assert type(ema) is Net
    assert torch.equal(ema.jitter(x), holder.net.jitter(x))


# Objects with process state: a copy never shares it.


def test_a_copy_of_seed_worker_is_seed_worker_and_keeps_following_the_root() -> None:
    set_seed(1)
    twins = [copy.copy(seed_worker), copy.deepcopy(seed_worker)]
    assert all(twin is seed_worker for twin in twins)
    set_seed(2)
    twins[1](0)  # a forked worker's call: the root of the process, not of the copy's moment
    assert _root.peek_seed() == 2
    assert pickle.loads(pickle.dumps(seed_worker)) is not seed_worker  # a pickle carries the root


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, pickle.dumps])
def test_a_block_ledger_refuses_to_be_copied_or_pickled(
    tmp_path: Path, duplicate: Callable[[Any], Any]
) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with pytest.raises(ReproducibleBlockTypeError, match=r"ledger\.path.*read_ledger"):
            duplicate(ledger)
        with ReproducibleBlock("after"):  # the ledger still writes
            pass
    assert ledger.records == 1
    assert [record["key"] for record in read_ledger(tmp_path / "ledger.jsonl").records] == ["after"]


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, lambda mode: pickle.loads(pickle.dumps(mode))]
)
def test_a_copy_of_an_open_deterministic_mode_is_a_new_closed_section(
    duplicate: Callable[[Any], Any],
) -> None:
    before = DeterministicSettings.current()
    section = deterministic_mode(warn_only=True)
    with section:
        twin = duplicate(section)
        assert repr(twin) == repr(section)
        with pytest.raises(BlockUsageError, match="not open"):
            twin.__exit__(None, None, None)
        with twin:
            assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    assert DeterministicSettings.current() == before


def test_a_consumption_report_is_copied_after_its_section() -> None:
    set_seed(0)
    with track_consumption() as report:
        torch.rand(1)
        with pytest.raises(BlockUsageError, match="after the section ends"):
            copy.copy(report)
    for twin in (copy.copy(report), copy.deepcopy(report), pickle.loads(pickle.dumps(report))):
        assert (twin.consumed, twin.untouched) == (("torch",), ("random", "numpy"))


@pytest.mark.parametrize(
    "error",
    [
        ReproducibleBlockError("m"),
        ReproducibleBlockTypeError("m"),
        ReproducibleBlockValueError("m"),
        NotSeededError("m"),
        BlockUsageError("m"),
        NondeterminismError("m", path="[1]['logits'][3, 0]", difference=0.25),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_exception_pickles_with_its_message_and_fields(error: Exception) -> None:
    for twin in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert type(twin) is type(error)
        assert twin.args == ("m",)
        assert vars(twin) == vars(error)  # path and difference for NondeterminismError


def test_an_op_trace_equals_its_copies_and_its_json() -> None:
    set_seed(0)
    trace = trace_ops(lambda: torch.nn.Linear(3, 2)(torch.ones(4, 3)).relu())
    assert any(output.values is not None for call in trace.ops for output in call.outputs)
    for twin in (
        copy.deepcopy(trace),
        pickle.loads(pickle.dumps(trace)),
        OpTrace.from_json(trace.to_json()),
    ):
        assert twin == trace
        assert compare_traces(twin, trace) is None


def test_a_deep_copy_of_a_registered_torch_source_manages_its_own_generator() -> None:
    generator = torch.Generator()
    register_generator(generator, name="augment")
    source = registry.registered()["augment"]
    twin = copy.deepcopy(source)
    assert twin.generator is not generator  # type: ignore[attr-defined]
    before = generator.get_state()
    twin.restore(twin.from_bits(bytes(16)))  # installs into the copy only
    assert torch.equal(generator.get_state(), before)
    assert torch.equal(twin.save(), twin.get_state())
    assert pickle.loads(pickle.dumps(source)).name == "augment"


def test_results_and_worker_init_functions_equal_their_copies(tmp_path: Path) -> None:
    set_seed(0)
    for run, draws in (("a", 2), ("b", 3)):
        with record_blocks(tmp_path / run / "ledger.jsonl"), ReproducibleBlock("step"):
            torch.rand(draws)
    found = diff_runs(tmp_path / "a", tmp_path / "b")
    divergence = compare_traces(trace_ops(lambda: torch.ones(3)), trace_ops(lambda: torch.zeros(3)))
    assert divergence is not None
    legacy = Reproducible_Block(block_seed=2, reset_state_after=True)
    with legacy:
        pass
    for duplicate in (copy.copy, copy.deepcopy, lambda value: pickle.loads(pickle.dumps(value))):
        assert duplicate(found) == found
        assert duplicate(divergence) == divergence
        assert duplicate(WorkerInit()).root_seed == 0
        twin = duplicate(legacy)  # 0.0.1's block object, with its one saved state
        assert (twin.block_seed, twin.reset_state_after) == (2, True)
        assert twin.initial_state is not None
        assert twin.initial_state["py"] == legacy.initial_state["py"]  # type: ignore[index]
