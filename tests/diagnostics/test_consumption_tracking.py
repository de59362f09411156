"""track_consumption(): which generators the code in a section changed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from reproducible_block import (
    BlockUsageError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    register_generator,
    set_seed,
)
from reproducible_block._sources.registry import registry
from reproducible_block.diagnostics import ConsumptionReport, track_consumption

DRAWS = {
    "random": lambda: random.random(),
    "numpy": lambda: np.random.rand(),
    "torch": lambda: torch.rand(1),
}


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_draw_outside_blocks_is_consumed_and_nothing_else(name: str) -> None:
    set_seed(0)
    with track_consumption() as usage:
        DRAWS[name]()
    assert usage.consumed == (name,)
    assert usage.untouched == tuple(n for n in registry.names() if n != name)
    assert usage.sources == registry.names()


def test_block_that_draws_nothing_reports_nothing_consumed() -> None:
    set_seed(0)
    with ReproducibleBlock("eval"), track_consumption() as usage:
        torch.ones(4).sum()
        [1, 2, 3].sort()
    assert usage.consumed == ()
    assert usage.untouched == registry.names()


def test_block_that_draws_reports_what_it_drew() -> None:
    set_seed(0)
    with ReproducibleBlock("augment"), track_consumption() as usage:
        np.random.permutation(5)
        torch.nn.Dropout(0.5)(torch.ones(8))
    assert usage.consumed == ("numpy", "torch")


def test_blocks_draws_are_not_seen_around_them_but_outside_draws_are() -> None:
    set_seed(0)
    with track_consumption() as quiet, ReproducibleBlock("init"):
        torch.nn.Linear(3, 3)
        random.random()
    with track_consumption() as leaky:
        with ReproducibleBlock("init"):
            torch.nn.Linear(3, 3)
        torch.randperm(4)  # code outside every block touches the global stream
    assert quiet.consumed == ()
    assert leaky.consumed == ("torch",)


def test_sources_restricts_what_is_tracked() -> None:
    set_seed(0)
    with track_consumption(sources=("numpy", "random")) as usage:
        torch.rand(2)
        random.random()
    assert usage.sources == ("random", "numpy")
    assert (usage.consumed, usage.untouched) == (("random",), ("numpy",))


def test_state_put_back_counts_as_untouched() -> None:
    with track_consumption() as usage:
        state = torch.get_rng_state()
        torch.rand(3)
        torch.set_rng_state(state)
    assert usage.consumed == ()


def test_reseeding_counts_as_consumed() -> None:
    torch.manual_seed(1)
    torch.rand(1)
    with track_consumption(sources="torch") as usage:
        torch.manual_seed(1)
    assert usage.consumed == ("torch",)


def test_registered_generator_is_tracked() -> None:
    rng = np.random.default_rng(3)
    register_generator(rng, name="augment-rng")
    with track_consumption() as usage:
        rng.integers(10)
    assert usage.consumed == ("augment-rng",)


def _draw_then_fail(reports: list[ConsumptionReport]) -> None:
    with track_consumption() as usage:
        reports.append(usage)
        random.random()
        raise ZeroDivisionError


def test_report_is_filled_when_the_section_raises() -> None:
    reports: list[ConsumptionReport] = []
    with pytest.raises(ZeroDivisionError):
        _draw_then_fail(reports)
    assert reports[0].consumed == ("random",)


def test_reading_inside_the_section_is_refused() -> None:
    with track_consumption() as usage:
        assert "still open" in repr(usage)
        with pytest.raises(BlockUsageError, match="after the section ends"):
            _ = usage.consumed
        with pytest.raises(BlockUsageError, match="after the section ends"):
            _ = usage.untouched
    assert repr(usage) == f"ConsumptionReport(consumed=(), untouched={registry.names()!r})"


@pytest.mark.parametrize(
    ("sources", "error"),
    [
        (("nope",), ReproducibleBlockValueError),
        ((), ReproducibleBlockValueError),
        ((1,), ReproducibleBlockTypeError),
        (3, ReproducibleBlockTypeError),
    ],
)
def test_bad_sources_are_refused(sources: object, error: type[Exception]) -> None:
    with pytest.raises(error), track_consumption(sources=sources):  # type: ignore[arg-type]
        pass


def test_a_section_under_torch_func_grad_reports_what_it_drew() -> None:
    set_seed(0)
    reports = []

    def loss(x: torch.Tensor) -> torch.Tensor:
        with track_consumption() as report:
            noise = torch.rand(3)
        reports.append(report)
        return (x * noise).sum()

    gradient = torch.func.grad(loss)(torch.ones(3))
    assert gradient.shape == (3,)
    assert reports[0].consumed == ("torch",)
