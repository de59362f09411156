"""set_seed: the recipe's streams, the root, validation, and refusals that change nothing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import MAX_SEED, ReproducibleBlock, set_seed
from reproducible_block._blocks.seeding import _different_seeds, _settle, get_random_seed

from .._draws import draw_all, recipe_seed
from .._spawn import run_python


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31, MAX_SEED])
def test_set_seed_gives_the_recipes_streams(seed: int) -> None:
    recipe_seed(seed)
    expected = draw_all()
    assert set_seed(seed) == seed
    assert draw_all() == expected


def test_numpy_integer_seeds_are_accepted() -> None:
    recipe_seed(7)
    expected = draw_all()
    assert set_seed(np.int64(7)) == 7
    assert draw_all() == expected


def test_none_draws_logs_and_returns_a_seed_that_repeats_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="reproducible_block"):
        seed = set_seed(None)
    assert 0 <= seed <= MAX_SEED
    assert str(seed) in caplog.text
    first = draw_all()
    set_seed(seed)
    assert draw_all() == first


def test_get_random_seed_does_not_touch_managed_generators() -> None:
    set_seed(3)
    expected = draw_all()
    set_seed(3)
    seeds = {get_random_seed() for _ in range(20)}
    assert draw_all() == expected
    assert all(0 <= s <= MAX_SEED for s in seeds)
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (True, TypeError),
        (np.bool_(False), TypeError),
        (1.0, TypeError),
        (float("nan"), TypeError),
        ("42", TypeError),
        ([1], TypeError),
        (torch.tensor(1), TypeError),
        (-1, ValueError),
        (MAX_SEED + 1, ValueError),
        (10**100, ValueError),
    ],
)
def test_bad_seeds_raise_and_change_nothing(bad: object, error: type[Exception]) -> None:
    set_seed(5)
    random.random()
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    root = rb._streams.root.peek_seed()
    with pytest.raises(error) as info:
        set_seed(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, rb.ReproducibleBlockError)
    message = str(info.value)
    assert "MAX_SEED" in message
    assert repr(bad) in message or str(bad) in message
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    assert rb._streams.root.peek_seed() == root


def test_set_seed_inside_a_block_is_refused_and_changes_nothing() -> None:
    set_seed(1)
    with ReproducibleBlock("outer"):
        state = torch.get_rng_state()
        with pytest.raises(rb.BlockUsageError, match="outside every block"):
            set_seed(2)
        assert torch.equal(torch.get_rng_state(), state)
    assert rb._streams.root.peek_seed() is not None
    assert rb._streams.root.peek_seed() == 1  # type: ignore[union-attr]


def test_root_seed_changes_every_block_stream() -> None:
    set_seed(1)
    with ReproducibleBlock("a"):
        first = draw_all()
    set_seed(2)
    with ReproducibleBlock("a"):
        second = draw_all()
    assert all(first[name] != second[name] for name in first)


class Unseedable(rb.GeneratorSource[int]):
    """A registered generator whose seeding fails (its device went away)."""

    def __init__(self) -> None:
        self.state = 3
        self.lost = False

    def get_state(self) -> int:
        return self.state

    def set_state(self, state: int) -> None:
        self.state = state

    def from_bits(self, bits: bytes) -> int:
        return bits[0]

    def seed(self, seed: int) -> None:
        self.state = seed
        if self.lost:
            raise OSError("device lost while seeding")


def test_set_seed_is_all_or_nothing_when_a_source_fails() -> None:
    seeded_first = torch.Generator()  # seeded before the failing one
    rb.register_generator(seeded_first, name="first")
    unseedable = Unseedable()
    rb.register_generator(unseedable, name="unseedable")
    set_seed(5)
    with ReproducibleBlock("k"):
        in_block = torch.rand(2)
    draw_all()
    states = (
        random.getstate(),
        np.random.get_state()[1].copy(),
        torch.get_rng_state(),
        seeded_first.get_state(),
        unseedable.state,
    )
    unseedable.lost = True
    with pytest.raises(OSError, match="device lost"):
        set_seed(9)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert torch.equal(seeded_first.get_state(), states[3])
    assert unseedable.state == states[4]
    assert os.environ[rb.SEED_ENVIRONMENT_VARIABLE] == "5"
    with ReproducibleBlock("k"):  # the root is still 5
        assert torch.equal(torch.rand(2), in_block)


# set_seed() with no seed: the launcher's REPRODUCIBLE_BLOCK_SEED, else a drawn seed.


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process as a rank a launcher just started: no root, no RANK, no exported seed."""
    rb._streams.root.replace_seed(None)
    monkeypatch.delenv(rb.SEED_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return monkeypatch


def test_none_takes_the_launchers_seed_and_logs_it(
    fresh_process: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_process.setenv(rb.SEED_ENVIRONMENT_VARIABLE, "321")
    with caplog.at_level(logging.INFO, logger="reproducible_block"):
        assert set_seed() == 321
    assert "REPRODUCIBLE_BLOCK_SEED=321" in caplog.text
    expected = draw_all()
    set_seed(321)
    assert draw_all() == expected


def test_only_rank_0_logs_the_launchers_seed(
    fresh_process: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_process.setenv(rb.SEED_ENVIRONMENT_VARIABLE, "321")
    fresh_process.setenv("RANK", "1")
    with caplog.at_level(logging.INFO, logger="reproducible_block"):
        assert set_seed() == 321
    assert caplog.text == ""


def test_a_second_none_draws_rather_than_reading_its_own_export(
    fresh_process: pytest.MonkeyPatch,
) -> None:
    fresh_process.setenv(rb.SEED_ENVIRONMENT_VARIABLE, "321")
    assert set_seed() == 321
    seeds = {set_seed() for _ in range(3)}
    assert 321 not in seeds
    assert len(seeds) == 3  # each call draws (a repeat has a chance of about 2**-31)


_LAUNCHED_AFTER_A_BLOCK = """
import torch
from reproducible_block import ReproducibleBlock, set_seed
with ReproducibleBlock("first"):  # derives from the launcher's seed, as documented
    in_block = torch.rand(2)
print(set_seed())
with ReproducibleBlock("first"):
    assert torch.equal(torch.rand(2), in_block)
"""


@pytest.mark.slow
def test_none_takes_the_launchers_seed_after_a_block() -> None:
    env = {**os.environ, rb.SEED_ENVIRONMENT_VARIABLE: "42"}
    env.pop("RANK", None)
    done = run_python(_LAUNCHED_AFTER_A_BLOCK, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["42"]


def test_an_explicit_seed_ignores_the_environment(fresh_process: pytest.MonkeyPatch) -> None:
    fresh_process.setenv(rb.SEED_ENVIRONMENT_VARIABLE, "321")
    assert set_seed(8) == 8
    assert rb._streams.root.peek_seed() == 8


@pytest.mark.parametrize("exported", ["", "seven", "-1", str(MAX_SEED + 1)])
def test_a_bad_launcher_seed_is_refused_and_changes_nothing(
    fresh_process: pytest.MonkeyPatch, exported: str
) -> None:
    fresh_process.setenv(rb.SEED_ENVIRONMENT_VARIABLE, exported)
    state = torch.get_rng_state()
    with pytest.raises(rb.ReproducibleBlockValueError) as info:
        set_seed()
    message = str(info.value)
    assert f"REPRODUCIBLE_BLOCK_SEED={exported!r}" in message
    assert "unset it" in message
    assert torch.equal(torch.get_rng_state(), state)
    assert rb._streams.root.peek_seed() is None


# Under a process group one all_gather_object decides (2 ranks in tests/support/test_distributed.py)


def test_settle_shares_rank_0s_seed_and_keeps_given_ones() -> None:
    reports = [(11, "environment"), (12, "drawn"), (13, "given"), (11, "given")]
    assert _settle(reports, 0) == (11, "environment", [11, 11, 13, 11])
    assert _settle(reports, 1) == (11, "environment", [11, 11, 13, 11])
    assert _settle(reports, 2) == (13, "given", [11, 11, 13, 11])


def test_settle_raises_when_another_rank_refused() -> None:
    with pytest.raises(rb.ReproducibleBlockValueError, match=r"refused on rank 1.*bad seed"):
        _settle([(11, "drawn"), "bad seed"], 0)


@pytest.mark.usefixtures("single_rank_group")
def test_under_a_group_of_one_set_seed_behaves_as_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="reproducible_block"):
        drawn = set_seed()
    assert f"drew {drawn}" in caplog.text
    assert set_seed(drawn) == drawn
    expected = draw_all()
    set_seed(drawn, deterministic=True)
    assert draw_all() == expected
    assert torch.are_deterministic_algorithms_enabled()
    with pytest.raises(rb.ReproducibleBlockTypeError, match="deterministic must be True or False"):
        set_seed(1, deterministic=1)  # type: ignore[arg-type]
    with ReproducibleBlock("open"), pytest.raises(rb.BlockUsageError, match="outside every"):
        set_seed(2)
    assert rb._streams.root.peek_seed() == drawn


def _forked_child_owns_a_group() -> tuple[bool, int]:
    return rb._support.distributed.owns_process_group(), set_seed(4)


@pytest.mark.usefixtures("single_rank_group")
def test_a_forked_child_does_not_communicate_through_its_parents_group() -> None:
    # DataLoader workers and fork pools inherit the group object; its peers are the parent's.
    assert rb._support.distributed.owns_process_group()
    with multiprocessing.get_context("fork").Pool(1) as pool:
        owns, seed = pool.apply_async(_forked_child_owns_a_group).get(timeout=60)
    assert not owns
    assert seed == 4


def test_the_different_seeds_warning_names_the_ranks() -> None:
    message = _different_seeds([5, 5, 6, *[5] * 9])
    assert "(rank 0: 5, rank 1: 5, rank 2: 6, rank 3: 5," in message
    assert "rank 8" not in message
    assert "... (12 ranks)" in message
    assert "per_rank=True" in message


def test_rank_0_warns_when_the_ranks_end_up_with_different_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The collective itself runs in spawned ranks (test_distributed.py); here its outcome.
    from reproducible_block._blocks import seeding

    monkeypatch.setattr(seeding, "owns_process_group", lambda: True)
    monkeypatch.setattr(
        seeding, "_agree_with_peers", lambda seed, deterministic: (seed, "given", [seed, seed + 1])
    )
    with pytest.warns(UserWarning, match=r"different seeds \(rank 0: 5, rank 1: 6\)"):
        assert set_seed(5) == 5
