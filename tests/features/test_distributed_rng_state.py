"""Under a real 2-rank gloo group: states gathered per rank, each rank restores its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed

from .._distributed_rng_worker import SEED, rank_main
from .._spawn import spawn_ranks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every rank's results, from one spawn of two processes (spawning is the slow part)."""
    return spawn_ranks(rank_main, 2, Path(tmp_path_factory.mktemp("ranks")))


def test_get_rng_state_gathers_one_entry_per_rank_in_rank_order(
    ranks: list[dict[str, Any]],
) -> None:
    for results in ranks:
        assert results["entries"] == [[0, 2], [1, 2]]


def test_each_rank_restores_its_own_entry(ranks: list[dict[str, Any]]) -> None:
    for results in ranks:
        assert results["after_load"] == results["expected"]
    assert ranks[0]["expected"] != ranks[1]["expected"]  # so restoring rank 0's would show


def test_model_init_is_shared_and_per_rank_blocks_differ(ranks: list[dict[str, Any]]) -> None:
    set_seed(SEED)
    with ReproducibleBlock("init"):
        init = torch.rand(3).tolist()
    with ReproducibleBlock("dropout", per_rank=True):
        rank_zero = torch.rand(3).tolist()  # outside torch.distributed this process is rank 0
    assert ranks[0]["init"] == ranks[1]["init"] == init
    assert ranks[0]["per_rank"] == rank_zero
    assert ranks[1]["per_rank"] != rank_zero


def test_states_of_another_world_size_are_refused_on_every_rank(
    ranks: list[dict[str, Any]],
) -> None:
    for results in ranks:
        assert "saved by 1 rank(s) and this run has 2" in results["mismatch"]["error"]
        assert results["mismatch"]["untouched"]


def test_derive_restores_old_ranks_and_derives_new_ones(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["derived"] == ranks[0]["expected"]  # rank 0 had an entry: its own state
    assert ranks[1]["derived"] == ranks[1]["derived_again"]  # rank 1: deterministic
    assert ranks[1]["derived"] not in (ranks[0]["expected"], ranks[1]["expected"])


def test_a_refusal_on_one_rank_is_a_refusal_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    assert "only-on-rank-1" in ranks[1]["peer"]["error"]
    assert "refused on rank 1" in ranks[0]["peer"]["error"]
    assert ranks[0]["peer"]["untouched"]
    assert ranks[1]["peer"]["untouched"]


@pytest.mark.parametrize("call", ["install", "seed"])
def test_a_refusal_while_installing_on_one_rank_changes_nothing_on_any_rank(
    ranks: list[dict[str, Any]],
    call: str,
) -> None:
    # load_rng_state and set_seed: rank 1's user source rejects its state at install time.
    assert "device unplugged" in ranks[1][call]["error"]
    assert "refused on rank 1" in ranks[0][call]["error"]
    assert "device unplugged" in ranks[0][call]["error"]
    assert all(rank[call]["untouched"] and rank[call]["root"] for rank in ranks)


@pytest.mark.parametrize("call", ["busy_seed", "busy_load", "busy_get"])
def test_a_rank_that_times_out_on_the_lock_is_a_refusal_on_every_rank(
    ranks: list[dict[str, Any]],
    call: str,
) -> None:
    # set_seed, load_rng_state, get_rng_state: rank 1 waits in vain for another thread's block.
    assert "held-by-another-thread" in ranks[1][call]["error"]
    assert "refused on rank 1" in ranks[0][call]["error"]
    assert all(rank[call]["untouched"] and rank[call]["root"] for rank in ranks)
