"""DataLoader workers: per-sample blocks, per-worker global seeds, and the root reaching workers.

Real DataLoaders with real worker processes. Fork workers start in milliseconds, so the matrix
over ``num_workers``, batch size and order runs with fork; spawn workers take seconds each, so
spawn gets two loaders of two workers (one per way the root travels), each with a batch size and
an order different from the reference.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reproducible_block import (
    MAX_SEED,
    SEED_ENVIRONMENT_VARIABLE,
    NotSeededError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    WorkerInit,
    get_rng_state,
    load_rng_state,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block._streams import root as _root
from reproducible_block.compat import Reproducible_Block
from tests._plain_source import global_states, unplug_torch
from tests._worker_datasets import LENGTH, AugmentedSamples, InitialSeeds, Row, unbatch

ROOT_SEED = 1234

# Four workers on a two-core machine are the point of the test, not a mistake.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def load(
    num_workers: int,
    batch_size: int = 1,
    *,
    shuffle: bool = False,
    context: str | None = None,
    init: Callable[[int], None] | None = seed_worker,
) -> list[Row]:
    """Every sample of ``AugmentedSamples`` through a real DataLoader, in the order loaded."""
    workers: dict[str, Any] = {}
    if num_workers:
        workers = {
            "multiprocessing_context": context or "fork",
            "timeout": 120,
            "worker_init_fn": init,
        }
    loader = DataLoader(
        AugmentedSamples(),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch_generator("order") if shuffle else None,
        **workers,
    )
    return unbatch(loader)


def augmentations(samples: list[Row]) -> dict[int, torch.Tensor]:
    return {sample["index"]: sample["augmentation"] for sample in samples}


def assert_same_augmentations(reference: list[Row], samples: list[Row]) -> None:
    expected, got = augmentations(reference), augmentations(samples)
    assert sorted(got) == list(range(LENGTH))
    for index in range(LENGTH):
        assert torch.equal(got[index], expected[index]), f"sample {index} changed"


@pytest.fixture
def reference() -> list[Row]:
    """The samples loaded in the main process, in order, one at a time."""
    set_seed(ROOT_SEED)
    return load(num_workers=0)


def test_reference_augmentations_are_per_sample(reference: list[Row]) -> None:
    # Every sample gets its own draws, and each generator inside the block is used.
    rows = torch.stack([sample["augmentation"] for sample in reference])
    assert len({tuple(row.tolist()) for row in rows}) == LENGTH
    assert len(set(rows.flatten().tolist())) == rows.numel()
    # The in-process block gives the same draws as the block inside the loader.
    with ReproducibleBlock(("sample", 5)):
        direct = torch.rand(3, dtype=torch.float64)
    assert torch.equal(direct, rows[5, :3])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("num_workers", "batch_size", "shuffle"),
    [(1, 1, False), (2, 3, True), (4, 5, True)],
)
def test_per_sample_augmentation_is_the_same_whatever_the_fork_workers(
    reference: list[Row], num_workers: int, batch_size: int, shuffle: bool
) -> None:
    samples = load(num_workers, batch_size, shuffle=shuffle)
    assert_same_augmentations(reference, samples)
    assert {sample["worker"] for sample in samples} == set(range(num_workers))
    if shuffle:
        assert [sample["index"] for sample in samples] != list(range(LENGTH))
    # Draws outside the blocks do depend on the workers: without blocks this test would fail.
    outside_reference = {sample["index"]: sample["outside"] for sample in reference}
    assert any(
        not torch.equal(sample["outside"], outside_reference[sample["index"]]) for sample in samples
    )


@pytest.mark.slow
def test_per_sample_augmentation_when_the_loader_runs_inside_a_block(
    reference: list[Row],
) -> None:
    # A decorated training step forks its workers with a block open; theirs nest inside it.
    with ReproducibleBlock("train"):
        samples = load(2, batch_size=2, shuffle=True)
    assert_same_augmentations(reference, samples)


@pytest.mark.slow
@pytest.mark.parametrize("way", ["seed_worker", "WorkerInit"])
def test_per_sample_augmentation_is_the_same_with_spawn_workers(
    reference: list[Row], way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if way == "seed_worker":
        init: Callable[[int], None] = seed_worker  # the root travels in the environment
        assert os.environ[SEED_ENVIRONMENT_VARIABLE] == str(ROOT_SEED)
    else:
        init = WorkerInit()  # the root travels pickled; the environment must not be needed
        monkeypatch.delenv(SEED_ENVIRONMENT_VARIABLE)
    samples = load(2, batch_size=3, shuffle=True, context="spawn", init=init)
    assert_same_augmentations(reference, samples)
    assert {sample["worker"] for sample in samples} == {0, 1}
    assert [sample["index"] for sample in samples] != list(range(LENGTH))
    assert_worker_streams_differ(samples)


@pytest.mark.slow
def test_spawn_workers_use_the_root_that_load_rng_state_restored() -> None:
    set_seed(1)
    states = get_rng_state()
    reference = load(num_workers=0)  # per-sample blocks under root 1, in this process
    set_seed(2)
    load_rng_state(states)  # root 1 again
    assert os.environ[SEED_ENVIRONMENT_VARIABLE] == "1"  # for processes started some other way
    samples = load(1, batch_size=3, shuffle=True, context="spawn")
    assert_same_augmentations(reference, samples)


def first_sample_of_each_worker(samples: list[Row]) -> dict[int, Row]:
    """Each worker's first sample: its outside draws are the worker's first global draws."""
    first: dict[int, Row] = {}
    for sample in samples:
        first.setdefault(sample["worker"], sample)
    return first


def assert_worker_streams_differ(samples: list[Row]) -> None:
    """Outside blocks, workers draw different global streams (torch, NumPy and random)."""
    first = first_sample_of_each_worker(samples)
    seeds = [first[worker]["torch_seed"] for worker in sorted(first)]
    # The DataLoader's worker seeds are base_seed + worker_id.
    assert seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    for column in range(3):
        values = [sample["outside"][column].item() for sample in first.values()]
        assert len(set(values)) == len(values), f"generator {column} repeats across workers"


def outside_draws(samples: list[Row]) -> dict[int, list[float]]:
    """Each worker's first draws outside blocks, by worker id."""
    return {
        worker: sample["outside"].tolist()
        for worker, sample in first_sample_of_each_worker(samples).items()
    }


