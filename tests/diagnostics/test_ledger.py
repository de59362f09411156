"""The block ledger: what a record holds, where it goes, and that recording changes no stream."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
    register_generator,
    set_seed,
)
from reproducible_block.diagnostics import (
    LEDGER_ENVIRONMENT_VARIABLE,
    _arming,
    _format,
    _ledger,
    _processes,
    ledger_note,
    read_ledger,
    record_blocks,
)
from reproducible_block.diagnostics._format import key_from_json, mt_key_digest
from reproducible_block.diagnostics._replay import entry_state_images
from tests._spawn import run_python

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _blocks(path: Path) -> list[dict[str, Any]]:
    return [record for record in read_ledger(path).records if "key" in record]


def test_the_header_says_what_the_records_derive_from(tmp_path: Path) -> None:
    set_seed(11)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        pass
    header = _lines(tmp_path / "ledger.jsonl")[0]
    assert header["format"] == "reproducible_block-ledger"
    assert header["version"] == 2
    assert header["root_seed"] == 11
    assert header["derivation"] == _format.DERIVATION
    assert header["versions"]["torch"] == torch.__version__
    assert header["rank"] is None
    assert header["world_size"] == 1
    assert ledger.path == tmp_path / "ledger.jsonl"
    assert ledger.records == 0


def test_one_record_per_block_exit_inner_first_with_a_count_per_key(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "runs" / "ledger.jsonl") as ledger:  # folders are created
        for index in range(2):
            with ReproducibleBlock(("sample", index)), ReproducibleBlock("augment"):
                pass
        with ReproducibleBlock(1), ReproducibleBlock("1"):
            pass
    keys = [(key_from_json(record["key"]), record["entry"]) for record in _blocks(ledger.path)]
    assert keys == [
        ("augment", 1),
        (("sample", 0), 1),
        ("augment", 2),
        (("sample", 1), 1),
        ("1", 1),
        (1, 1),
    ]
    assert all(record["rank"] == 0 for record in _blocks(ledger.path))


@pytest.mark.parametrize(
    ("source", "draw", "words"),
    [
        ("random", lambda: random.random(), 2),  # a double takes two 32-bit words
        ("numpy", lambda: np.random.rand(3), 6),
        ("torch", lambda: torch.rand(5), 5),  # float32 draws take one word each
    ],
)
def test_mersenne_twister_entries_hold_the_position_in_the_key(
    tmp_path: Path, source: str, draw: Any, words: int
) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("idle"):
            pass
        with ReproducibleBlock("draws"):
            draw()
    idle, drawing = _blocks(ledger.path)
    assert [entry[1] for entry in idle["state"].values()] == [624, 624, 624]  # fresh keys
    _fingerprint, position, key_digest = drawing["state"][source]
    assert position == words
    images = entry_state_images(0, "draws", None, ("random", "numpy", "torch"))
    assert key_digest != mt_key_digest(images[source])  # the first draw twisted the key
    assert idle["state"][source][2] == mt_key_digest(
        entry_state_images(0, "idle", None, ("random", "numpy", "torch"))[source]
    )


def test_recording_changes_no_stream(tmp_path: Path) -> None:
    """Draws inside and after blocks, and a decorated generator's across yields, are the same
    with and without a ledger; NumPy's cached Gaussian included."""

    @ReproducibleBlock("stepper")
    def stepper() -> Iterator[tuple[float, float, float]]:
        for _ in range(3):
            yield float(np.random.standard_normal()), random.gauss(0, 1), float(torch.randn(1))

    def program() -> list[Any]:
        set_seed(3)
        drawn: list[Any] = []
        steps = stepper()
        for index in range(3):
            np.random.standard_normal()  # leaves a cached Gaussian in the caller's state
            with ReproducibleBlock(("sample", index)):
                drawn.append(
                    (float(np.random.standard_normal()), random.gauss(0, 1), float(torch.randn(1)))
                )
            drawn.append(next(steps))
            drawn.append(
                (float(np.random.standard_normal()), random.random(), float(torch.rand(1)))
            )
        drawn.append(list(steps))  # the generator's last step runs to its end
        return drawn

    plain = program()
    with record_blocks(tmp_path / "ledger.jsonl"):
        recorded = program()
    assert recorded == plain
    keys = [record["key"] for record in _blocks(tmp_path / "ledger.jsonl")]
    assert keys.count("stepper") == 4
    assert len(keys) == 7


