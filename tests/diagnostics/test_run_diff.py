"""diff_runs() and `python -m reproducible_block diff`: where two runs' ledgers first part."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockValueError,
    register_generator,
    set_seed,
)
from reproducible_block.__main__ import main
from reproducible_block.diagnostics import (
    _arming,
    _format,
    _processes,
    _read,
    _replay,
    diff_runs,
    ledger_note,
    read_ledger,
    record_blocks,
)

from .._ledger_rank_worker import CHANGED_SAMPLE, rank_main
from .._spawn import run_python, spawn_ranks


def record(
    path: Path, program: Callable[[], None], seed: int = 0, watch: dict[str, Any] | None = None
) -> Path:
    set_seed(seed)
    with record_blocks(path, watch=watch):
        program()
    return path


def per_sample(extra: Callable[[int], None] = lambda index: None, samples: int = 20) -> None:
    """A per-sample pipeline: every sample draws from every source in its own block."""
    for index in range(samples):
        with ReproducibleBlock(("sample", index)):
            random.random()
            np.random.rand(2)
            torch.rand(3)
            extra(index)


def one_more_draw_at(sample: int) -> Callable[[], None]:
    """The per-sample pipeline, with one more torch draw in one sample's block."""
    return lambda: per_sample(lambda index: torch.rand(1) if index == sample else None)


def test_identical_runs_diff_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", per_sample)
    found = diff_runs(a, b)
    assert found.identical
    assert found.agreed == 20
    assert found.key is None
    assert str(found) == "the runs agree: 20 blocks, every record the same"
    assert main(["diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == found.message


@pytest.mark.parametrize(
    ("source", "draw", "counts"),
    [
        ("random", lambda: random.random(), "A drew 2 numbers, B 4"),
        ("numpy", lambda: np.random.rand(), "A drew 4 numbers, B 6"),
        ("torch", lambda: torch.rand(1), "A drew 3 numbers, B 4"),
    ],
)
def test_one_changed_draw_is_located_to_its_block_and_counted(
    tmp_path: Path, source: str, draw: Callable[[], object], counts: str
) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", lambda: per_sample(lambda i: draw() if i == 13 else None))
    found = diff_runs(a, b)
    assert not found.identical
    assert (found.key, found.entry, found.agreed) == (("sample", 13), 1, 13)
    assert found.reasons == (f"{source} stream consumed differently ({counts})",)
    assert found.message == (
        f"both runs agree for 13 blocks; they first differ at "
        f"('sample', 13), entry #1: {source} stream consumed differently "
        f"({counts})"
    )


def test_the_entry_of_a_repeated_key_is_named(tmp_path: Path) -> None:
    def epochs(changed: int | None) -> Callable[[], None]:
        def program() -> None:
            for epoch in range(5):
                with ReproducibleBlock("augment"):
                    torch.rand(10 + (epoch == changed))

        return program

    found = diff_runs(
        record(tmp_path / "a.jsonl", epochs(None)), record(tmp_path / "b.jsonl", epochs(2))
    )
    assert (found.key, found.entry) == ("augment", 3)
    assert "A drew 10 numbers, B 11" in found.message


def test_a_changed_watched_loss_is_located(tmp_path: Path) -> None:
    def training(lr: float) -> tuple[Callable[[], None], dict[str, Any]]:
        loss = torch.zeros(())

        def program() -> None:
            for step in range(10):
                with ReproducibleBlock(("train", step)):
                    loss.fill_(1.0 / (step + 1) * (lr if step >= 7 else 1.0))

        return program, {"loss": loss}

    program_a, watch_a = training(1.0)
    program_b, watch_b = training(0.5)
    found = diff_runs(
        record(tmp_path / "a.jsonl", program_a, watch=watch_a),
        record(tmp_path / "b.jsonl", program_b, watch=watch_b),
    )
    assert (found.key, found.entry) == (("train", 7), 1)
    assert found.reasons == ("the watched loss differs (A 0.125, B 0.0625)",)


def test_a_changed_note_is_located(tmp_path: Path) -> None:
    def program(scale: float) -> Callable[[], None]:
        def run() -> None:
            for step in range(4):
                with ReproducibleBlock(("train", step)):
                    ledger_note("loss", torch.tensor(step * (scale if step == 2 else 1.0)))
            ledger_note("final", 1.0)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(1.0)), record(tmp_path / "b.jsonl", program(3.0))
    )
    assert found.key == ("train", 2)
    assert found.reasons == ("note 'loss' #1 in ('train', 2) differs (A 2.0, B 6.0)",)


