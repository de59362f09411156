"""Activation checkpointing: a block in a checkpointed function replays in the recompute.

``torch.utils.checkpoint`` runs the function again during the backward pass to recompute the
activations it did not keep. A block there derives its states from (root, key) alone, so the
recompute draws the numbers the forward drew, and its exit gives the caller's stream back: the
gradients equal those of the run without checkpointing, bit for bit, with ``use_reentrant``
True or False and even with ``preserve_rng_state=False``. Draws outside every block replay only
through torch's own stash (``preserve_rng_state=True``, torch's CPU and CUDA generators only).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from reproducible_block import ReproducibleBlock, get_rng_state, set_seed
from reproducible_block._streams import other_seeders as _other_seeders

Run = Callable[[torch.Tensor], torch.Tensor]
REENTRANT = pytest.mark.parametrize("use_reentrant", [True, False], ids=["reentrant", "non"])
PRESERVE = pytest.mark.parametrize("preserve_rng_state", [True, False], ids=["stash", "no-stash"])


def build() -> nn.Sequential:
    with ReproducibleBlock("model-init"):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))


def outcome(
    make_function: Callable[[nn.Module], Run], wrap: Callable[[Run, torch.Tensor], torch.Tensor]
) -> list[torch.Tensor]:
    """Output, input and weight gradients, and the caller's next draws, of one training step."""
    set_seed(0)
    model = build()
    inputs = torch.randn(4, 8, requires_grad=True)
    output = wrap(make_function(model), inputs)
    output.square().sum().backward()
    assert inputs.grad is not None
    grads = [parameter.grad for parameter in model.parameters()]
    assert all(grad is not None for grad in grads)
    after = [torch.rand(3), torch.tensor(random.random()), torch.tensor(np.random.rand())]
    return [output.detach(), inputs.grad, *(grad for grad in grads if grad is not None), *after]


def plain(function: Run, inputs: torch.Tensor) -> torch.Tensor:
    return function(inputs)


def checkpointed(use_reentrant: bool, preserve_rng_state: bool = True) -> Any:
    def wrap(function: Run, inputs: torch.Tensor) -> torch.Tensor:
        output = checkpoint(
            function, inputs, use_reentrant=use_reentrant, preserve_rng_state=preserve_rng_state
        )
        assert isinstance(output, torch.Tensor)
        return output

    return wrap


def same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(map(torch.equal, first, second))


# The places a block can sit in a checkpointed function. Each returns the function to
# checkpoint, given the model; every one draws dropout masks inside blocks only.


