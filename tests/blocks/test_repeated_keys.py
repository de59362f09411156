"""Repeated keys: a block entered again with a key that draws warns, once, at the user's line;
deliberate replays (``replay=True``, a new root, a resume, a backward recompute) never do."""

from __future__ import annotations

import copy
import inspect
import multiprocessing
import pickle
import threading
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch.utils.checkpoint import checkpoint

import reproducible_block as rb
from reproducible_block import (
    RepetitionWarning,
    ReproducibleBlock,
    RNGState,
    get_rng_state,
    load_rng_state,
    set_seed,
)
from reproducible_block._blocks import repetition
from reproducible_block.compat import Reproducible_Block

from .._draws import GeneratorKind

pytestmark = pytest.mark.filterwarnings("error::reproducible_block.RepetitionWarning")


def _line_of(marker: str) -> int:
    """The line of this file that ends with ``# marker``."""
    lines = inspect.getsource(inspect.getmodule(_line_of)).splitlines()  # type: ignore[arg-type]
    return next(number for number, text in enumerate(lines, 1) if text.endswith(f"# {marker}"))


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    """Every RepetitionWarning raised in the test, recorded (not raised)."""
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        yield found


def _repetitions(found: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [warning for warning in found if issubclass(warning.category, RepetitionWarning)]


def test_a_block_in_a_loop_warns_once_at_its_line(caught: list[warnings.WarningMessage]) -> None:
    set_seed(0)
    for _ in range(4):
        with ReproducibleBlock("loop-key"):  # loop-with
            torch.rand(2)
    (warning,) = _repetitions(caught)
    assert warning.filename == __file__
    assert warning.lineno == _line_of("loop-with")
    message = str(warning.message)
    assert "ReproducibleBlock('loop-key')" in message
    assert f"{__file__}:{_line_of('loop-with')}" in message
    assert "key_from=" in message
    assert "replay=True" in message
    assert "epoch" in message


def test_a_decorated_function_called_every_step_warns_at_the_call(
    caught: list[warnings.WarningMessage],
) -> None:
    @ReproducibleBlock("per-step")
    def training_step() -> torch.Tensor:
        return torch.nn.functional.dropout(torch.ones(8), 0.5)

    set_seed(0)
    masks = [training_step() for _ in range(3)]  # per-step-call
    assert all(torch.equal(mask, masks[0]) for mask in masks)  # the mistake, shown
    (warning,) = _repetitions(caught)
    assert warning.filename == __file__
    assert warning.lineno == _line_of("per-step-call")
    assert "ReproducibleBlock('per-step')" in str(warning.message)


def test_one_key_at_two_places_names_both(caught: list[warnings.WarningMessage]) -> None:
    set_seed(0)
    with ReproducibleBlock(("shared", 1)):  # first-place
        torch.rand(1)
    with ReproducibleBlock(("shared", 1)):  # second-place
        torch.rand(1)
    (warning,) = _repetitions(caught)
    assert warning.lineno == _line_of("second-place")
    message = str(warning.message)
    assert f"{__file__}:{_line_of('first-place')}" in message
    assert f"{__file__}:{_line_of('second-place')}" in message
    assert "('shared', 1)" in message


def test_every_source_kind_counts_as_a_draw(
    generator_kind: GeneratorKind, caught: list[warnings.WarningMessage]
) -> None:
    set_seed(0)
    for _ in range(2):
        with ReproducibleBlock("kind"):
            generator_kind.draw()
    assert len(_repetitions(caught)) == 1


def test_a_block_that_draws_nothing_is_not_warned_about() -> None:
    set_seed(0)
    for _ in range(3):
        with ReproducibleBlock("no-draw"):
            torch.zeros(3)
    with ReproducibleBlock("no-draw"):  # settled: even a draw now costs only a lookup
        torch.rand(1)


def test_a_key_per_call_or_per_epoch_is_not_warned_about() -> None:
    @ReproducibleBlock("step", key_from="step")
    def training_step(step: int) -> torch.Tensor:
        return torch.rand(1)

    set_seed(0)
    for epoch in range(3):
        training_step(epoch)
        with ReproducibleBlock(("augment", epoch)):
            torch.rand(1)


def test_replay_true_is_never_warned_about() -> None:
    @ReproducibleBlock("eval-mask", replay=True)
    def evaluate() -> torch.Tensor:
        return torch.rand(2)

    @ReproducibleBlock("eval-step", key_from="step", replay=True)
    def evaluate_step(step: int) -> torch.Tensor:
        return torch.rand(2)

    set_seed(0)
    for _ in range(3):
        with ReproducibleBlock("eval", replay=True):
            torch.rand(2)
        evaluate()
        evaluate_step(1)
    assert torch.equal(evaluate(), evaluate())


def test_replay_is_an_option_like_the_others() -> None:
    block = ReproducibleBlock("k", replay=True)
    assert block.replay is True
    assert ReproducibleBlock("k").replay is False
    assert repr(block) == "ReproducibleBlock('k', replay=True)"
    for other in (copy.copy(block), copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert other.replay is True
    with pytest.raises(TypeError, match="replay"):
        ReproducibleBlock("k", replay="yes")  # type: ignore[arg-type]


def test_a_new_root_starts_a_fresh_record() -> None:
    for _ in range(3):
        set_seed(0)  # a new run in the same process (a notebook cell run again)
        with ReproducibleBlock("run"):
            torch.rand(1)


def test_a_resume_starts_a_fresh_record() -> None:
    set_seed(0)
    saved = get_rng_state()
    rng = RNGState()
    state_dict = rng.state_dict()
    with ReproducibleBlock("resumed"):
        torch.rand(1)
    load_rng_state(saved)
    with ReproducibleBlock("resumed"):
        torch.rand(1)
    rng.load_state_dict(state_dict)
    with ReproducibleBlock("resumed"):
        torch.rand(1)


def test_the_warning_is_once_per_key_until_a_new_root(
    caught: list[warnings.WarningMessage],
) -> None:
    set_seed(0)
    for _ in range(3):
        for key in ("a", "b"):
            with ReproducibleBlock(key):
                torch.rand(1)
    assert len(_repetitions(caught)) == 2
    set_seed(0)
    for _ in range(2):
        with ReproducibleBlock("a"):
            torch.rand(1)
    assert len(_repetitions(caught)) == 3


def test_the_compat_block_never_warns() -> None:
    Reproducible_Block.set_seed(0)
    for _ in range(3):
        with Reproducible_Block(block_seed=7):
            torch.rand(1)


def test_decorated_generators_continue_and_are_not_warned_about() -> None:
    @ReproducibleBlock("items")
    def items() -> Iterator[torch.Tensor]:
        while True:
            yield torch.rand(1)

    set_seed(0)
    stream = items()
    drawn = [next(stream) for _ in range(3)]
    assert not torch.equal(drawn[0], drawn[1])


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_recompute_is_not_a_repetition(use_reentrant: bool) -> None:
    layer = torch.nn.Linear(4, 4)

    def dropout_layer(x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("checkpointed"):
            return torch.nn.functional.dropout(layer(x), 0.5)

    set_seed(0)
    x = torch.ones(2, 4, requires_grad=True)
    checkpoint(dropout_layer, x, use_reentrant=use_reentrant).sum().backward()
    assert x.grad is not None


def test_threads_share_one_record(caught: list[warnings.WarningMessage]) -> None:
    set_seed(0)

    def work() -> None:
        for _ in range(3):
            with ReproducibleBlock("threaded"):
                torch.rand(1)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(_repetitions(caught)) == 1


def _enter_in_child(times: int, queue: multiprocessing.Queue[int]) -> None:
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        for _ in range(times):
            with ReproducibleBlock("forked"):
                torch.rand(1)
    queue.put(len(_repetitions(found)))


@pytest.mark.slow
def test_a_forked_child_starts_a_fresh_record() -> None:
    set_seed(0)
    with ReproducibleBlock("forked"):  # entered once in the parent
        torch.rand(1)
    context = multiprocessing.get_context("fork")
    results = []
    for times in (1, 2):
        queue: multiprocessing.Queue[int] = context.Queue()
        child = context.Process(target=_enter_in_child, args=(times, queue))
        child.start()
        results.append(queue.get(timeout=60))
        child.join(60)
        assert child.exitcode == 0
    assert results == [0, 1]  # once: no repetition; twice: the child's own


def test_a_compiled_function_with_a_block_warns_and_still_works(
    caught: list[warnings.WarningMessage],
) -> None:
    def noisy(x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("compiled"):
            return x + torch.rand(x.shape)

    compiled = torch.compile(noisy, backend="eager")
    set_seed(0)
    first = compiled(torch.zeros(3))
    again = compiled(torch.zeros(3))
    assert torch.equal(first, again)
    assert len(_repetitions(caught)) == 1


def test_the_record_is_bounded_and_keeps_settled_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repetition, "LIMIT", 8)
    set_seed(0)
    for _ in range(2):
        with ReproducibleBlock("settled"):
            pass
    for index in range(20):
        with ReproducibleBlock(("sample", index)):
            torch.rand(1)
    assert len(repetition.record) <= 8
    assert repetition.record[ReproducibleBlock("settled")._key_bytes] is repetition.SETTLED


def test_the_category_is_public_and_a_user_warning() -> None:
    assert rb.RepetitionWarning is RepetitionWarning
    assert issubclass(RepetitionWarning, UserWarning)
    assert RepetitionWarning.__module__ == "reproducible_block"


def test_the_diagnostics_that_run_a_function_twice_replay_on_purpose(
    caught: list[warnings.WarningMessage],
) -> None:
    from reproducible_block.diagnostics import assert_deterministic, find_nondeterminism

    def forward() -> torch.Tensor:
        with ReproducibleBlock("checked-forward"):
            return torch.rand(3)

    set_seed(0)
    forward()  # the program's own entry, before the checks
    assert_deterministic(forward)
    assert find_nondeterminism(forward) is None
    assert _repetitions(caught) == []
    forward()  # the program enters it again itself: that is a repetition
    (warning,) = _repetitions(caught)
    assert "checked-forward" in str(warning.message)