def test_another_block_order_is_no_difference(tmp_path: Path) -> None:
    # Records pair by (key, n-th entry), not by order: what each block did is compared (a data
    # order that changes shows in the blocks whose values depend on it, e.g. a noted loss).
    def program(order: list[int]) -> Callable[[], None]:
        def run() -> None:
            for index in order:
                with ReproducibleBlock(("sample", index)):
                    torch.rand(2)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program([1, 2, 3, 5, 6])),
        record(tmp_path / "b.jsonl", program([1, 2, 3, 6, 5])),
    )
    assert found.identical, found.message
    assert found.agreed == 5


def test_a_shorter_run_is_named_and_a_torn_line_mentioned(tmp_path: Path) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", lambda: per_sample(samples=12))
    with open(b, "a") as file:
        file.write('{"key":["sam')  # killed while writing
    found = diff_runs(a, b)
    assert found.agreed == 12
    assert found.key == ("sample", 12)
    assert found.reasons == (
        "only A has this record: B exited ('sample', 12) never (B's ledger b.jsonl is torn: "
        "it was killed while writing)",
    )
    assert diff_runs(b, a).reasons[0].startswith("only B has this record: A exited")


def test_different_root_seeds_are_the_first_difference(tmp_path: Path) -> None:
    found = diff_runs(
        record(tmp_path / "a.jsonl", per_sample, seed=1),
        record(tmp_path / "b.jsonl", per_sample, seed=2),
    )
    assert found.agreed == 0
    assert found.key is None
    assert "start from different root seeds (A 1, B 2)" in found.message


def test_a_set_seed_inside_the_run_is_compared(tmp_path: Path) -> None:
    def program(seed: int) -> Callable[[], None]:
        def run() -> None:
            per_sample(samples=3)
            set_seed(seed)
            per_sample(samples=3)

        return run

    same = diff_runs(
        record(tmp_path / "a.jsonl", program(4)), record(tmp_path / "b.jsonl", program(4))
    )
    assert same.identical
    assert same.agreed == 6
    found = diff_runs(
        record(tmp_path / "a.jsonl", program(4)), record(tmp_path / "c.jsonl", program(5))
    )
    assert found.reasons == ("A called set_seed(4) where B called set_seed(5)",)


@pytest.mark.parametrize("option", ["per_rank", "per_worker"])
def test_blocks_with_folds_are_replayed_with_their_rank_or_worker(
    tmp_path: Path, option: str
) -> None:
    def program(count: int) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("dropout", **{option: True}):
                torch.rand(count)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(100)), record(tmp_path / "b.jsonl", program(1000))
    )
    assert found.reasons == ("torch stream consumed differently (A drew 100 numbers, B 1,000)",)


def test_draws_beyond_the_replay_bound_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def program(extra: int) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("big"):
                torch.rand(5000 + extra)

        return run

    a = record(tmp_path / "a.jsonl", program(0))
    b = record(tmp_path / "b.jsonl", program(1))
    monkeypatch.setattr(_replay, "MAX_REPLAYED_DRAWS", 3000)
    reason = diff_runs(a, b).reasons[0]
    assert reason == (
        "torch stream consumed differently (not counted: more than 3,000 numbers, "
        "or a reseeded generator)"
    )


@pytest.mark.slow
def test_a_reseeded_stream_cannot_be_counted(tmp_path: Path) -> None:
    def program(seed: int) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("reseeds"):
                torch.manual_seed(seed)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(1)), record(tmp_path / "b.jsonl", program(2))
    )
    assert found.reasons == (
        "torch stream consumed differently (not counted: more than "
        "10,000,000 numbers, or a reseeded generator)",
    )


def test_other_generators_differ_by_fingerprint(tmp_path: Path) -> None:
    generator = np.random.default_rng()
    register_generator(generator, name="augment")

    def program(extra: int) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("x"):
                generator.random(1 + extra)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(0)), record(tmp_path / "b.jsonl", program(1))
    )
    assert found.reasons == ("augment state differs at exit",)


