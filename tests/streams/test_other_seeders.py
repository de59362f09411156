"""Other seeders: a block notices that torch was seeded after ``set_seed``, and says so once.

``set_seed(42)`` then Lightning's ``seed_everything(43)`` (or ``transformers.set_seed(43)``,
``torch.manual_seed(43)``) leaves blocks deriving from 42. The outermost block entry compares
torch's initial seed with the one the library left, and warns once, at the user's line. The
real seeders are in ``test_integrations.py``; here torch's own ``manual_seed`` stands for them.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from reproducible_block import (
    NotSeededError,
    ReproducibleBlock,
    WorkerInit,
    get_rng_state,
    load_rng_state,
    seed_worker,
    set_seed,
)
from reproducible_block._blocks import stack as _stack
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block.compat import Reproducible_Block


@pytest.fixture(autouse=True)
def _not_warned_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a process that has not warned."""
    monkeypatch.setattr(_other_seeders, "_warned", {})


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield records


def enter(key: str = "block") -> None:
    with ReproducibleBlock(key, replay=True):  # entered again on purpose: no RepetitionWarning
        torch.rand(1)


@ReproducibleBlock("decorated", replay=True)
def decorated() -> None:
    torch.rand(1)


def test_a_seeder_after_set_seed_is_named_once_at_the_users_line() -> None:
    set_seed(42)
    torch.manual_seed(43)
    block = ReproducibleBlock("block")
    with pytest.warns(UserWarning, match="torch was seeded") as records, block:  # this line
        pass
    (record,) = records
    message = str(record.message)
    assert "torch was seeded with 43 after reproducible_block.set_seed(42)" in message
    assert "root seed 42" in message
    assert "seed_everything" in message
    assert "Call reproducible_block.set_seed(43) after that seeder" in message
    assert record.filename == __file__
    assert "# this line" in Path(__file__).read_text().splitlines()[record.lineno - 1]


def test_it_warns_once_per_process(caught: list[warnings.WarningMessage]) -> None:
    set_seed(42)
    torch.manual_seed(43)
    enter()
    torch.manual_seed(44)
    enter()
    decorated()
    assert len(caught) == 1


def test_a_decorated_function_warns_at_its_callers_line() -> None:
    set_seed(42)
    torch.manual_seed(43)
    with pytest.warns(UserWarning, match="seeded with 43") as records:
        decorated()  # this line
    assert records[0].filename == __file__


def test_a_block_entered_through_an_exit_stack_warns_at_the_users_line(
    caught: list[warnings.WarningMessage],
) -> None:
    set_seed(42)
    torch.manual_seed(43)
    with ExitStack() as stack:
        stack.enter_context(ReproducibleBlock("stacked"))  # entered here
    (record,) = caught
    assert record.filename == __file__
    assert "# entered here" in Path(__file__).read_text().splitlines()[record.lineno - 1]


@ReproducibleBlock("gathered")
async def gathered() -> None:
    torch.rand(1)


def test_a_decorated_coroutine_under_gather_warns_in_the_users_file(
    caught: list[warnings.WarningMessage],
) -> None:
    async def main() -> None:
        await asyncio.gather(gathered(), gathered())

    set_seed(42)
    torch.manual_seed(43)
    asyncio.run(main())  # the event loop steps the coroutines: this is the user's line
    (record,) = caught
    assert record.filename == __file__
    assert "# the event loop" in Path(__file__).read_text().splitlines()[record.lineno - 1]


def test_set_seed_after_the_other_seeder_is_the_fix(caught: list[warnings.WarningMessage]) -> None:
    set_seed(42)
    torch.manual_seed(43)
    set_seed(43)
    enter()
    assert caught == []


def test_a_seed_too_large_for_set_seed_gets_a_generic_fix() -> None:
    set_seed(42)
    torch.manual_seed(2**40)
    with pytest.warns(UserWarning, match=r"Call reproducible_block\.set_seed\(seed\)"):
        enter()


def test_draws_and_blocks_do_not_count_as_seeding(caught: list[warnings.WarningMessage]) -> None:
    set_seed(42)
    torch.rand(100)  # draws move the state, not the seed
    with ReproducibleBlock("outer"):
        torch.manual_seed(5)  # inside a block: the block undoes it
        enter("inner")  # not the outermost block: not checked
    enter()
    with torch.random.fork_rng():
        torch.manual_seed(6)
    enter()
    assert caught == []


def test_library_seeding_outside_blocks_moves_the_expected_seed(
    caught: list[warnings.WarningMessage],
) -> None:
    set_seed(7)
    states = get_rng_state()
    set_seed(42)
    load_rng_state(states)  # the root and torch's seed are 7 again
    enter()
    set_seed(42)
    seed_worker(0)  # as a DataLoader worker: a per-worker torch stream
    enter()
    WorkerInit()(1)
    enter()
    Reproducible_Block.set_seed(42)
    with Reproducible_Block(block_seed=3):
        pass
    enter()
    Reproducible_Block.set_random_state(Reproducible_Block.get_random_state())
    enter()
    assert caught == []


def test_without_a_root_there_is_nothing_to_compare(
    caught: list[warnings.WarningMessage],
) -> None:
    from reproducible_block._streams import root as _root

    _root.replace_seed(None)
    _root.torch_seed = None
    torch.manual_seed(3)
    with pytest.raises(NotSeededError):
        enter()
    assert caught == []


def test_a_warning_turned_error_leaves_no_block_open() -> None:
    set_seed(42)
    torch.manual_seed(43)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="seeded with 43"):
            enter()
    assert _stack.open_count() == 0
    entered = threading.Event()
    thread = threading.Thread(target=lambda: (enter(), entered.set()))
    thread.start()
    thread.join(timeout=60)
    assert entered.is_set()  # the lock was released


class WarningsInWorkers(Dataset[int]):
    """Each sample: how many warnings its block raised in the worker that loaded it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            with ReproducibleBlock(("sample", index)):
                torch.rand(1)
        return len(records)


@pytest.mark.slow
@pytest.mark.parametrize("init", [None, seed_worker])
def test_dataloader_workers_reseeding_torch_is_not_another_seeder(init: object) -> None:
    # The DataLoader seeds torch in each worker; the parent's root rightly stays.
    set_seed(42)
    loader = DataLoader(
        WarningsInWorkers(),
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        worker_init_fn=init,
        timeout=120,
    )
    assert list(loader) == [0, 0, 0, 0]
