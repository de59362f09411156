"""find_nondeterminism(), trace_ops() and compare_traces(): the first op whose outputs differ."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    set_seed,
)
from reproducible_block.diagnostics import (
    NondeterminismError,
    OpTrace,
    _ops,
    assert_deterministic,
    compare_traces,
    find_nondeterminism,
    trace_ops,
)
from tests._spawn import run_python

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


def line_of(marker: str, path: Path = HERE) -> str:
    """``file:line`` of the line in ``path`` that holds ``marker`` (once)."""
    lines = [
        number
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if marker in text and "line_of(" not in text
    ]
    assert len(lines) == 1, lines
    return f"{path}:{lines[0]}"


class UnseededNoise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()  # seeded from the OS: a new stream every run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.from_numpy(self.rng.standard_normal(x.shape, dtype=np.float32))  # NUMPY
        return x + noise


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.noise = UnseededNoise()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.noise(self.encoder(x)))


def test_an_unseeded_numpy_generator_is_named_with_its_module_and_line() -> None:
    set_seed(0)
    found = find_nondeterminism(Net(), torch.ones(2, 4))
    assert found is not None
    assert found.op == "aten.lift_fresh.default"  # where the NumPy data becomes a tensor
    assert (found.module, found.module_type) == ("Net.noise", "UnseededNoise")
    assert found.line == line_of("# NUMPY")
    assert found.source is not None
    assert found.source.startswith("noise = torch.from_numpy(")
    assert (found.differing, found.elements) == (8, 8)
    assert found.max_abs_difference is not None
    assert found.max_abs_difference > 0
    assert str(found).startswith("the first op whose outputs differ is aten.lift_fresh.default")
    assert "in module Net.noise (UnseededNoise)" in str(found)


class ThreadSum(nn.Module):
    """Threads append their parts in the order they finish; the test decides that order."""

    def __init__(self, orders: Iterator[tuple[int, ...]]) -> None:
        super().__init__()
        self.orders = orders

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = (1e8, 1.0, -1e8)  # a float32 sum that depends on the order
        parts: list[torch.Tensor] = []
        gates = [threading.Event() for _ in values]

        def work(index: int) -> None:
            gates[index].wait()
            parts.append(torch.full((), values[index]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(values))]
        for thread in threads:
            thread.start()
        for index in next(self.orders):  # release one thread, wait for it to finish
            gates[index].set()
            threads[index].join()
        return torch.stack(parts).sum() * x  # STACK


def test_a_thread_order_dependent_sum_is_named() -> None:
    model = nn.Sequential(nn.Identity(), ThreadSum(itertools.cycle([(0, 1, 2), (2, 1, 0)])))
    found = find_nondeterminism(model, torch.ones(()))
    assert found is not None
    assert found.op == "aten.stack.default"
    assert (found.module, found.module_type) == ("Sequential.1", "ThreadSum")
    assert found.line == line_of("# STACK")
    assert (found.differing, found.elements) == (2, 3)
    assert found.max_abs_difference == 2e8


@pytest.mark.slow
def test_a_set_iterated_in_hash_order_differs_across_processes(tmp_path: Path) -> None:
    traces = []
    orders = []
    for seed in ("1", "2"):
        out = tmp_path / f"trace-{seed}.json"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run_python(
            module="tests._hash_order_worker", args=[str(out)], cwd=ROOT, env=env, check=True
        )
        data = json.loads(out.read_text())
        orders.append(data["order"])
        traces.append(OpTrace.from_json(data["trace"]))
    assert orders[0] != orders[1]  # the two hash seeds iterate the set differently
    found = compare_traces(*traces)
    assert found is not None
    assert found.op == "aten.lift_fresh.default"
    assert (found.module, found.module_type) == ("Model.mixer", "Mixer")
    assert found.line == line_of("# INJECTED", ROOT / "tests" / "_hash_order_worker.py")
    assert found.differing is not None
    assert found.differing > 0


def test_deterministic_code_is_clean_and_the_callers_stream_is_kept() -> None:
    set_seed(0)

    def train() -> tuple[torch.Tensor, torch.Tensor]:
        with ReproducibleBlock("train"):
            model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
            loss = model(torch.ones(2, 3)).sum()
            loss.backward()
            weight = model[0].weight.grad
            assert weight is not None
            return loss, weight

    before = torch.get_rng_state()
    assert find_nondeterminism(train) is None
    assert find_nondeterminism(lambda: torch.rand(3) + random.random()) is None
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_in_train_mode_passes_both_tools(momentum: float | None) -> None:
    set_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=momentum)).train()
    norm = model[1]
    assert isinstance(norm, nn.BatchNorm1d)
    x = torch.randn(8, 4)
    assert_deterministic(model, x)
    assert find_nondeterminism(model, x) is None
    # Both runs started from the caller's running statistics: they hold what one run left.
    assert norm.num_batches_tracked is not None
    assert int(norm.num_batches_tracked) == 3


def test_an_unseeded_generator_behind_batchnorm_is_caught_by_both_tools() -> None:
    set_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), UnseededNoise()).train()
    x = torch.randn(8, 4)
    with pytest.raises(NondeterminismError):
        assert_deterministic(model, x)
    found = find_nondeterminism(model, x)
    assert found is not None
    assert found.op == "aten.lift_fresh.default"
    assert (found.module, found.module_type) == ("Sequential.1", "UnseededNoise")


def test_tensors_made_and_changed_by_the_function_are_its_own() -> None:
    made: list[torch.Tensor] = []

    def fill() -> torch.Tensor:
        made.append(torch.zeros(3).add_(1))
        return made[-1]

    assert find_nondeterminism(fill) is None
    assert [value.tolist() for value in made] == [[1.0, 1.0, 1.0]] * 2


def test_a_state_written_through_an_unannotated_view_is_put_back() -> None:
    counts = torch.zeros(4)

    def count() -> torch.Tensor:
        # _unsafe_view's schema declares no alias, yet its output shares counts' memory.
        flat = torch.ops.aten._unsafe_view.default(counts, [2, 2])
        flat.add_(1)
        return torch.ones(2)

    assert find_nondeterminism(count) is None
    assert counts.tolist() == [1.0] * 4  # what one run left


def test_uninitialised_memory_is_not_a_difference() -> None:
    assert find_nondeterminism(lambda: torch.empty(1000).fill_(1.0)) is None


def test_a_difference_outside_torch_ops_is_reported_without_an_op() -> None:
    counter = itertools.count()
    found = find_nondeterminism(lambda: (torch.ones(2).sum(), next(counter)))
    assert found is not None
    assert found.op is None
    assert found.index is None
    assert (
        "every torch op's outputs agree (2 ops), but the results differ at result[1]: 0 vs 1"
        in str(found)
    )


def test_runs_that_take_different_paths_are_named() -> None:
    flags = iter([True, False])

    def branching(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if next(flags) else x + 2

    found = find_nondeterminism(branching, torch.ones(2))
    assert found is not None
    assert found.op == "aten.mul.Tensor"
    assert found.index == 0
    assert "the runs took different paths at op 0" in str(found)
    assert "the second aten.add.Tensor (op 0)" in str(found)


def test_a_run_with_more_ops_is_named() -> None:
    extra = iter([False, True])

    def growing(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        return y + 1 if next(extra) else y

    found = find_nondeterminism(growing, torch.ones(2))
    assert found is not None
    assert found.op == "aten.add.Tensor"
    assert found.index == 1
    assert "the second ran more" in str(found)


@pytest.mark.parametrize(
    ("second", "words"),
    [
        (lambda: torch.ones(3, dtype=torch.float64), "dtype torch.float32 vs torch.float64"),
        (lambda: torch.ones(4), "shape (3,) vs (4,)"),
    ],
)
def test_outputs_of_another_dtype_or_shape_are_described(second: object, words: str) -> None:
    found = compare_traces(trace_ops(lambda: torch.ones(3)), trace_ops(second))  # type: ignore
    assert found is not None
    assert found.op == "aten.ones.default"
    assert words in str(found)


def test_values_over_the_budget_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ops, "KEPT_VALUES_BYTES", 0)
    found = compare_traces(
        trace_ops(lambda: torch.full((3,), 1.0)), trace_ops(lambda: torch.full((3,), 0.0))
    )
    assert found is not None
    assert found.op == "aten.full.default"
    assert found.differing is None
    assert found.elements == 3
    assert "not kept" in str(found)


def test_signed_zeros_differ_in_bits_not_values() -> None:
    flipped = compare_traces(
        trace_ops(lambda: torch.tensor([0.0]) * 1), trace_ops(lambda: torch.tensor([-0.0]) * 1)
    )
    assert flipped is not None
    assert flipped.differing == 0
    assert "signed zeros" in str(flipped)


def test_scalar_outputs_and_several_outputs_are_compared() -> None:
    one = trace_ops(lambda: (torch.tensor([1.0, 2.0]).sum().item(), torch.tensor([3, 1]).sort()))
    two = trace_ops(lambda: (torch.tensor([1.0, 2.0]).sum().item(), torch.tensor([1, 3]).sort()))
    found = compare_traces(one, two)
    assert found is not None
    assert found.op == "aten.lift_fresh.default"
    assert [call.op for call in one.ops][-1] == "aten.sort.default"
    assert any(out.dtype == "float" for call in one.ops for out in call.outputs)
    sorted_a, sorted_b = one.ops[-1], two.ops[-1]
    assert len(sorted_a.outputs) == 2
    assert sorted_a.outputs[0].fingerprint == sorted_b.outputs[0].fingerprint
    indices = compare_traces(OpTrace((sorted_a,)), OpTrace((sorted_b,)))
    assert indices is not None
    assert indices.output == 1
    assert "(output 1)" in str(indices)


def test_traces_travel_as_json() -> None:
    third = torch.tensor([1 / 3], dtype=torch.float64)
    trace = trace_ops(
        lambda: (
            torch.arange(4).float() / 3,
            torch.tensor([True]),
            torch.tensor([1 + 2j]),
            third.sum().item(),
            torch.ones(2, dtype=torch.long).sum().item(),
        )
    )
    again = OpTrace.from_json(trace.to_json())
    assert compare_traces(trace, again) is None
    scalars = [out for call in again.ops for out in call.outputs if out.dtype in ("float", "int")]
    assert [out.values.item() for out in scalars] == [1 / 3, 2]  # type: ignore[union-attr]
    in_memory = [out for call in trace.ops for out in call.outputs if out.dtype == "float"]
    assert in_memory[0].values is not None
    assert in_memory[0].values.item() == 1 / 3
    assert len(again) == len(trace)
    assert again.ops[0].line == trace.ops[0].line
    with pytest.raises(ReproducibleBlockValueError, match="not an op trace"):
        OpTrace.from_json('{"format": "other"}')
    with pytest.raises(ReproducibleBlockValueError, match="not an op trace"):
        OpTrace.from_json("[1, 2]")


def test_scalars_beyond_int64_are_fingerprinted_not_kept() -> None:
    def item(value: int) -> int:
        return int(torch.tensor([value], dtype=torch.uint64).item())

    small, huge = trace_ops(item, 2**63 - 1).ops[-1], trace_ops(item, 2**64 - 1).ops[-1]
    assert small.outputs[0].values is not None
    assert huge.outputs[0].dtype == "int"
    assert huge.outputs[0].values is None
    found = compare_traces(OpTrace((small,)), OpTrace((huge,)))
    assert found is not None
    assert "not kept" in str(found)


def test_meta_and_sparse_outputs_are_not_compared() -> None:
    trace = trace_ops(lambda: (torch.ones(2, device="meta") + 1, torch.eye(2).to_sparse()))
    compared = [
        out.fingerprint
        for call in trace.ops
        for out in call.outputs
        if out.dtype == "torch.float32" and call.op != "aten.eye.default"
    ]
    assert compared
    assert all(fingerprint is None for fingerprint in compared)


def test_conjugate_and_negative_views_are_compared_by_their_values() -> None:
    def views() -> torch.Tensor:
        z = torch.complex(torch.rand(3), torch.rand(3))
        return (z.conj() * 2).conj().imag.neg()

    set_seed(0)
    assert find_nondeterminism(views) is None
    ops = [call.op for call in trace_ops(views).ops]
    assert "aten.conj.default" in ops or "aten._conj.default" in ops


def test_a_result_passed_instead_of_a_callable_is_refused() -> None:
    with pytest.raises(ReproducibleBlockTypeError, match=r"find_nondeterminism\(model, x\)"):
        find_nondeterminism(torch.ones(2))  # type: ignore[arg-type]


def test_modules_called_outside_their_parent_get_their_class_name() -> None:
    shared = nn.ReLU()

    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(self.inner(shared(x))) + 1  # shared is not a child of Outer

    trace = trace_ops(Outer(), torch.ones(2))
    assert [(call.op, call.module) for call in trace.ops] == [
        ("aten.relu.default", "Outer.<ReLU>"),
        ("aten.tanh.default", "Outer.inner"),
        ("aten.tanh.default", "Outer.inner"),
        ("aten.add.Tensor", "Outer"),
    ]


def test_tracing_started_inside_a_module_sees_no_module_around_it() -> None:
    traces = []

    class Tracing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            traces.append(trace_ops(torch.neg, x))
            return x

    Tracing()(torch.ones(2))
    assert [(call.op, call.module) for call in traces[0].ops] == [("aten.neg.default", None)]


def test_a_torch_function_traced_directly_gets_the_line_that_asked() -> None:
    found = find_nondeterminism(torch.stack, [torch.ones(2)])  # DIRECT
    assert found is None
    trace = trace_ops(torch.stack, [torch.ones(2)])  # DIRECT TRACE
    assert [(call.op, call.line) for call in trace.ops] == [
        ("aten.stack.default", line_of("# DIRECT TRACE"))
    ]


def test_ops_that_return_nothing_are_traced_without_outputs() -> None:
    tensors = [torch.ones(2)]
    trace = trace_ops(torch._foreach_add_, tensors, 1.0)
    assert [(call.op, call.outputs) for call in trace.ops] == [("aten._foreach_add_.Scalar", ())]


@pytest.mark.cuda
def test_a_nondeterministic_cuda_kernel_is_named() -> None:  # pragma: no cover - needs a GPU
    torch.use_deterministic_algorithms(False)
    values = torch.randn(1_000_000, device="cuda")
    index = torch.zeros(1_000_000, dtype=torch.long, device="cuda")

    def scatter() -> torch.Tensor:
        return torch.zeros(1, device="cuda").index_add_(0, index, values)  # ATOMICS

    found = None
    for _ in range(20):  # atomics order floats differently almost every time
        found = find_nondeterminism(scatter)
        if found is not None:
            break
    assert found is not None
    assert found.op == "aten.index_add_.default"
    assert found.line == line_of("# ATOMICS")


def test_an_op_with_only_torch_frames_above_it_gets_a_placeholder_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ops, "_is_torch", lambda filename: True)  # every frame is torch's
    trace = trace_ops(torch.ones, 2)
    assert trace.ops
    assert {(call.line, call.source) for call in trace.ops} == {("<torch>", "")}