def test_other_versions_are_mentioned(tmp_path: Path) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", per_sample)
    lines = b.read_text().splitlines()
    header = json.loads(lines[0])
    header["versions"]["torch"] = "0.0.1"
    b.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    found = diff_runs(a, b)
    assert found.identical
    assert found.context == (f"torch {torch.__version__} vs 0.0.1",)
    assert found.message.endswith(
        f"(the runs used different versions: torch {torch.__version__} vs 0.0.1)"
    )


def test_json_output_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", one_more_draw_at(4))
    assert main(["diff", "--json", str(a), str(b)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["identical"] is False
    assert printed["key"] == ["sample", 4]
    assert printed["entry"] == 1
    assert printed["agreed_blocks"] == 4
    assert printed == diff_runs(a, b).as_dict()
    assert main(["diff", str(a), str(tmp_path / "missing.jsonl")]) == 2
    assert "no block ledger found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["diff", str(a)])
    assert usage.value.code == 2


def test_the_report_without_a_subcommand_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json"]) == 0
    assert "versions" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "its first line is not a ledger header"),
        (b'{"format":"something else"}\n', "its first line is not a ledger header"),
        (b'{"format":"reproducible_block-ledger","version":99}\n', "format version 99"),
        (b'{"format":"reproducible_block-ledger","version":1}\nnot json\n{}\n', "line 2 is not"),
        (b'{"format":"reproducible_block-ledger","version":1}\n[1]\n', "line 2 is not a JSON obj"),
    ],
)
def test_unreadable_ledgers_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(content)
    with pytest.raises(ReproducibleBlockValueError, match=message):
        read_ledger(path)


def test_a_folder_with_two_ledgers_for_one_rank_is_refused(tmp_path: Path) -> None:
    record(tmp_path / "run" / "a.jsonl", per_sample)
    record(tmp_path / "run" / "b.jsonl", per_sample)
    (tmp_path / "run" / "notes.txt").write_text("not a ledger")
    with pytest.raises(ReproducibleBlockValueError, match="two ledgers for rank None"):
        diff_runs(tmp_path / "run", tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReproducibleBlockValueError, match="holds no ledger file"):
        diff_runs(tmp_path / "empty", tmp_path / "run")


def test_ledgers_of_another_digest_are_refused(tmp_path: Path) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = tmp_path / "b.jsonl"
    b.write_text(a.read_text().replace('"digest":"key-words-64+crc32"', '"digest":"md5"'))
    with pytest.raises(ReproducibleBlockValueError, match="different digests"):
        diff_runs(a, b)


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs "a" and "b" of a real 2-rank gloo group; "b" draws once more on rank 1."""
    workdir = Path(tmp_path_factory.mktemp("ranks"))
    spawn_ranks(rank_main, 2, workdir)
    return workdir


@pytest.mark.slow
def test_a_two_rank_run_writes_a_ledger_per_rank_and_the_diff_names_the_rank(
    two_rank_runs: Path,
) -> None:
    a, b = two_rank_runs / "a", two_rank_runs / "b"
    assert sorted(path.name for path in a.iterdir()) == ["ledger.rank0.jsonl", "ledger.rank1.jsonl"]
    assert read_ledger(a / "ledger.rank1.jsonl").header["world_size"] == 2
    for run_a, run_b in ((a, b), (a / "ledger.jsonl", b / "ledger.jsonl")):
        found = diff_runs(run_a, run_b)
        assert (found.rank, found.key, found.entry) == (1, ("sample", CHANGED_SAMPLE), 1)
        assert found.message == (
            "both runs agree for 2 blocks; they first differ at ('sample', 5), entry #1, "
            "rank 1: torch stream consumed differently (A drew 4 numbers, B 5)"
        )
        assert [rank["identical"] for rank in found.ranks] == [True, False]
    same = diff_runs(a, a)
    assert same.identical
    assert same.message == ("the runs agree: 14 blocks on 2 ranks, every record the same")


def test_a_folder_is_not_a_ledger_file(tmp_path: Path) -> None:
    with pytest.raises(ReproducibleBlockValueError, match="IsADirectoryError"):
        read_ledger(tmp_path)


def test_a_state_that_cannot_come_from_its_key_is_not_counted() -> None:
    key = bytes(range(256)) * 9 + bytes(240)
    assert _replay.count_draws(key[:2496], _format.mt_key_digest(key[:2496]), 624) == 0
    assert _replay.count_draws(key[:2496], _format.mt_key_digest(key[:2496]), 5) is None


def _rewritten(path: Path, change: Callable[[dict[str, Any]], None], header: bool = False) -> Path:
    """A copy of a ledger with every record (or the header) changed."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines[:1] if header else lines[1:]:
        change(line)
    copy = path.with_name("changed-" + path.name)
    copy.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return copy