def test_notes_go_into_the_innermost_block_and_stand_alone_outside(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("train"):
            ledger_note("loss", torch.tensor(0.5))
            with ReproducibleBlock("eval"):
                ledger_note("accuracy", np.float64(0.75))
            ledger_note("step", 3)
        ledger_note("epoch", torch.ones(2))
    records = read_ledger(ledger.path).records
    assert records[0]["key"] == "eval"
    assert records[0]["notes"] == {"accuracy": [[records[0]["notes"]["accuracy"][0][0], 0.75]]}
    assert set(records[1]["notes"]) == {"loss", "step"}
    assert records[1]["notes"]["loss"][0][1] == 0.5
    assert records[1]["notes"]["step"][0][1] == 3
    assert "key" not in records[2]
    assert list(records[2]["notes"]) == ["epoch"]
    assert len(records[2]["notes"]["epoch"][0]) == 1  # two values: a fingerprint, no number


def test_a_note_without_a_recording_ledger_does_nothing() -> None:
    set_seed(0)
    with ReproducibleBlock("train"):
        ledger_note("loss", torch.tensor(1.0))  # no error, nothing to write to


def test_watched_values_are_fingerprinted_at_every_exit(tmp_path: Path) -> None:
    set_seed(0)
    model = torch.nn.Linear(2, 1)
    weights = torch.zeros(2)
    calls = []
    with record_blocks(
        tmp_path / "ledger.jsonl",
        watch={"model": model, "weights": weights, "lr": lambda: calls.append(1) or 0.1},
    ) as ledger:
        with ReproducibleBlock("a"):
            pass
        weights += 1  # watched in place: the next record sees the new values
        with ReproducibleBlock("b"):
            pass
    first, second = _blocks(ledger.path)
    assert first["watch"]["model"] == second["watch"]["model"]
    assert first["watch"]["weights"] != second["watch"]["weights"]
    assert first["watch"]["lr"][1] == 0.1
    assert len(calls) == 2


def test_special_numbers_are_recorded_as_words(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger, ReproducibleBlock("x"):
        ledger_note("nan", float("nan"))
        ledger_note("flag", True)
    notes = _blocks(ledger.path)[0]["notes"]
    assert notes["nan"][0][1] == "nan"
    assert notes["flag"][0][1] == 1


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        ([torch.zeros(1)], "watch=[tensor"),
        ({"": torch.zeros(1)}, "names are non-empty str"),
        ({"lr": 0.1}, "watch['lr'] is float 0.1"),
    ],
)
def test_bad_watch_arguments_are_refused(tmp_path: Path, watch: Any, message: str) -> None:
    with (
        pytest.raises(ReproducibleBlockTypeError, match=message.replace("[", r"\[")),
        record_blocks(tmp_path / "ledger.jsonl", watch=watch),
    ):
        pass
    assert _ledger.recording is None


def test_bad_paths_and_note_names_are_refused(tmp_path: Path) -> None:
    with (
        pytest.raises(ReproducibleBlockTypeError, match=r"non-empty str or os\.PathLike"),
        record_blocks(3),
    ):  # type: ignore[arg-type]
        pass
    (tmp_path / "file").write_text("")
    with (
        pytest.raises(ReproducibleBlockValueError, match="cannot write the block ledger"),
        record_blocks(tmp_path / "file" / "ledger.jsonl"),
    ):
        pass
    with (
        record_blocks(tmp_path / "ledger.jsonl"),
        pytest.raises(ReproducibleBlockTypeError, match="a note's name"),
    ):
        ledger_note(7, 1.0)  # type: ignore[arg-type]


