"""Under real gloo process groups, ranks spawned by the test (tests/_distributed_ranks.py).

Two ranks, every rank seeded alike (``set_seed(s)``, as identical model initialisation needs)
with DataLoaders of 3 workers: ``seed_worker`` gives the 2 x 3 workers 6 distinct global streams
that repeat between runs, while per-sample blocks stay the same whichever rank loads a sample
(unless ``per_rank=True``); ``set_seed`` is a collective that shares rank 0's seed. Four ranks:
``per_rank=<process group>`` folds the rank within the group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed

from .._distributed_ranks import SEED, WORKERS, four_ranks, two_ranks
from .._spawn import spawn_ranks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Both ranks' results, from one spawn (spawning is the slow part)."""
    return spawn_ranks(two_ranks, 2, Path(tmp_path_factory.mktemp("two")), timeout_s=240.0)


@pytest.fixture(scope="module")
def quartet(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(four_ranks, 4, Path(tmp_path_factory.mktemp("four")), timeout_s=240.0)


def worker_streams(pair: list[dict[str, Any]], run: str) -> list[tuple[float, ...]]:
    """One tuple per (rank, worker): its first draws outside blocks (torch, NumPy, random)."""
    return [tuple(draws) for ranked in pair for draws in ranked["workers"][run]["outside"]]


# DataLoader workers (seed_worker folds the rank in).


@pytest.mark.parametrize("run", ["fork", "spawn"])
def test_two_ranks_of_three_workers_draw_six_distinct_streams(
    pair: list[dict[str, Any]], run: str
) -> None:
    streams = worker_streams(pair, run)
    assert len(streams) == 2 * WORKERS
    for generator in range(3):  # torch, NumPy and random each
        assert len({stream[generator] for stream in streams}) == 2 * WORKERS


def test_worker_streams_repeat_between_runs(pair: list[dict[str, Any]]) -> None:
    assert worker_streams(pair, "fork_again") == worker_streams(pair, "fork")


def test_without_seed_worker_the_ranks_workers_repeat_each_other(
    pair: list[dict[str, Any]],
) -> None:
    # What the test above guards against: PyTorch seeds workers from (base seed, worker id),
    # the same on every rank seeded alike, so 2 ranks x 3 workers give 3 streams, not 6.
    ranks = [ranked["workers"]["without_seed_worker"] for ranked in pair]
    assert ranks[0]["torch_seeds"] == ranks[1]["torch_seeds"]
    assert ranks[0]["outside"] == ranks[1]["outside"]
    assert len(set(worker_streams(pair, "without_seed_worker"))) == WORKERS
    # seed_worker starts from the same DataLoader seeds and still separates the ranks.
    assert [ranked["workers"]["fork"]["torch_seeds"] for ranked in pair] == [
        ranks[0]["torch_seeds"]
    ] * 2


@pytest.mark.parametrize("run", ["fork", "spawn", "without_seed_worker"])
def test_a_sample_gets_the_same_augmentation_whichever_rank_loads_it(
    pair: list[dict[str, Any]], run: str
) -> None:
    set_seed(SEED)
    with ReproducibleBlock(("sample", 3)):
        expected = torch.rand(3, dtype=torch.float64).tolist()
    for ranked in pair:
        assert ranked["workers"][run]["augmentation"] == pair[0]["workers"]["fork"]["augmentation"]
        assert ranked["workers"][run]["augmentation"]["3"][:3] == expected


def test_per_rank_blocks_in_workers_differ_between_ranks(pair: list[dict[str, Any]]) -> None:
    per_rank = [ranked["workers"]["per_rank"]["augmentation"] for ranked in pair]
    shared = pair[0]["workers"]["fork"]["augmentation"]
    assert per_rank[0].keys() == per_rank[1].keys() == shared.keys()
    for index in shared:
        assert per_rank[0][index] != per_rank[1][index]
        assert per_rank[1][index] != shared[index]
    assert per_rank[0] != shared  # rank 0 has its own stream too


# set_seed under a process group.


def test_set_seed_without_a_seed_gives_every_rank_rank_0s(pair: list[dict[str, Any]]) -> None:
    seeding = [ranked["seeding"] for ranked in pair]
    assert seeding[0]["drawn"] == seeding[1]["drawn"]
    assert seeding[0]["drawn_draws"] == seeding[1]["drawn_draws"]
    assert seeding[0]["drawn_again"] == seeding[1]["drawn_again"] != seeding[0]["drawn"]
    assert seeding[0]["environment"] == seeding[1]["environment"] == 700  # rank 0's launcher


def test_only_rank_0_logs_the_seed(pair: list[dict[str, Any]]) -> None:
    seeding = [ranked["seeding"] for ranked in pair]
    drawn = seeding[0]["drawn"]
    assert seeding[0]["logs"] == [
        f"set_seed: no seed given, rank 0 drew {drawn} for the 2 ranks; call set_seed({drawn}) "
        "to repeat this run",
        f"set_seed: no seed given, rank 0 drew {seeding[0]['drawn_again']} for the 2 ranks; "
        f"call set_seed({seeding[0]['drawn_again']}) to repeat this run",
        "set_seed: no seed given; using REPRODUCIBLE_BLOCK_SEED=700 for the 2 ranks",
    ]
    assert seeding[1]["logs"] == []


def test_rank_0_warns_when_the_ranks_get_different_seeds(pair: list[dict[str, Any]]) -> None:
    seeding = [ranked["seeding"] for ranked in pair]
    assert [ranked["same"] for ranked in seeding] == [5, 5]
    assert seeding[0]["same_warnings"] == seeding[1]["same_warnings"] == []
    assert [ranked["different"] for ranked in seeding] == [5, 6]  # each keeps its own
    ((message, filename),) = seeding[0]["different_warnings"]
    assert "different seeds (rank 0: 5, rank 1: 6)" in message
    assert "per_rank=True" in message
    assert filename == seeding[0]["file"]  # the warning points at the caller's line
    assert seeding[1]["different_warnings"] == []


def test_a_refusal_on_one_rank_is_a_refusal_on_every_rank(pair: list[dict[str, Any]]) -> None:
    seeding = [ranked["seeding"] for ranked in pair]
    assert "seed must be from 0 to MAX_SEED" in seeding[1]["bad_seed"]["error"]
    assert "refused on rank 1" in seeding[0]["bad_seed"]["error"]
    assert "outside every block" in seeding[0]["in_block"]["error"]
    assert "refused on rank 0" in seeding[1]["in_block"]["error"]
    for ranked in seeding:
        assert ranked["bad_seed"]["untouched"]
        assert ranked["in_block"]["untouched"]


def test_set_seed_in_a_dataloader_worker_does_not_communicate(
    pair: list[dict[str, Any]],
) -> None:
    expected = []
    for index in range(2):
        torch.manual_seed(index)
        expected.append(torch.rand(2, dtype=torch.float64).tolist())
    for ranked in pair:
        assert ranked["seeding"]["in_worker"] == expected


# per_rank=<process group>, 4 ranks.


def test_per_rank_data_parallel_group_is_shared_within_tensor_parallel_groups(
    quartet: list[dict[str, Any]],
) -> None:
    masks = [ranked["data_parallel"] for ranked in quartet]
    assert masks[0] == masks[1]  # tensor-parallel group {0, 1}: data-parallel rank 0
    assert masks[2] == masks[3]  # {2, 3}: data-parallel rank 1
    assert masks[0] != masks[2]  # the replicas differ
    # Rank r within a group folds like global rank r with per_rank=True.
    assert masks[0] == quartet[0]["global"]
    assert masks[2] == quartet[1]["global"]
    orders = [ranked["order"] for ranked in quartet]
    assert orders[0] == orders[1] != orders[2] == orders[3]


def test_per_rank_tensor_parallel_group_and_global_rank(quartet: list[dict[str, Any]]) -> None:
    masks = [ranked["tensor_parallel"] for ranked in quartet]
    assert masks[0] == masks[2] != masks[1] == masks[3]
    assert len({tuple(ranked["global"]) for ranked in quartet}) == 4
    assert len({tuple(ranked["shared"]) for ranked in quartet}) == 1


def test_a_group_this_rank_is_not_in_is_refused_at_entry(quartet: list[dict[str, Any]]) -> None:
    for rank, ranked in enumerate(quartet):
        assert f"global rank {rank}) is not a member" in ranked["not_member"]


def test_the_ledger_records_the_rank_within_the_group(quartet: list[dict[str, Any]]) -> None:
    assert [ranked["ledger_per_rank"] for ranked in quartet] == [[0], [0], [1], [1]]