def test_draws_that_cannot_be_replayed_say_why(tmp_path: Path) -> None:
    a = record(tmp_path / "a.jsonl", per_sample)
    b = record(tmp_path / "b.jsonl", one_more_draw_at(2))
    other = _rewritten(b, lambda header: header.update(derivation="another"), header=True)
    assert diff_runs(a, other).reasons == (
        "torch stream consumed differently (A drew 3 numbers; B not counted: no root seed, or "
        "another derivation scheme)",
    )
    float_keys = _rewritten(
        b, lambda r: r.update(key=1.5) if r.get("key") == ["sample", 2] else None
    )
    float_keys_a = _rewritten(
        a, lambda r: r.update(key=1.5) if r.get("key") == ["sample", 2] else None
    )
    with pytest.raises(ReproducibleBlockValueError, match=r"line 4, field key: 1\.5"):
        diff_runs(float_keys_a, float_keys)  # no block has such a key: a damaged ledger


def test_registered_torch_generators_are_not_replayed(tmp_path: Path) -> None:
    generator = torch.Generator()
    register_generator(generator, name="augment")

    def program(extra: int) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("x"):
                torch.rand(1 + extra, generator=generator)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(0)), record(tmp_path / "b.jsonl", program(1))
    )
    assert found.reasons == (
        "augment stream consumed differently (not counted: the draws of "
        "registered generators are not replayed)",
    )