def test_a_failing_write_stops_the_ledger_with_a_warning_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("first"):
            pass
        assert ledger._fd is not None
        os.close(ledger._fd)  # as if the disk went away
        with pytest.warns(RuntimeWarning, match="stopped recording"), ReproducibleBlock("second"):
            drawn = torch.rand(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with ReproducibleBlock("third"):  # no second warning, no error
                pass
        assert _ledger.recording is None
    with ReproducibleBlock("second"):
        assert torch.equal(torch.rand(2), drawn)  # the block still had its own stream
    assert [record["key"] for record in _blocks(tmp_path / "ledger.jsonl")] == ["first"]


def test_a_watch_that_raises_stops_the_ledger_not_the_block(tmp_path: Path) -> None:
    set_seed(0)
    before = torch.get_rng_state()
    with (
        record_blocks(tmp_path / "ledger.jsonl", watch={"bad": lambda: 1 / 0}),
        pytest.warns(RuntimeWarning, match="ZeroDivisionError"),
        ReproducibleBlock("x"),
    ):
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's state came back


def test_a_new_root_is_recorded_before_the_next_block(tmp_path: Path) -> None:
    set_seed(1)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("a"):
            pass
        set_seed(2)
        with ReproducibleBlock("a"):
            pass
    records = read_ledger(ledger.path).records
    assert [next(iter(record)) for record in records] == ["key", "root", "key"]
    assert records[1]["root"] == 2
    assert records[0]["state"] != records[2]["state"]


def test_per_rank_blocks_record_the_rank_they_folded_in(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("dropout", per_rank=True):
            pass
        with ReproducibleBlock("init"):
            pass
    per_rank, shared = _blocks(ledger.path)
    assert per_rank["per_rank"] == 0
    assert "per_rank" not in shared
    assert per_rank["state"]["torch"][2] == mt_key_digest(
        entry_state_images(0, "dropout", 0, ("random", "numpy", "torch"))["torch"]
    )


def test_registered_generators_get_a_fingerprint(tmp_path: Path) -> None:
    register_generator(np.random.default_rng(), name="augment-numpy")
    register_generator(torch.Generator(), name="augment-torch")
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger, ReproducibleBlock("x"):
        pass
    state = _blocks(ledger.path)[0]["state"]
    assert list(state) == ["random", "numpy", "torch", "augment-numpy", "augment-torch"]
    assert len(state["augment-numpy"]) == 1  # a PCG64: its fingerprint only
    assert len(state["augment-torch"]) == 3  # a CPU torch generator is a Mersenne Twister


def test_record_blocks_nests_and_restores_the_previous_ledger(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "outer.jsonl") as outer:
        with record_blocks(tmp_path / "inner.jsonl") as inner, ReproducibleBlock("in"):
            pass
        with ReproducibleBlock("out"):
            pass
    assert _ledger.recording is None
    assert [r["key"] for r in _blocks(inner.path)] == ["in"]
    assert [r["key"] for r in _blocks(outer.path)] == ["out"]


def test_a_launcher_rank_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger, ReproducibleBlock("x"):
        pass
    assert ledger.path == tmp_path / "ledger.rank3.jsonl"
    assert read_ledger(ledger.path).rank == 3
    assert _blocks(ledger.path)[0]["rank"] == 3


def test_the_environment_variable_records_lazily_and_children_get_their_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.jsonl"
    monkeypatch.setenv(LEDGER_ENVIRONMENT_VARIABLE, str(target))
    monkeypatch.delenv(_processes.PARENT_VARIABLE, raising=False)
    _arming._start_from_environment()
    assert os.environ[_processes.PARENT_VARIABLE].startswith(f"{os.getpid()}::")
    assert not target.exists()  # opened at the first record
    set_seed(0)
    with ReproducibleBlock("x"):
        pass
    assert [r["key"] for r in _blocks(target)] == ["x"]
    _ledger.recording.close()  # type: ignore[union-attr]

    monkeypatch.setenv(_processes.PARENT_VARIABLE, "1")  # as inherited from a recording parent
    _arming._start_from_environment()
    with ReproducibleBlock("y"):
        pass
    child = tmp_path / f"run.pid{os.getpid()}.jsonl"
    assert [r["key"] for r in _blocks(child)] == ["y"]
    assert [r["key"] for r in _blocks(target)] == ["x"]  # the parent's file is untouched


@pytest.mark.slow
def test_a_run_started_with_the_variable_records_in_a_subprocess(tmp_path: Path) -> None:
    target = tmp_path / "ledger.jsonl"
    script = (
        "import torch\n"
        "from reproducible_block import ReproducibleBlock, set_seed\n"
        "from reproducible_block.diagnostics import ledger_note\n"
        "set_seed(5)\n"
        "for step in range(3):\n"
        "    with ReproducibleBlock(('step', step)):\n"
        "        ledger_note('loss', torch.rand(()))\n"
    )
    env = {**os.environ, LEDGER_ENVIRONMENT_VARIABLE: str(target)}
    env.pop(_processes.PARENT_VARIABLE, None)
    run_python(script, env=env, check=True)
    blocks = _blocks(target)
    assert [key_from_json(r["key"]) for r in blocks] == [("step", 0), ("step", 1), ("step", 2)]
    assert all("loss" in r["notes"] for r in blocks)


class _PerSample(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        with ReproducibleBlock(("sample", index)):
            return torch.rand(2)


@pytest.mark.slow
def test_blocks_in_a_forked_loader_worker_are_recorded_in_its_own_file(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        loader = DataLoader(
            _PerSample(), batch_size=2, num_workers=1, multiprocessing_context="fork"
        )
        batches = list(loader)
        with ReproducibleBlock("parent"):
            pass
    assert len(batches) == 2
    assert [r["key"] for r in _blocks(ledger.path)] == ["parent"]
    (worker,) = tmp_path.glob("ledger.worker0.pid*.jsonl")
    assert [r["key"] for r in _blocks(worker)] == [["sample", index] for index in range(4)]
    header = read_ledger(worker).header
    assert header["parent"] == os.getpid()
    assert header["run"] == ledger.run
    assert header["worker"]["id"] == 0
    assert header["worker"]["num_workers"] == 1


_KILLED_RUN = """
import sys
import torch
from reproducible_block import ReproducibleBlock, set_seed
set_seed(1)
index = 0
while True:
    with ReproducibleBlock(("sample", index)):
        torch.rand(16)
    index += 1
    if index == 200:
        print("ready", flush=True)
"""


@pytest.mark.slow
def test_a_killed_run_leaves_a_readable_prefix(tmp_path: Path) -> None:
    target = tmp_path / "ledger.jsonl"
    env = {**os.environ, LEDGER_ENVIRONMENT_VARIABLE: str(target)}
    env.pop(_processes.PARENT_VARIABLE, None)
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"  # 200 blocks have exited
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    ledger = read_ledger(target)
    assert ledger.header["root_seed"] == 1
    blocks = [record for record in ledger.records if "key" in record]
    assert len(blocks) >= 200
    assert [key_from_json(r["key"]) for r in blocks] == [("sample", i) for i in range(len(blocks))]


def test_entries_are_the_same_without_the_fast_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reproducible_block._fast import views

    def program() -> None:
        for index in range(3):
            with ReproducibleBlock(("sample", index)):
                np.random.standard_normal(1 + index)  # odd counts leave a cached Gaussian
                random.gauss(0, 1) if index % 2 else random.random()
                torch.randn(index)  # one: torch caches a double normal

    fast = _blocks(_recorded(tmp_path / "fast.jsonl", program))
    monkeypatch.setattr(views, "ENABLED", False)
    public = _blocks(_recorded(tmp_path / "public.jsonl", program))
    for name in ("numpy", "random", "torch"):
        assert [r["state"][name] for r in fast] == [r["state"][name] for r in public]
        assert fast[0]["state"][name] != fast[2]["state"][name]


def _recorded(path: Path, program: Any) -> Path:
    set_seed(0)
    with record_blocks(path):
        program()
    return path


def test_entry_state_images_cover_the_builtin_mersenne_twisters_only() -> None:
    register_generator(torch.Generator(), name="augment")
    images = entry_state_images(0, ("sample", 1), None, ("torch", "augment"))
    assert list(images) == ["torch"]
    assert images["torch"] == entry_state_images(0, ("sample", 1), None, ("torch",))["torch"]


def test_a_path_without_a_suffix_gets_the_rank_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    set_seed(0)
    with record_blocks(tmp_path / "ledger") as ledger:
        assert repr(ledger) == f"<BlockLedger {str(tmp_path / 'ledger.rank0')!r}, 0 records>"
    assert ledger.path == tmp_path / "ledger.rank0"


def test_a_note_in_an_outer_block_waits_for_that_block(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger, ReproducibleBlock("outer"):
        ledger_note("before", 1)
        with ReproducibleBlock("inner"):
            pass
    inner, outer = _blocks(ledger.path)
    assert "notes" not in inner
    assert list(outer["notes"]) == ["before"]


def test_a_note_outside_blocks_after_set_seed_comes_after_the_root(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        set_seed(9)
        ledger_note("epoch", 1)
    records = read_ledger(ledger.path).records
    assert [{name: value for name, value in r.items() if name != "t"} for r in records] == [
        {"root": 9},
        {"notes": {"epoch": [[ledger_fp(1), 1]]}, "rank": 0},
    ]
    assert records[0]["t"] <= records[1]["t"]


def ledger_fp(value: object) -> str:
    from reproducible_block._support.fingerprint import fingerprint

    return fingerprint(value)


def test_a_failing_note_stops_the_ledger_with_a_warning(tmp_path: Path) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        assert ledger._fd is not None
        os.close(ledger._fd)
        with pytest.warns(RuntimeWarning, match="stopped recording"):
            ledger_note("loss", 1.0)
        ledger_note("loss", 2.0)  # stopped: nothing, no second warning
        assert _ledger.recording is None


# --- A child process never touches its parent's file -------------------------------------------

_RANK_WITH_CHILDREN = """
import os, subprocess, sys
from reproducible_block import ReproducibleBlock, set_seed
set_seed(3)
with ReproducibleBlock("rank-before"):
    pass
pid = os.fork()
if pid == 0:
    with ReproducibleBlock("forked-child"):
        pass
    os._exit(0)
os.waitpid(pid, 0)
started = (
    "from reproducible_block import ReproducibleBlock, set_seed\\n"
    "set_seed(3)\\n"
    "with ReproducibleBlock('started-child'):\\n"
    "    pass\\n"
)
subprocess.run([sys.executable, "-c", started], check=True, timeout=120)
with ReproducibleBlock("rank-after"):
    pass
"""


@pytest.mark.slow
def test_children_of_a_rank_write_their_own_pid_files(tmp_path: Path) -> None:
    target = tmp_path / "ledger.jsonl"
    env = {**os.environ, LEDGER_ENVIRONMENT_VARIABLE: str(target), "RANK": "1", "WORLD_SIZE": "2"}
    env.pop(_processes.PARENT_VARIABLE, None)
    run_python(_RANK_WITH_CHILDREN, env=env, timeout=240, check=True)
    rank_file = tmp_path / "ledger.rank1.jsonl"
    assert [r["key"] for r in _blocks(rank_file)] == ["rank-before", "rank-after"]
    children = sorted(tmp_path.glob("ledger.pid*.jsonl"))
    keys = sorted(r["key"] for child in children for r in _blocks(child))
    assert keys == ["forked-child", "started-child"]
    for child in children:
        header = read_ledger(child).header
        assert header["rank"] == 1
        assert header["parent"] == read_ledger(rank_file).header["pid"]
    assert read_ledger(rank_file).header["parent"] is None


def test_a_child_file_never_overwrites_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.jsonl"
    stale = tmp_path / f"run.pid{os.getpid()}.jsonl"  # another run's child had this pid
    stale.write_text("kept\n")
    monkeypatch.setenv(LEDGER_ENVIRONMENT_VARIABLE, str(target))
    monkeypatch.setenv(_processes.PARENT_VARIABLE, "1")  # as inherited from a recording parent
    _arming._start_from_environment()
    set_seed(0)
    with ReproducibleBlock("y"):
        pass
    path = _ledger.recording.path  # type: ignore[union-attr]
    _ledger.recording.close()  # type: ignore[union-attr]
    assert stale.read_text() == "kept\n"
    assert path is not None
    assert path != stale
    assert [r["key"] for r in _blocks(path)] == ["y"]
    assert not target.exists()


# --- A note never breaks nor stalls the program -------------------------------------------------


def _note_of(path: Path, name: str) -> list[Any]:
    return [r["notes"][name] for r in read_ledger(path).records if name in r.get("notes", {})]


def test_sparse_tensors_are_noted_by_their_values(tmp_path: Path) -> None:
    set_seed(0)
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    embedding(torch.tensor([1, 4, 1])).sum().backward()
    gradient = embedding.weight.grad
    assert gradient is not None
    assert gradient.is_sparse
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with record_blocks(tmp_path / "ledger.jsonl") as ledger, ReproducibleBlock("step"):
            ledger_note("grad", gradient)
            ledger_note("same", gradient.coalesce())
            warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
            ledger_note("csr", torch.eye(3).to_sparse_csr())
            ledger_note("coo", torch.eye(3).to_sparse())
            ledger_note("one", torch.ones(1).to_sparse())
    assert _ledger.recording is None  # closed by record_blocks, not stopped
    notes = read_ledger(ledger.path).records[0]["notes"]
    assert notes["grad"] == notes["same"]  # uncoalesced or not: the same values
    assert notes["csr"] == notes["coo"]  # the same entries in another layout
    assert notes["one"][0][1] == 1.0
    other = gradient.coalesce() * 2
    assert _format.noted(other)[0] != notes["grad"][0][0]


def test_a_loss_noted_under_grad_and_vmap_is_recorded(tmp_path: Path) -> None:
    set_seed(0)

    def loss(x: torch.Tensor) -> torch.Tensor:
        value = (x * x).sum()
        ledger_note("loss", value)
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with record_blocks(tmp_path / "ledger.jsonl") as ledger:
            with ReproducibleBlock("grad"):
                gradient = torch.func.grad(loss)(torch.ones(3))
            with ReproducibleBlock("vmap"):
                batched = torch.func.vmap(loss)(torch.ones(2, 3))
    assert torch.equal(gradient, torch.full((3,), 2.0))
    assert torch.equal(batched, torch.full((2,), 3.0))
    grad_record, vmap_record = read_ledger(ledger.path).records
    assert grad_record["notes"]["loss"] == [_format.noted(torch.tensor(3.0))]
    assert vmap_record["notes"]["loss"][0][0] == _format.noted(torch.full((2,), 3.0))[0]


@pytest.mark.slow
def test_a_note_inside_a_compiled_function_is_recorded(tmp_path: Path) -> None:
    set_seed(0)

    def step(x: torch.Tensor) -> torch.Tensor:
        loss = (x * 2).sum()
        ledger_note("loss", loss)
        return loss + 1

    compiled = torch.compile(step, backend="eager")
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        with ReproducibleBlock("step"):
            result = compiled(torch.ones(3))
        explained = torch._dynamo.explain(step)(torch.ones(3))
    assert result.item() == 7.0
    assert _note_of(ledger.path, "loss")[0] == [_format.noted(torch.tensor(6.0))]  # type: ignore[arg-type]
    # Dynamo never traced the ledger's work: at most one graph break, at the note itself.
    traced = {
        (Path(frame.filename).name, frame.name)
        for reason in explained.break_reasons
        for frame in reason.user_stack
    }
    assert traced <= {(Path(__file__).name, "step"), ("_arming.py", "ledger_note")}
    assert explained.graph_break_count <= 1


def test_a_note_from_another_thread_never_waits_for_the_block(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from reproducible_block import set_block_wait_timeout

    set_seed(0)
    set_block_wait_timeout(0.2)  # before the fix the note waited this long, then raised
    with record_blocks(tmp_path / "ledger.jsonl") as ledger, ThreadPoolExecutor(1) as pool:
        with ReproducibleBlock("train"):
            pool.submit(ledger_note, "loss", 0.5).result(timeout=60)
        pool.submit(ledger_note, "after", 1).result(timeout=60)
    records = read_ledger(ledger.path).records
    assert records[0]["key"] == "train"
    assert records[0]["notes"]["loss"][0][1] == 0.5
    assert records[1]["notes"]["after"][0][1] == 1


def test_a_value_that_cannot_be_fingerprinted_stops_the_ledger_once_at_the_caller(
    tmp_path: Path,
) -> None:
    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl"), ReproducibleBlock("x"):
        with pytest.warns(RuntimeWarning, match="stopped recording") as caught:
            ledger_note("bad", lambda: None)  # no error for the program
        ledger_note("bad", lambda: None)  # stopped: nothing, no second warning
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert _ledger.recording is None


def test_a_bad_note_name_is_refused_whether_or_not_a_ledger_records() -> None:
    with pytest.raises(ReproducibleBlockTypeError, match="non-empty str"):
        ledger_note("", 1.0)


# --- Sources need not be hashable ----------------------------------------------------------------


def test_an_unhashable_registered_source_is_recorded(tmp_path: Path) -> None:
    from .._plain_source import EqualitySource

    source = EqualitySource(state=5)
    assert type(source).__hash__ is None  # eq=True without frozen: not hashable
    register_generator(source, name="equal")
    set_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with record_blocks(tmp_path / "ledger.jsonl") as ledger:
            for index in range(2):
                with ReproducibleBlock(("x", index)):
                    pass
    blocks = _blocks(ledger.path)  # type: ignore[arg-type]
    assert [key_from_json(r["key"]) for r in blocks] == [("x", 0), ("x", 1)]
    assert all("equal" in r["state"] for r in blocks)


def test_a_short_write_goes_on_until_the_line_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def in_pieces(fd: int, data: bytes) -> int:  # as a pipe or a full disk may write
        return real_write(fd, bytes(data[:7]))

    set_seed(0)
    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        monkeypatch.setattr(os, "write", in_pieces)
        with ReproducibleBlock(("short", 1)):
            ledger_note("loss", 0.5)
        monkeypatch.undo()
    assert ledger.path is not None
    (record,) = read_ledger(ledger.path).records
    assert key_from_json(record["key"]) == ("short", 1)
    assert record["notes"]["loss"][0][1] == 0.5


def test_a_forked_child_writes_its_own_file_or_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _after_fork_in_child runs in forked children; called here, this process plays the child.
    monkeypatch.setenv(_processes.PARENT_VARIABLE, "restored-after-the-test")
    monkeypatch.delenv(_processes.PARENT_VARIABLE)
    monkeypatch.setenv(LEDGER_ENVIRONMENT_VARIABLE, str(tmp_path / "ledger.jsonl"))
    _arming._start_from_environment()
    parent = _ledger.recording
    assert parent is not None
    set_seed(0)
    with ReproducibleBlock("before"):
        pass
    assert parent.path == tmp_path / "ledger.jsonl"
    _arming._after_fork_in_child()
    child = _ledger.recording
    assert child is not None
    assert child is not parent
    assert parent._fd is None
    with ReproducibleBlock("after"):
        pass
    assert child.path == tmp_path / f"ledger.pid{os.getpid()}.jsonl"
    assert read_ledger(child.path).header["parent"] == os.getppid()
    assert [r["key"] for r in read_ledger(parent.path).records] == ["before"]
    child.close()
    _ledger.set_recording(None)
    with record_blocks(tmp_path / "explicit.jsonl") as explicit:
        _arming._after_fork_in_child()  # a child of record_blocks records in loader workers only
        assert explicit._fd is None
        with ReproducibleBlock("in-a-child"):
            pass
        assert _ledger.recording is not None
        assert _ledger.recording.path is None
    assert sorted(path.name for path in tmp_path.glob("explicit*")) == ["explicit.jsonl"]
    _arming._after_fork_in_child()  # nothing records: nothing to do
    assert _ledger.recording is None
