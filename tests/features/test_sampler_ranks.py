"""``ReproducibleSampler`` in real gloo groups: the ranks split one global sequence, and a state
saved on 2 ranks continues the same global sequence on 3."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reproducible_block import ReproducibleSampler, set_seed
from tests._sampler_ranks import LENGTH, ROUNDS_ON_TWO, SEED, on_three, on_two
from tests._spawn import spawn_ranks

pytestmark = pytest.mark.slow


def test_two_ranks_then_three_take_one_global_sequence(tmp_path: Path) -> None:
    (tmp_path / "two").mkdir()
    two = spawn_ranks(on_two, 2, tmp_path / "two")
    set_seed(SEED)
    reference = ReproducibleSampler(LENGTH)
    first, second = reference.order(0), reference.order(1)
    assert [ranked["replicas"] for ranked in two] == [2, 2]  # read from the group
    assert [ranked["rank"] for ranked in two] == [0, 1]
    padded = first + first[:1]  # 23 samples on 2 ranks: 24 positions, the last wraps
    assert [two[step % 2]["epoch_zero"][step // 2] for step in range(24)] == padded
    assert two[0]["state"] == two[1]["state"]
    assert (two[0]["state"]["epoch"], two[0]["state"]["position"]) == (1, 2 * ROUNDS_ON_TWO)
    done = [two[step % 2]["epoch_one"][step // 2] for step in range(2 * ROUNDS_ON_TWO)]
    three_dir = tmp_path / "three"
    three_dir.mkdir()
    shutil.copy(tmp_path / "two" / "state.pt", three_dir / "state.pt")
    three = spawn_ranks(on_three, 3, three_dir)
    assert [ranked["replicas"] for ranked in three] == [3, 3, 3]
    rest = [three[step % 3]["rest"][step // 3] for step in range(3 * len(three[0]["rest"]))]
    assert (done + rest)[:LENGTH] == second  # the same global sequence, nothing lost or repeated
    assert (done + rest)[LENGTH:] == second[: len(done + rest) - LENGTH]  # padding wraps