def test_the_same_count_of_other_draws_is_told_apart(tmp_path: Path) -> None:
    def normal() -> None:
        with ReproducibleBlock("x"):
            np.random.standard_normal()  # a pair of doubles (or more: polar rejection sampling)

    a = record(tmp_path / "a.jsonl", normal)
    words = read_ledger(a).records[0]["state"]["numpy"][1]  # drawn since the first twist

    def uniform() -> None:
        with ReproducibleBlock("x"):
            np.random.rand(words // 2)  # as many words, no cached normal

    found = diff_runs(a, record(tmp_path / "b.jsonl", uniform))
    assert found.reasons == (
        f"numpy state differs at exit although both drew {words:,} numbers "
        "(other kinds of draws, or a cached normal)",
    )


def test_notes_and_blocks_of_other_kinds_are_named(tmp_path: Path) -> None:
    def program(note_first: bool, value: float = 1.0) -> Callable[[], None]:
        def run() -> None:
            if note_first:
                ledger_note("epoch", value)
            with ReproducibleBlock("x"):
                pass
            ledger_note("epoch", value)

        return run

    found = diff_runs(
        record(tmp_path / "a.jsonl", program(True)), record(tmp_path / "b.jsonl", program(False))
    )
    assert found.reasons == ("only A has this record: B noted 'epoch' outside blocks once",)
    assert found.key is None
    notes = diff_runs(
        record(tmp_path / "c.jsonl", program(False, 1.0)),
        record(tmp_path / "d.jsonl", program(False, 2.0)),
    )
    assert notes.reasons == ("note 'epoch' #1 outside blocks differs (A 1.0, B 2.0)",)
    assert notes.agreed == 1


def test_watched_names_and_tensors_are_compared(tmp_path: Path) -> None:
    def program() -> None:
        with ReproducibleBlock("x"):
            pass

    a = record(tmp_path / "a.jsonl", program, watch={"w": torch.zeros(2), "only_a": torch.ones(1)})
    b = record(tmp_path / "b.jsonl", program, watch={"w": torch.ones(2), "only_b": torch.ones(1)})
    reasons = diff_runs(a, b).reasons
    assert reasons[0].startswith("the watched w differs (A fingerprint ")
    assert reasons[1:] == ("only A watched 'only_a'", "only B watched 'only_b'")


def test_other_sources_and_per_rank_are_named(tmp_path: Path) -> None:
    def program(**options: Any) -> Callable[[], None]:
        def run() -> None:
            with ReproducibleBlock("x", **options):
                pass

        return run

    sources = diff_runs(
        record(tmp_path / "a.jsonl", program()),
        record(tmp_path / "b.jsonl", program(sources=("torch",))),
    )
    assert sources.reasons == (
        "the block managed different generators (A ['random', 'numpy', 'torch'], B ['torch'])",
    )
    per_rank = diff_runs(
        record(tmp_path / "a.jsonl", program()),
        record(tmp_path / "c.jsonl", program(per_rank=True)),
    )
    assert per_rank.reasons[0] == "the per_rank differs (A None, B 0)"


def _ranked(path: Path, ranks: dict[int, int], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ledgers of ``path`` as ranks would write them: rank -> how many numbers sample 1 draws."""
    for rank, draws in ranks.items():
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(len(ranks)))
        record(
            path,
            lambda draws=draws: per_sample(
                lambda i: torch.rand(draws) if i == 1 else None, samples=3
            ),
        )
    return path


def test_every_differing_rank_is_listed_and_missing_ranks_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _ranked(tmp_path / "a" / "ledger.jsonl", {0: 1, 1: 1}, monkeypatch)
    b = _ranked(tmp_path / "b" / "ledger.jsonl", {0: 2, 1: 3}, monkeypatch)
    found = diff_runs(a, b)
    assert found.rank == 0
    assert found.key == ("sample", 1)
    assert found.message.endswith("; rank 1 also differs, first at ('sample', 1), entry #1")
    (tmp_path / "b" / "ledger.rank1.jsonl").unlink()
    missing = diff_runs(a, b)
    assert missing.ranks[1]["reasons"] == ["only A has ledgers for rank 1"]


# --- Damaged ledgers: exit 2, naming the file, the line and the field ---------------------------


def _damage(path: Path, line: int, change: Callable[[dict[str, Any]], None]) -> Path:
    lines = path.read_text().splitlines()
    record = json.loads(lines[line - 1])
    change(record)
    lines[line - 1] = json.dumps(record)
    damaged = path.with_name("damaged.jsonl")
    damaged.write_text("\n".join(lines) + "\n")
    return damaged


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets the field at ``path`` (names and list indexes, '/'-separated)."""

    def change(record: dict[str, Any]) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split("/")]
        target: Any = record
        for part in parents:
            target = target[part]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("line", "change", "field"),
    [
        (1, _set("root_seed", 2**40), "root_seed"),
        (1, _set("root_seed", "0"), "root_seed"),
        (1, _set("rank", "0"), "rank"),
        (1, _set("derivation", 1), "derivation"),
        (2, _set("state/torch/1", "abc"), "state.torch[1]"),
        (2, _set("state/torch/1", 625), "state.torch[1]"),
        (2, _set("state/torch/2", 5), "state.torch[2]"),
        (2, _set("state/numpy", "x"), "state.numpy"),
        (2, _set("state", []), "state"),
        (2, _set("entry", "1"), "entry"),
        (2, _set("entry", 0), "entry"),
        (2, _set("key", {"a": 1}), "key"),
        (2, _set("key", ["a", [1]]), "key"),
        (2, _set("rank", -1), "rank"),
        (2, _set("per_rank", "1"), "per_rank"),
        (2, _set("notes", [1]), "notes"),
        (2, _set("watch", {"m": "x"}), "watch.m"),
        (3, lambda record: record.clear(), "key"),
        (3, lambda record: (record.clear(), record.update(root=-1)), "root"),
    ],
)
def test_a_damaged_record_is_refused_naming_the_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: int,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    good = record(tmp_path / "a.jsonl", per_sample)
    damaged = _damage(good, line, change)
    with pytest.raises(ReproducibleBlockValueError) as refused:
        read_ledger(damaged)
    message = str(refused.value)
    assert str(damaged) in message
    assert f"line {line}" in message
    assert field in message
    assert main(["diff", str(good), str(damaged)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert f"line {line}" in printed.err
    assert field in printed.err
    assert str(damaged) in printed.err
    assert "Traceback" not in printed.err


# --- Runs with child processes' ledgers ---------------------------------------------------------

_RUN_WITH_CHILDREN = """
import os, sys
import torch
from reproducible_block import ReproducibleBlock, set_seed
extra = int(sys.argv[1])
set_seed(2)
for name in ("first", "second"):
    pid = os.fork()
    if pid == 0:
        for index in range(3):
            with ReproducibleBlock((name, index)):
                torch.rand(2 + (extra if name == "second" and index == 1 else 0))
        os._exit(0)
    os.waitpid(pid, 0)
with ReproducibleBlock("parent"):
    torch.rand(2)
"""


def _run_with_children(folder: Path, extra: int) -> Path:
    import os

    env = {**os.environ, _arming.LEDGER_ENVIRONMENT_VARIABLE: str(folder / "ledger.jsonl")}
    env.pop(_processes.PARENT_VARIABLE, None)
    run_python(_RUN_WITH_CHILDREN, args=[str(extra)], env=env, timeout=240, check=True)
    assert len(list(folder.glob("ledger.pid*.jsonl"))) == 2
    return folder


@pytest.mark.slow
def test_child_ledgers_pair_by_key_with_the_run(tmp_path: Path) -> None:
    a = _run_with_children(tmp_path / "a", 0)
    b = _run_with_children(tmp_path / "b", 0)
    c = _run_with_children(tmp_path / "c", 1)
    same = diff_runs(a, b)
    assert same.identical, same.message
    assert same.agreed == 7
    differ = diff_runs(a, c)
    assert not differ.identical
    assert (differ.key, differ.entry) == (("second", 1), 1)
    assert differ.process is not None
    assert differ.process.startswith("child process ")
    assert f"(in {differ.process})" in differ.message
    assert differ.as_dict()["process"] == differ.process


def test_a_file_that_cannot_be_read_is_no_ledger(tmp_path: Path) -> None:
    assert not _read._is_ledger(tmp_path / "vanished.jsonl")  # gone between listing and reading
    assert not _read._is_ledger(tmp_path)  # a folder


def test_every_note_is_kept_and_the_first_differing_one_named(tmp_path: Path) -> None:
    def program(changed_step: int | None) -> Callable[[], None]:
        def run() -> None:
            for epoch in range(2):
                with ReproducibleBlock(("train", epoch)):
                    for step in range(4):
                        changed = epoch == 1 and step == changed_step
                        ledger_note("loss", 1.0 / (step + 1) + (0.5 if changed else 0.0))

        return run

    a = record(tmp_path / "a.jsonl", program(None))
    (_first, second) = read_ledger(a).records
    assert [value[1] for value in second["notes"]["loss"]] == [1.0, 0.5, 1 / 3, 0.25]
    found = diff_runs(a, record(tmp_path / "b.jsonl", program(2)))
    assert not found.identical
    assert (found.key, found.entry) == (("train", 1), 1)
    assert found.reasons == (
        f"note 'loss' #3 in ('train', 1) differs (A {1 / 3!r}, B {1 / 3 + 0.5!r})",
    )
    assert found.as_dict()["reasons"] == list(found.reasons)


def test_a_stopped_ledger_is_reported_and_never_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def program() -> None:
        per_sample(samples=3)
        with pytest.warns(RuntimeWarning, match="stopped recording"):
            ledger_note("unreadable", lambda: None)  # cannot be fingerprinted: the ledger stops
        per_sample(samples=5)

    a = record(tmp_path / "a.jsonl", program)
    assert "stopped" in read_ledger(a).records[-1]
    found = diff_runs(a, record(tmp_path / "b.jsonl", program))
    assert not found.identical
    assert found.agreed == 3
    assert found.message.startswith("the recorded blocks agree: 3 blocks; not every block")
    assert len(found.unrecorded) == 2
    assert found.unrecorded[0].startswith(
        "A: the main process stopped recording (ReproducibleBlockTypeError"
    )
    assert found.as_dict()["unrecorded"] == list(found.unrecorded)
    assert main(["diff", str(a), str(tmp_path / "b.jsonl")]) == 1
    capsys.readouterr()
