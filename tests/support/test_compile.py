"""torch.compile: blocks in compiled code switch streams outside the graph, and repeat.

Real compiles: dynamo with the default inductor backend where the numbers matter (inductor draws
its own way), with the ``eager`` backend where the test is about what dynamo does (it runs the
graphs it captured with eager ops, so numbers equal eager ones, and it compiles in milliseconds).
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._blocks import stack as _stack

pytestmark = pytest.mark.slow  # real compiles take seconds each (make unit runs them)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    """Every test compiles afresh and leaves no compiled code behind."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graph_breaks() -> int:
    return sum(counters["graph_break"].values())


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def twice(function: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Two calls, the caller's stream elsewhere each time; the caller's stream is kept."""
    results = []
    for caller_draws in (0, 7):
        torch.rand(caller_draws)
        before = torch.get_rng_state()
        results.append(function(torch.zeros(4)))
        assert torch.equal(torch.get_rng_state(), before), "the caller's stream moved"
        assert _stack.open_count() == 0
    return results


@ReproducibleBlock("compiled-noise")
def noise(x: torch.Tensor) -> torch.Tensor:
    return x + torch.rand(4)


@ReproducibleBlock("compiled-draws")
def draws(count: int) -> Iterator[torch.Tensor]:
    for _ in range(count):
        yield torch.rand(4)


class Jitter(nn.Module):
    @ReproducibleBlock("compiled-forward")
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand(4)


@ReproducibleBlock("compiled-init")
class Shift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.rand(4))


@pytest.mark.parametrize("key_seen_before", [False, True])
def test_a_with_block_inside_a_compiled_function_repeats(key_seen_before: bool) -> None:
    set_seed(0)
    key = ("compiled-with", int(key_seen_before))
    if key_seen_before:
        with ReproducibleBlock(key):
            pass

    def noisy(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        with ReproducibleBlock(key):
            return y + torch.rand(4)

    first, again = twice(torch.compile(noisy))
    assert torch.equal(first, again)
    with ReproducibleBlock(("compiled-with", int(not key_seen_before))):
        assert not torch.equal(torch.rand(4), first)


def test_a_compiled_decorated_function_is_one_graph_between_two_graph_breaks() -> None:
    set_seed(0)
    first, again = twice(torch.compile(noise, backend="eager"))
    assert torch.equal(first, again)
    assert torch.equal(first, noise(torch.zeros(4)))  # eager graphs: eager numbers
    assert graph_breaks() == 2  # the block's entry and exit, outside the graph
    assert graphs() == 1  # the body


def test_compiled_code_draws_its_own_numbers_unless_inductor_falls_back_to_eager_rng(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_seed(0)
    eager = noise(torch.zeros(4))
    first, again = twice(torch.compile(noise))
    assert torch.equal(first, again)
    assert not torch.equal(first, eager)  # inductor's own random kernels
    torch._dynamo.reset()
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    assert torch.equal(torch.compile(noise)(torch.zeros(4)), eager)


def _in_function(x: torch.Tensor) -> torch.Tensor:
    return noise(x) * 2


def _in_method(x: torch.Tensor) -> torch.Tensor:
    return Jitter()(x) * 2


def _in_generator(x: torch.Tensor) -> torch.Tensor:
    return x + torch.stack(list(draws(3)))


def _in_class(x: torch.Tensor) -> torch.Tensor:
    return Shift().shift.detach() + x


@pytest.mark.parametrize("caller", [_in_function, _in_method, _in_generator, _in_class])
def test_decorated_code_called_inside_a_compiled_function_keeps_its_block(
    caller: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    # wrapt's proxy passes for the plain function; dynamo must not inline that one instead.
    set_seed(0)
    expected = caller(torch.zeros(4))
    first, again = twice(torch.compile(caller, backend="eager"))
    assert torch.equal(first, expected)
    assert torch.equal(again, expected)
    # Outside torch.compile the proxy still passes for a function.
    assert isinstance(noise, types.FunctionType)
    assert inspect.isfunction(noise)
    assert inspect.isgeneratorfunction(draws)


def test_a_compiled_model_called_inside_a_block_needs_no_graph_break() -> None:
    set_seed(0)
    with ReproducibleBlock("compiled-model-init"):
        model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    compiled = torch.compile(model, backend="eager")

    def epoch(index: int) -> torch.Tensor:
        with ReproducibleBlock(("compiled-train", index)):
            return compiled(torch.ones(2, 4))

    assert torch.equal(epoch(0), epoch(0))
    assert not torch.equal(epoch(0), epoch(1))
    assert graph_breaks() == 0


def test_fullgraph_refuses_a_block_and_says_why() -> None:
    set_seed(0)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="reproducible_block switches"):
        torch.compile(noise, backend="eager", fullgraph=True)(torch.zeros(4))
    assert _stack.open_count() == 0


@ReproducibleBlock("compiled-failure")
def _fails(x: torch.Tensor) -> torch.Tensor:
    x = x + torch.rand(4)
    raise ValueError("inside the compiled block")


def test_an_error_inside_a_compiled_decorated_function_closes_the_block() -> None:
    set_seed(0)
    before = torch.get_rng_state()
    with pytest.raises(ValueError, match="inside the compiled block"):
        torch.compile(_fails, backend="eager")(torch.zeros(4))
    assert _stack.open_count() == 0
    assert torch.equal(torch.get_rng_state(), before)


@ReproducibleBlock("compiled-step", key_from="step")
def _step_noise(x: torch.Tensor, step: int) -> torch.Tensor:
    return x + torch.rand(4)


def test_key_from_in_compiled_code_gives_each_call_its_key() -> None:
    set_seed(0)
    compiled = torch.compile(_step_noise, backend="eager")
    steps = [compiled(torch.zeros(4), step) for step in (0, 1, 0)]
    assert torch.equal(steps[0], steps[2])
    assert not torch.equal(steps[0], steps[1])
    with ReproducibleBlock(("compiled-step", 1)):
        assert torch.equal(torch.rand(4), steps[1])


@ReproducibleBlock("compiled-epoch", key_from="epoch")
def _epoch_draws(epoch: int) -> Iterator[torch.Tensor]:
    for _ in range(2):
        yield torch.rand(4)


def test_key_from_on_a_generator_called_in_compiled_code() -> None:
    set_seed(0)

    def caller(x: torch.Tensor) -> torch.Tensor:
        return x + torch.stack(list(_epoch_draws(3)))

    expected = caller(torch.zeros(4))
    with ReproducibleBlock(("compiled-epoch", 3)):
        assert torch.equal(expected[0], torch.rand(4))
    first, again = twice(torch.compile(caller, backend="eager"))
    assert torch.equal(first, expected)
    assert torch.equal(again, expected)


def _fresh_block_inside(x: torch.Tensor) -> torch.Tensor:
    with ReproducibleBlock(("built-inside-compiled", 7)):  # a tuple key: encoded afresh
        return x + torch.rand(4)


def _cached_block_inside(x: torch.Tensor) -> torch.Tensor:
    with ReproducibleBlock("built-inside-compiled"):  # a str key seen before: cached
        return x + torch.rand(4)


@pytest.mark.parametrize("function", [_fresh_block_inside, _cached_block_inside])
def test_fullgraph_refuses_a_block_built_inside_and_says_why(
    function: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    set_seed(0)
    expected = function(torch.zeros(4))  # eager: the key's stream (and the str key cached)
    torch._dynamo.reset()
    before = torch.get_rng_state()
    with pytest.raises(torch._dynamo.exc.Unsupported, match="reproducible_block switches"):
        torch.compile(function, backend="eager", fullgraph=True)(torch.zeros(4))
    assert _stack.open_count() == 0
    assert torch.equal(torch.get_rng_state(), before)
    torch._dynamo.reset()
    compiled = torch.compile(function, backend="eager")  # without fullgraph: it works
    assert torch.equal(compiled(torch.zeros(4)), expected)
    assert torch.equal(compiled(torch.zeros(4)), expected)