def with_block(model: nn.Module) -> Run:
    def function(inputs: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("layers"):
            return model(inputs)

    return function


def decorated_function(model: nn.Module) -> Run:
    @ReproducibleBlock("layers")
    def function(inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    return function


class Noisy(nn.Module):
    """A module whose forward is decorated: every call runs in the block ``"noisy"``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @ReproducibleBlock("noisy")
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(self.model(inputs), 0.3)


def decorated_module(model: nn.Module) -> Run:
    return Noisy(model)


def nested_blocks(model: nn.Module) -> Run:
    def function(inputs: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("outer"):
            with ReproducibleBlock(("inner", 0)):
                inputs = nn.functional.dropout(inputs, 0.2)
            hidden = model(inputs)
            with ReproducibleBlock(("inner", 1)):
                return nn.functional.dropout(hidden, 0.2)

    return function


@ReproducibleBlock("step", key_from="step")
def keyed_step(model: nn.Module, inputs: torch.Tensor, step: int) -> torch.Tensor:
    return model(inputs)


def keyed_per_step(model: nn.Module) -> Run:
    def function(inputs: torch.Tensor) -> torch.Tensor:  # two steps, two masks
        return keyed_step(model, inputs, step=3) + keyed_step(model, inputs, step=4)

    return function


def all_sources_in_a_block(model: nn.Module) -> Run:
    """Draws from Python ``random`` and NumPy too, which torch's stash does not cover."""

    def function(inputs: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("layers"):
            scale = 1.0 + random.random() + float(np.random.rand())
            return model(inputs) * scale

    return function


PLACES = [
    with_block,
    decorated_function,
    decorated_module,
    nested_blocks,
    keyed_per_step,
    all_sources_in_a_block,
]


@REENTRANT
@PRESERVE
@pytest.mark.parametrize("place", PLACES, ids=lambda place: place.__name__)
def test_blocks_replay_in_the_recompute_and_the_gradients_are_exact(
    place: Callable[[nn.Module], Run], use_reentrant: bool, preserve_rng_state: bool
) -> None:
    expected = outcome(place, plain)
    assert same(outcome(place, checkpointed(use_reentrant, preserve_rng_state)), expected)


def test_the_places_draw_in_their_blocks() -> None:
    """The comparison above can fail: without blocks, the masks differ from the blocks' masks."""

    def bare(model: nn.Module) -> Run:
        return model

    for place in PLACES:
        assert not same(outcome(place, plain), outcome(bare, plain))


def dropout_around_a_block(model: nn.Module) -> Run:
    def function(inputs: torch.Tensor) -> torch.Tensor:
        inputs = nn.functional.dropout(inputs, 0.3)  # outside every block
        with ReproducibleBlock("layers"):
            hidden = model(inputs)
        return nn.functional.dropout(hidden, 0.3)  # outside again

    return function


@REENTRANT
def test_torch_draws_outside_blocks_replay_only_with_torch_s_stash(use_reentrant: bool) -> None:
    expected = outcome(dropout_around_a_block, plain)
    assert same(outcome(dropout_around_a_block, checkpointed(use_reentrant, True)), expected)
    # preserve_rng_state=False: the recompute draws the masks outside the block anew, from the
    # stream of the code around backward(), and consumes it: other gradients, other draws after.
    other = outcome(dropout_around_a_block, checkpointed(use_reentrant, False))
    assert torch.equal(other[0], expected[0])  # the forward is the same...
    assert not same(other[1:-3], expected[1:-3])  # ...its gradients are not
    assert not torch.equal(other[-3], expected[-3])  # and torch's stream moved on


def numpy_outside_blocks(model: nn.Module) -> Run:
    def function(inputs: torch.Tensor) -> torch.Tensor:
        scaled = inputs * (1.0 + float(np.random.rand()))  # outside every block
        with ReproducibleBlock("layers"):
            return model(scaled)

    return function


@REENTRANT
def test_numpy_and_python_draws_outside_blocks_do_not_replay(use_reentrant: bool) -> None:
    """torch stashes its own generators only: a NumPy draw outside blocks differs in the
    recompute even with ``preserve_rng_state=True`` (inside a block it replays, see above)."""
    expected = outcome(numpy_outside_blocks, plain)
    other = outcome(numpy_outside_blocks, checkpointed(use_reentrant, True))
    assert torch.equal(other[0], expected[0])  # the forward is the same, the gradients are not
    assert not same(other[1:-3], expected[1:-3])


class Layer(nn.Module):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.linear = nn.Linear(8, 8)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock(("layer", self.index)):
            return nn.functional.dropout(torch.tanh(self.linear(inputs)), 0.3)


@REENTRANT
@PRESERVE
def test_checkpoint_sequential_replays_each_segment(
    use_reentrant: bool, preserve_rng_state: bool
) -> None:
    def run(segments: int | None) -> list[torch.Tensor]:
        set_seed(0)
        with ReproducibleBlock("model-init"):
            model = nn.Sequential(*(Layer(index) for index in range(4)))
        inputs = torch.randn(4, 8, requires_grad=True)
        if segments is None:
            output = model(inputs)
        else:
            output = checkpoint_sequential(
                model,
                segments,
                inputs,
                use_reentrant=use_reentrant,
                preserve_rng_state=preserve_rng_state,
            )
        output.square().sum().backward()
        assert inputs.grad is not None
        grads = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        return [output.detach(), inputs.grad, *grads, torch.rand(3)]

    expected = run(None)
    assert same(run(2), expected)
    assert same(run(4), expected)


@REENTRANT
@PRESERVE
def test_a_forward_in_a_block_and_backward_outside_it_warns_nothing(
    use_reentrant: bool, preserve_rng_state: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual training step: the forward runs in the step's block, ``backward()`` after it
    (Lightning's ``training_step``). torch's stash then puts the step block's state into torch's
    generator for the recompute, outside every block; the block the recompute enters is not a
    sign that another seeder ran."""

    def run(checkpointing: bool) -> list[torch.Tensor]:
        set_seed(0)
        model = build()
        inputs = torch.randn(4, 8, requires_grad=True)
        with ReproducibleBlock(("train-step", 7)):
            if checkpointing:
                hidden = checkpointed(use_reentrant, preserve_rng_state)(with_block(model), inputs)
            else:
                hidden = with_block(model)(inputs)
            loss = nn.functional.dropout(hidden, 0.3).square().sum()
        loss.backward()
        assert inputs.grad is not None
        return [inputs.grad, torch.rand(3)]

    monkeypatch.setattr(_other_seeders, "_warned", {})  # the warning is once per process
    expected = run(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(run(True), expected)
    # ...and a seeder that does run is still noticed at the next block outside backward().
    torch.manual_seed(5)
    with pytest.warns(UserWarning, match="torch was seeded with 5"), ReproducibleBlock("next"):
        pass


@REENTRANT
def test_an_early_stopped_recompute_closes_its_block(use_reentrant: bool) -> None:
    """Non-reentrant checkpointing stops the recompute with an exception once it has every
    activation it needs, here inside the block: the block closes and gives the stream back."""
    expected = outcome(with_block, plain)
    assert same(outcome(with_block, checkpointed(use_reentrant)), expected)
    assert get_rng_state()[0]["open_blocks"] == []
    with torch.utils.checkpoint.set_checkpoint_early_stop(False):
        assert same(outcome(with_block, checkpointed(use_reentrant)), expected)


# Recognising the recompute: torch._C._current_graph_task_id() is the id of the backward pass
# that the current thread runs a node of, -1 outside every backward pass. The recompute runs
# as part of a backward pass (reentrant: in the checkpoint node's backward; non-reentrant: in
# the hook that unpacks a saved activation), the forward does not.


@REENTRANT
def test_the_recompute_runs_inside_a_backward_pass_and_the_forward_does_not(
    use_reentrant: bool,
) -> None:
    set_seed(0)
    seen: list[bool] = []

    def function(inputs: torch.Tensor) -> torch.Tensor:
        seen.append(torch._C._current_graph_task_id() != -1)
        with ReproducibleBlock("layers"):
            return nn.functional.dropout(inputs.tanh(), 0.3)

    inputs = torch.randn(4, 8, requires_grad=True)
    output = checkpointed(use_reentrant)(function, inputs)
    assert seen == [False]  # the forward
    output.sum().backward()
    assert seen == [False, True]  # the recompute
    assert torch._C._current_graph_task_id() == -1
