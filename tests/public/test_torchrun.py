"""End to end under torchrun: examples/ddp_torchrun.py preempted, resumed, and resumed on 3 ranks.

Real ``python -m torch.distributed.run --standalone`` launches (gloo, CPU, one thread each), five
of them, each bounded by ``subprocess.run(timeout=...)``:

1. 2 ranks, uninterrupted, no seed given: rank 0 draws one and shares it;
2. 2 ranks with that seed exported (``REPRODUCIBLE_BLOCK_SEED``), every rank SIGKILLed at step 7,
   in the middle of an epoch (3 batches per epoch on 2 ranks); its last checkpoint is step 4's;
3. 2 ranks resumed from that checkpoint: the losses of run 1, bit for bit;
4. and 5. 3 ranks resumed from it with ``on_world_size_change="derive"``, twice.

On 3 ranks the ``DistributedSampler`` shards each epoch anew, so the data, and the losses, after
the resume are not run 1's. What ranks 0 and 1 keep is their own random streams: right after
``load_rng_state`` their generators are in the states run 1 saved, and since every batch still
holds 4 samples, their dropout draws the same numbers step after step (the fingerprint of
torch's stream at the start of each step equals run 1's). Rank 2 gets a stream of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import SEED_ENVIRONMENT_VARIABLE
from tests._spawn import run_python

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_torchrun.py"
PREEMPT_AT, SAVED_AT, STEPS = 7, 4, 12
LAUNCH_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.slow,
    # The library runs in torchrun's processes, which do not inherit -O: nothing to add there.
    pytest.mark.skipif(sys.flags.optimize > 0, reason="the ranks would not run under -O"),
]


def torchrun(
    ranks: int, workdir: Path, *options: str, seed: int | None = None
) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    environment.pop(SEED_ENVIRONMENT_VARIABLE, None)
    if seed is not None:
        environment[SEED_ENVIRONMENT_VARIABLE] = str(seed)
    arguments = [
        "--standalone",
        f"--nproc_per_node={ranks}",
        str(EXAMPLE),
        "--workdir",
        str(workdir),
        *options,
    ]
    return run_python(
        module="torch.distributed.run", args=arguments, env=environment, timeout=LAUNCH_TIMEOUT_S
    )


def finished(
    launch: subprocess.CompletedProcess[str], workdir: Path, ranks: int
) -> list[dict[str, Any]]:
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    return [json.loads((workdir / f"report.rank{rank}.json").read_text()) for rank in range(ranks)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("torchrun")
    full = finished(torchrun(2, folder / "full"), folder / "full", 2)
    preempted = torchrun(
        2, folder / "preempted", "--preempt-at", str(PREEMPT_AT), seed=full[0]["seed"]
    )
    checkpoint = folder / "preempted" / "checkpoint.pt"
    resume = ("--resume-from", str(checkpoint))
    resumed = finished(torchrun(2, folder / "resumed", *resume), folder / "resumed", 2)
    wider = [
        finished(
            torchrun(3, folder / name, *resume, "--on-world-size-change", "derive"),
            folder / name,
            3,
        )
        for name in ("wider", "wider-again")
    ]
    return {
        "full": full,
        "preempted": preempted,
        "resumed": resumed,
        "wider": wider,
        "checkpoint": torch.load(checkpoint, weights_only=True),
        "preempted_reports": sorted(
            path.name for path in (folder / "preempted").iterdir() if path.name.startswith("report")
        ),
    }


def from_step(values: dict[str, Any], step: int) -> dict[str, Any]:
    return {key: value for key, value in values.items() if int(key) >= step}


def test_without_a_seed_every_rank_uses_rank_0s(runs: dict[str, Any]) -> None:
    full = runs["full"]
    assert full[0]["seed"] == full[1]["seed"]
    assert [len(report["losses"]) for report in full] == [STEPS, STEPS]
    assert full[0]["losses"] != full[1]["losses"]  # each rank trains on its own shard
    assert full[0]["streams"] != full[1]["streams"]  # and draws its own dropout


def test_the_job_was_killed_in_the_middle_of_an_epoch(runs: dict[str, Any]) -> None:
    preempted = runs["preempted"]
    assert preempted.returncode != 0
    assert "SIGKILL" in preempted.stdout + preempted.stderr
    assert runs["preempted_reports"] == []  # no rank got to the end
    checkpoint = runs["checkpoint"]
    assert checkpoint["step"] == SAVED_AT
    assert checkpoint["seed"] == runs["full"][0]["seed"]
    assert len(checkpoint["rng"]) == 2
    epoch = runs["full"][0]["batches_per_epoch"]
    assert epoch == 3
    assert checkpoint["step"] % epoch != 0  # saved in the middle of an epoch
    assert PREEMPT_AT % epoch != 0  # and killed in the middle of the next one


def test_resumed_on_two_ranks_the_losses_are_the_uninterrupted_runs(
    runs: dict[str, Any],
) -> None:
    for rank, report in enumerate(runs["resumed"]):
        full = runs["full"][rank]
        assert report["start"] == SAVED_AT
        assert report["losses"] == from_step(full["losses"], SAVED_AT)  # bit for bit
        assert report["streams"] == from_step(full["streams"], SAVED_AT)
        assert report["after_load"] == full["at_checkpoint"][str(SAVED_AT)]


def test_two_restarts_on_three_ranks_agree_bit_for_bit(runs: dict[str, Any]) -> None:
    first, second = runs["wider"]
    assert first == second
    assert [report["world_size"] for report in first] == [3, 3, 3]
    assert len({json.dumps(report["losses"]) for report in first}) == 3


def test_on_three_ranks_ranks_0_and_1_continue_their_own_streams(runs: dict[str, Any]) -> None:
    wider = runs["wider"][0]
    for rank in (0, 1):
        full = runs["full"][rank]
        # Right after the load: every generator as this rank saved it.
        assert wider[rank]["after_load"] == full["at_checkpoint"][str(SAVED_AT)]
        # Then step after step, dropout draws what it drew in the uninterrupted run, as long
        # as every batch holds as many samples (the 16 samples left in the epoch make batches
        # of 4 and 2 on each of 3 ranks: after the short one, dropout has drawn less)...
        sizes = wider[rank]["batch_sizes"]
        short = min(int(step) for step, size in sizes.items() if size < 4)
        same_draws = {s: f for s, f in wider[rank]["streams"].items() if int(s) <= short}
        assert same_draws == {s: full["streams"][s] for s in same_draws}
        assert len(same_draws) >= 2
        after = str(short + 1)
        assert wider[rank]["streams"][after] != full["streams"][after]
        # ...on other data: each rank takes every third sample of the global order now.
        assert wider[rank]["losses"] != from_step(full["losses"], SAVED_AT)


def test_on_three_ranks_the_new_rank_gets_a_stream_of_its_own(runs: dict[str, Any]) -> None:
    wider = runs["wider"][0]
    new = wider[2]["after_load"]
    saved = [runs["full"][rank]["at_checkpoint"][str(SAVED_AT)] for rank in (0, 1)]
    for source in ("torch", "numpy", "random"):
        assert new[source] not in (saved[0][source], saved[1][source])
    assert not set(wider[2]["streams"].values()) & set(wider[0]["streams"].values())
    assert not set(wider[2]["streams"].values()) & set(wider[1]["streams"].values())