@pytest.mark.slow
def test_seed_worker_gives_each_fork_worker_its_own_global_streams() -> None:
    set_seed(ROOT_SEED)
    samples = load(4, batch_size=1)
    assert len(first_sample_of_each_worker(samples)) == 4
    assert_worker_streams_differ(samples)


@pytest.mark.slow
def test_worker_streams_repeat_between_runs_with_a_loader_generator() -> None:
    set_seed(ROOT_SEED)
    first = outside_draws(load(2, batch_size=1, shuffle=True))
    _ = torch.rand(100)  # other draws between the two runs do not matter
    set_seed(ROOT_SEED)
    assert outside_draws(load(2, batch_size=1, shuffle=True)) == first


@pytest.mark.slow
def test_worker_streams_differ_between_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every rank seeded alike (set_seed(s) everywhere, the same loader generator): without the
    # rank folded in, each rank's workers would repeat the other ranks' draws outside blocks.
    # Forked workers read the launcher's RANK when no process group is initialised here.
    streams = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        set_seed(ROOT_SEED)
        streams[rank] = outside_draws(load(2, batch_size=1, shuffle=True))
    assert set(streams["0"]) == set(streams["1"]) == {0, 1}
    for worker in (0, 1):
        assert streams["0"][worker] != streams["1"][worker]


@pytest.mark.slow
def test_without_seed_worker_ranks_share_worker_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shows that the check above can fail: PyTorch's own worker seeding ignores the rank.
    streams = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        set_seed(ROOT_SEED)
        streams[rank] = outside_draws(load(2, batch_size=1, shuffle=True, init=None))
    assert streams["0"] == streams["1"]


# seed_worker and WorkerInit called in this process, standing in for a fresh spawned worker:
# no root, the parent's seed in the environment, and torch seeded as a DataLoader seeds a worker.


def become_fresh_worker(monkeypatch: pytest.MonkeyPatch, exported: str | None) -> int:
    _root.replace_seed(None)
    if exported is None:
        monkeypatch.delenv(SEED_ENVIRONMENT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, exported)
    worker_seed = 2**40 + 17  # what base_seed + worker_id may look like: above 32 bits
    torch.manual_seed(worker_seed)
    return worker_seed


