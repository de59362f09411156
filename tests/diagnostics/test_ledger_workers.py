"""Blocks entered in DataLoader workers are recorded (fork and spawn, persistent or not), and the
diff pairs block records by (rank, key, n-th entry), whatever process wrote them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reproducible_block.diagnostics import _processes, diff_runs, read_ledger
from reproducible_block.diagnostics._arming import LEDGER_ENVIRONMENT_VARIABLE

from .._spawn import run_python

_SCRIPT = str(Path(__file__).parent.parent / "_ledger_loader_run.py")


def loader_runs(folder: Path, *runs: str, environment: str | None = None) -> None:
    """Record ``runs`` (see tests/_ledger_loader_run.py) in one fresh interpreter."""
    env = {**os.environ}
    env.pop(_processes.PARENT_VARIABLE, None)
    env.pop(_processes.WORKERS_VARIABLE, None)
    env.pop(LEDGER_ENVIRONMENT_VARIABLE, None)
    if environment is not None:
        env[LEDGER_ENVIRONMENT_VARIABLE] = str(folder / environment / "ledger.jsonl")
    run_python(args=[_SCRIPT, str(folder), *runs], env=env, timeout=240, check=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loader-runs")
    names = {
        "0": "0:0:fork:0:-1:2:",
        "2 fork": "2f:2:fork:0:-1:2:",
        "2 fork, sample 13 draws once more": "2fx:2:fork:0:13:2:",
        "4 fork, persistent": "4fp:4:fork:1:-1:2:",
        "2 spawn, persistent": "2sp:2:spawn:1:-1:2:",
        "2 fork, worker 1 off": "off1:2:fork:0:-1:1:off1",
    }
    loader_runs(folder, *names.values())
    return {name: folder / run.split(":")[0] / "ledger.jsonl" for name, run in names.items()}


@pytest.mark.slow
def test_blocks_in_loader_workers_are_recorded(runs: dict[str, Path]) -> None:
    folder = runs["2 fork"].parent
    workers = [read_ledger(path) for path in sorted(folder.glob("ledger.*.jsonl"))]
    # Two epochs, two workers each (not persistent): four worker processes, each its own file.
    assert len(workers) == 4
    keys = sorted(tuple(r["key"]) for ledger in workers for r in ledger.records if "key" in r)
    assert keys == sorted(("sample", index) for index in range(16) for _ in range(2))


@pytest.mark.slow
@pytest.mark.parametrize("other", ["2 fork", "4 fork, persistent", "2 spawn, persistent"])
def test_runs_with_other_worker_counts_agree(runs: dict[str, Path], other: str) -> None:
    found = diff_runs(runs["0"], runs[other])
    assert found.identical, found.message
    assert found.agreed == 2 * 16 + 2  # every sample twice, and the two epochs' blocks


@pytest.mark.slow
def test_a_sample_that_drew_once_more_in_a_worker_is_found(runs: dict[str, Path]) -> None:
    found = diff_runs(runs["2 fork"], runs["2 fork, sample 13 draws once more"])
    assert not found.identical
    assert (found.key, found.entry) == (("sample", 13), 1)
    assert "torch stream consumed differently (A drew 3 numbers, B 4)" in found.reasons
    assert "('sample', 13), entry #1" in found.message
    against_no_workers = diff_runs(runs["0"], runs["2 fork, sample 13 draws once more"])
    assert (against_no_workers.key, against_no_workers.entry) == (("sample", 13), 1)


@pytest.mark.slow
def test_workers_record_from_the_environment_variable(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    loader_runs(tmp_path, "env:2:fork:1:-1:2:environment", environment="env")
    path = tmp_path / "env" / "ledger.jsonl"
    workers = [read_ledger(p) for p in path.parent.glob("ledger.*.jsonl")]
    assert sorted(ledger.header["worker"]["id"] for ledger in workers) == [0, 1]
    samples = [r for ledger in workers for r in ledger.records if "key" in r]
    assert len(samples) == 2 * 16
    assert diff_runs(path, runs["0"]).identical


@pytest.mark.slow
def test_a_worker_that_runs_unrecorded_is_reported(runs: dict[str, Path]) -> None:
    path = runs["2 fork, worker 1 off"]
    found = diff_runs(path, path)
    assert not found.identical
    assert found.unrecorded
    assert "DataLoader worker 1 of 2" in found.message
    assert "not recorded" in found.message
