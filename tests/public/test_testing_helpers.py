"""reproducible_block.testing: what a user's test suite uses to leave global state untouched."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from reproducible_block import (
    SEED_ENVIRONMENT_VARIABLE,
    RepetitionWarning,
    ReproducibleBlock,
    configure_deterministic_mode,
    register_generator,
    registered_generators,
    set_block_wait_timeout,
    set_seed,
    unregister_generator,
)
from reproducible_block._blocks.stack import get_block_wait_timeout
from reproducible_block._streams.root import peek_seed
from reproducible_block.testing import isolated_random_state
from tests._draws import GeneratorKind
from tests._plain_source import Unplugged


def everything() -> tuple[object, ...]:
    return (
        random.getstate(),
        np.random.get_state()[1].tolist(),
        torch.get_rng_state().tolist(),
        peek_seed(),
        registered_generators(),
        torch.are_deterministic_algorithms_enabled(),
        os.environ.get(SEED_ENVIRONMENT_VARIABLE),
        get_block_wait_timeout(),
    )


def change_everything(kept: torch.Generator) -> None:
    set_seed(77)
    random.random(), np.random.randn(), torch.rand(3)
    register_generator(torch.Generator(), name="added")
    unregister_generator("kept")
    configure_deterministic_mode()
    set_block_wait_timeout(3)
    kept.manual_seed(5)


def test_isolated_random_state_puts_everything_back() -> None:
    kept = torch.Generator()
    register_generator(kept, name="kept")
    set_seed(1)
    kept_state = kept.get_state()
    before = everything()
    with isolated_random_state():
        change_everything(kept)
        assert everything() != before
    assert everything() == before
    assert torch.equal(kept.get_state(), kept_state)  # re-registered, and its state is back


def test_isolated_random_state_puts_the_rest_back_when_one_source_fails() -> None:
    unplugged, kept = Unplugged(), torch.Generator()
    register_generator(unplugged, name="unplugged")  # restored before "kept"
    register_generator(kept, name="kept")
    set_seed(1)
    kept_state = kept.get_state()
    before = everything()

    def unplugging_test() -> None:
        with isolated_random_state():
            change_everything(kept)
            unplugged.plugged = False

    with pytest.raises(OSError, match="unplugged"):
        unplugging_test()
    assert everything() == before
    assert torch.equal(kept.get_state(), kept_state)


def test_isolated_random_state_restores_after_an_exception() -> None:
    before = everything()

    def failing_test() -> None:
        with isolated_random_state():
            set_seed(5)
            torch.rand(2)
            raise KeyError("test failure")

    with pytest.raises(KeyError):
        failing_test()
    assert everything() == before


pytest_plugins = ["pytester"]

USER_SUITE = """
import torch
import pytest
from reproducible_block import set_seed
from reproducible_block.testing import restore_random_state

FIRST = torch.get_rng_state()

@pytest.mark.usefixtures("restore_random_state")
def test_changes_the_stream():
    set_seed(123)
    torch.rand(5)

def test_sees_the_stream_it_started_with():
    assert torch.equal(torch.get_rng_state(), FIRST)
"""


def test_the_fixture_isolates_the_tests_of_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_SUITE)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    without = USER_SUITE.replace('@pytest.mark.usefixtures("restore_random_state")', "")
    pytester.makepyfile(test_user=without)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, failed=1)


def test_isolated_random_state_puts_each_generator_kind_back(generator_kind: GeneratorKind) -> None:
    set_seed(1)
    generator_kind.draw()
    before = generator_kind.state()
    with isolated_random_state():
        set_seed(2)
        generator_kind.draw()
        assert generator_kind.state() != before
    assert generator_kind.state() == before


def test_isolated_random_state_restores_the_record_of_keys_entered() -> None:
    # A key entered once before the section is remembered after it, though set_seed inside
    # started a fresh record: entering it again (and drawing) is then a repetition.
    with isolated_random_state():
        set_seed(0)
        with ReproducibleBlock("entered-before"):
            torch.rand(1)
        with isolated_random_state():
            set_seed(1)  # a new run inside: a fresh record
        with (
            pytest.warns(RepetitionWarning, match="entered-before"),
            ReproducibleBlock("entered-before"),
        ):
            torch.rand(1)