def test_set_seed_exports_the_root_seed() -> None:
    set_seed(77)
    assert os.environ[SEED_ENVIRONMENT_VARIABLE] == "77"
    drawn = set_seed(None)
    assert os.environ[SEED_ENVIRONMENT_VARIABLE] == str(drawn)


def test_seed_worker_rebuilds_the_parent_root_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_seed(ROOT_SEED)
    with ReproducibleBlock(("sample", 3)):
        expected = (torch.rand(4), np.random.rand(4), random.random())
    with Reproducible_Block(block_seed=2):
        expected_compat = torch.rand(4)

    become_fresh_worker(monkeypatch, str(ROOT_SEED))
    seed_worker(0)
    root = _root.peek_seed()
    assert root is not None
    assert root == ROOT_SEED
    with ReproducibleBlock(("sample", 3)):
        drawn = (torch.rand(4), np.random.rand(4), random.random())
    assert torch.equal(drawn[0], expected[0])
    assert np.array_equal(drawn[1], expected[1])
    assert drawn[2] == expected[2]
    with Reproducible_Block(block_seed=2):  # the rebuilt snapshot serves the compat block too
        assert torch.equal(torch.rand(4), expected_compat)


def test_a_process_without_a_root_takes_the_one_its_parent_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A process started by spawn, multiprocessing.Pool or torch.multiprocessing.spawn, with no
    # seed_worker to run: its first block finds the root in the environment.
    set_seed(ROOT_SEED)
    with ReproducibleBlock(("sample", 3)):
        expected = torch.rand(4)
    become_fresh_worker(monkeypatch, str(ROOT_SEED))
    with ReproducibleBlock(("sample", 3)):
        assert torch.equal(torch.rand(4), expected)
    assert _root.peek_seed() == ROOT_SEED
    become_fresh_worker(monkeypatch, "seven")
    with (
        pytest.raises(ReproducibleBlockValueError, match=SEED_ENVIRONMENT_VARIABLE),
        ReproducibleBlock("x"),
    ):
        pass  # pragma: no cover - never entered


def test_seed_worker_keeps_an_inherited_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under fork the worker inherits the parent's root; that is the one blocks must use.
    set_seed(ROOT_SEED)
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, "5")
    root = _root.peek_seed()
    seed_worker(1)
    assert _root.peek_seed() == root


def worker_globals(worker_id: int) -> list[object]:
    """What a fresh worker draws outside blocks after seed_worker(worker_id)."""
    torch.manual_seed(2**40 + 17 + worker_id)  # base seed + worker id, as the DataLoader does
    seed_worker(worker_id)
    return [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()]


def test_seed_worker_seeds_every_global_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    become_fresh_worker(monkeypatch, None)
    first = worker_globals(0)
    assert worker_globals(0) == first  # the same worker seed, the same streams
    other = worker_globals(1)
    assert all(a != b for a, b in zip(first, other, strict=True))
    torch.manual_seed(2**40 + 17)
    plain = [torch.rand(2).tolist()]  # PyTorch's own worker seeding, before seed_worker
    assert plain[0] != first[0]


def test_seed_worker_without_a_root_leaves_blocks_unseeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    become_fresh_worker(monkeypatch, None)
    before = np.random.get_state()[1].copy()
    seed_worker(0)  # still seeds the globals per worker
    assert not np.array_equal(np.random.get_state()[1], before)
    assert _root.peek_seed() is None
    with pytest.raises(NotSeededError, match="seed_worker"), ReproducibleBlock("x"):
        pass


@pytest.mark.parametrize("exported", ["", "seven", "-1", str(MAX_SEED + 1)])
def test_seed_worker_refuses_a_bad_exported_seed_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, exported: str
) -> None:
    become_fresh_worker(monkeypatch, exported)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    with pytest.raises(ReproducibleBlockValueError, match=SEED_ENVIRONMENT_VARIABLE):
        seed_worker(0)
    assert random.getstate() == states[0]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), states[1], strict=True))
    assert torch.equal(torch.get_rng_state(), states[2])
    assert _root.peek_seed() is None


@pytest.mark.parametrize("worker_id", ["0", 1.0, None, True])
def test_worker_init_functions_refuse_a_bad_worker_id(worker_id: Any) -> None:
    set_seed(ROOT_SEED)
    with pytest.raises(ReproducibleBlockTypeError, match="worker_id"):
        seed_worker(worker_id)
    with pytest.raises(ReproducibleBlockTypeError, match="worker_id"):
        WorkerInit()(worker_id)


