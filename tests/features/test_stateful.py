"""``RNGState``: the checkpoint state of every stream, through DCP, Lightning and accelerate."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    RNGState,
    set_seed,
)

from .._spawn import run_python, spawn_ranks
from .._stateful_dcp_worker import rank_main


def draws() -> list[float]:
    with ReproducibleBlock("after"):
        block = torch.rand(2).tolist()
    return [*block, *torch.rand(2).tolist()]


def test_a_state_dict_reloads_with_weights_only_and_restores_streams_and_root() -> None:
    set_seed(1)
    rng = RNGState()
    buffer = io.BytesIO()
    torch.save(rng.state_dict(), buffer)
    expected = draws()
    set_seed(2)
    buffer.seek(0)
    rng.load_state_dict(torch.load(buffer, weights_only=True))
    assert draws() == expected


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ([], ReproducibleBlockTypeError, "takes the dict"),
        ({"states": b""}, ReproducibleBlockValueError, "'format_version', 'states'"),
        ({"format_version": 2, "states": b""}, ReproducibleBlockValueError, "upgrade"),
        ({"format_version": 1, "states": [1]}, ReproducibleBlockValueError, "expected the bytes"),
        ({"format_version": 1, "states": b"junk"}, ReproducibleBlockValueError, "damaged"),
    ],
)
def test_a_damaged_state_is_refused_and_changes_nothing(
    state: Any, error: type[Exception], message: str
) -> None:
    set_seed(1)
    before = torch.get_rng_state()
    with pytest.raises(error, match=message):
        RNGState().load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_world_size_policy_is_checked_at_construction_and_shown() -> None:
    with pytest.raises(ReproducibleBlockValueError, match=r"'error'.*'derive'"):
        RNGState(on_world_size_change="grow")  # type: ignore[arg-type]
    assert repr(RNGState(on_world_size_change="derive")) == (
        "RNGState(on_world_size_change='derive')"
    )


def test_a_state_of_one_rank_is_refused_on_two_unless_derive() -> None:
    # Outside torch.distributed the process is one rank; a 2-rank state is refused by default.
    set_seed(1)
    state = RNGState().state_dict()
    entries = torch.load(io.BytesIO(state["states"]), weights_only=True)
    two = [entries[0], {**entries[0], "rank": 1}]
    two = [{**entry, "world_size": 2} for entry in two]
    buffer = io.BytesIO()
    torch.save(two, buffer)
    saved = {"format_version": 1, "states": buffer.getvalue()}
    with pytest.raises(ReproducibleBlockValueError, match="saved by 2 rank"):
        RNGState().load_state_dict(saved)
    expected = draws()
    RNGState(on_world_size_change="derive").load_state_dict(saved)  # rank 0 keeps its entry
    assert draws() == expected


@pytest.mark.filterwarnings("ignore:torch was seeded with 1 after")  # the unregistered control
def test_accelerate_save_state_and_load_state_restore_a_registered_rng_state(
    tmp_path: Path,
) -> None:
    accelerate = pytest.importorskip("accelerate")
    results = {}
    for registered in (True, False):
        accelerator = accelerate.Accelerator(cpu=True)
        if registered:
            accelerator.register_for_checkpointing(RNGState())
        set_seed(1)
        accelerator.save_state(str(tmp_path / str(registered)))
        expected = draws()
        set_seed(2)  # accelerate restores torch's global generator itself; not the root
        accelerator.load_state(str(tmp_path / str(registered)))
        results[registered] = draws() == expected
    assert results == {True: True, False: False}


@pytest.fixture(scope="module")
def dcp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """2 gloo ranks save with torch.distributed.checkpoint and resume (from another root and
    other streams); a fresh group of 3 resumes."""
    workdir = Path(tmp_path_factory.mktemp("dcp"))
    runs = {}
    for name, phase, ranks in (("two", "save", 2), ("three", "resume", 3)):
        (workdir / "phase").write_text(phase)
        runs[name] = spawn_ranks(rank_main, ranks, workdir)
    return runs


@pytest.mark.slow
def test_dcp_resumes_each_rank_on_two_ranks(dcp_runs: dict[str, list[dict[str, Any]]]) -> None:
    expected = [rank["expected"] for rank in dcp_runs["two"]]
    assert [rank["resumed"] for rank in dcp_runs["two"]] == expected
    assert expected[0] != expected[1]  # restoring one rank's entry everywhere would show


@pytest.mark.slow
def test_dcp_on_three_ranks_is_refused_on_every_rank_unless_derive(
    dcp_runs: dict[str, list[dict[str, Any]]],
) -> None:
    for rank in dcp_runs["three"]:
        assert "saved by 2 rank(s) and this run has 3" in rank["default"]["error"]
        assert rank["default"]["untouched"]
    expected = [rank["expected"] for rank in dcp_runs["two"]]
    resumed = [rank["resumed"] for rank in dcp_runs["three"]]
    assert resumed[:2] == expected
    assert resumed[2] == dcp_runs["three"][2]["again"]  # derived, deterministically
    assert resumed[2]["global"] not in [entry["global"] for entry in expected]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "messages"),
    [
        ("lacking", ["states[0]['world_size']"]),
        ("disagree", ["another state on rank(s) [1]"]),
        ("damaged", ["refused on rank 1", "damaged"]),
    ],
)
def test_dcp_ranks_refuse_together(
    dcp_runs: dict[str, list[dict[str, Any]]], case: str, messages: list[str]
) -> None:
    # A state without rank 1's entry, ranks handed different states, a state damaged on rank 1.
    for rank in dcp_runs["two"]:
        assert rank[case]["untouched"]
        assert any(message in rank[case]["error"] for message in messages)


@pytest.fixture(scope="module")
def lightning_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Lightning fits in fresh processes: whole, killed after epoch 1, resumed with and without
    the RNG callback."""
    pytest.importorskip("lightning")
    workdir = Path(tmp_path_factory.mktemp("lightning"))
    script = str(Path(__file__).parents[1] / "_stateful_lightning_run.py")  # imports Lightning
    killed = run_python(args=[script, "killed", str(workdir)], timeout=180)
    rest = run_python(args=[script, "rest", str(workdir)], timeout=300)
    assert rest.returncode == 0, rest.stderr[-3000:]
    runs: dict[str, Any] = {"killed-returncode": killed.returncode}
    for mode in ("full", "resume", "resume-without"):
        runs[mode] = json.loads((workdir / f"{mode}.json").read_text())
    return runs


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_lightning_fit_resumes_the_streams_with_the_callback(
    lightning_runs: dict[str, Any],
) -> None:
    assert lightning_runs["killed-returncode"] == -9
    second_epoch = [draw for draw in lightning_runs["full"] if draw[0] == 1]
    assert len(second_epoch) == 3
    assert lightning_runs["resume"] == second_epoch
    assert lightning_runs["resume-without"] != second_epoch  # so the test can fail