def test_worker_init_needs_a_root() -> None:
    _root.replace_seed(None)
    with pytest.raises(NotSeededError, match="WorkerInit"):
        WorkerInit()


def test_worker_init_carries_the_root_it_was_made_with(monkeypatch: pytest.MonkeyPatch) -> None:
    set_seed(ROOT_SEED)
    with ReproducibleBlock(("sample", 9)):
        expected = torch.rand(4)
    init = pickle.loads(pickle.dumps(WorkerInit()))
    assert init.root_seed == ROOT_SEED
    assert repr(init) == f"WorkerInit(root_seed={ROOT_SEED})"

    set_seed(ROOT_SEED + 1)  # a later root (fork) or exported seed (spawn) must not matter
    become_fresh_worker(monkeypatch, str(ROOT_SEED + 1))
    init(0)
    root = _root.peek_seed()
    assert root is not None
    assert root == ROOT_SEED
    with ReproducibleBlock(("sample", 9)):
        assert torch.equal(torch.rand(4), expected)


def test_worker_init_keeps_an_inherited_root_with_its_seed() -> None:
    set_seed(ROOT_SEED)
    root = _root.peek_seed()
    WorkerInit()(0)
    assert _root.peek_seed() == root


@pytest.mark.parametrize(("root_seed", "rank"), [(-3, 0), (ROOT_SEED, -1), (ROOT_SEED, "0")])
def test_worker_init_refuses_a_bad_pickled_state(root_seed: object, rank: object) -> None:
    set_seed(ROOT_SEED)
    rebuild, arguments = WorkerInit().__reduce__()
    assert rebuild(*arguments).root_seed == ROOT_SEED
    with pytest.raises(ReproducibleBlockValueError):
        rebuild(root_seed, rank)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_worker_init_with_root_seed_0_survives_every_pickle_protocol(protocol: int) -> None:
    set_seed(0)
    copy = pickle.loads(pickle.dumps(WorkerInit(), protocol=protocol))
    assert copy.root_seed == 0
    with ReproducibleBlock("x"):
        expected = torch.rand(2)
    set_seed(1)
    copy(0)  # installs root 0 again
    with ReproducibleBlock("x"):
        assert torch.equal(torch.rand(2), expected)


@pytest.mark.slow
@pytest.mark.parametrize("way", ["seed_worker", "WorkerInit"])
def test_worker_initial_seeds_fit_pytorch_convention_and_collate(way: str) -> None:
    # PyTorch gives its workers seeds below 2**63, and test_dataloader.py returns
    # torch.initial_seed() from __getitem__: default_collate makes an int64 tensor of them.
    set_seed(ROOT_SEED)
    init = seed_worker if way == "seed_worker" else WorkerInit()
    loader = DataLoader(
        InitialSeeds(),
        batch_size=2,
        num_workers=2,
        worker_init_fn=init,
        multiprocessing_context="fork",
        timeout=120,
        generator=torch.Generator().manual_seed(0),
    )
    seeds = [[int(seed) for seed in batch] for _ in range(3) for batch in loader]  # 3 epochs
    flat = [seed for batch in seeds for seed in batch]
    assert len(flat) == 3 * LENGTH
    assert all(0 <= seed < 2**63 for seed in flat)
    assert len(set(flat)) == 6  # one seed per worker and epoch, all different
    with ReproducibleBlock("inside"):  # a block's torch seed follows the convention too
        assert 0 <= torch.initial_seed() < 2**63


@pytest.mark.parametrize(
    "make_init", [lambda: seed_worker, WorkerInit], ids=["seed_worker", "WorkerInit"]
)
def test_worker_seeding_is_all_or_nothing(
    monkeypatch: pytest.MonkeyPatch, make_init: Callable[[], Callable[[int], None]]
) -> None:
    set_seed(ROOT_SEED)
    init = make_init()
    random.random()
    np.random.rand()
    unplug_torch(monkeypatch)  # fails after Python's random and NumPy's global are seeded
    before = global_states()
    with pytest.raises(OSError, match="unplugged"):
        init(0)
    assert global_states() == before


def test_seed_worker_carries_no_state_of_its_own() -> None:
    with pytest.raises(ReproducibleBlockValueError, match="no state of its own"):
        seed_worker.__setstate__(None)  # type: ignore[attr-defined]
