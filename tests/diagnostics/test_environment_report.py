"""environment_report(), its table (str) and ``python -m reproducible_block``."""

from __future__ import annotations

import json
import os
import platform
import random
import re
import textwrap
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    deterministic_mode,
    register_generator,
    set_seed,
)
from reproducible_block.__main__ import main
from reproducible_block._sources.registry import registry
from reproducible_block.diagnostics import EnvironmentReport, environment_report
from tests._plain_source import PlainSource
from tests._spawn import run_python


def _raw_states() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_raw_states(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return (
        a[0] == b[0]
        and all(np.array_equal(x, y) for x, y in zip(a[1], b[1], strict=True))
        and torch.equal(a[2], b[2])
    )


def _run_module(*arguments: str, env: dict[str, str] | None = None) -> str:
    result = run_python(module="reproducible_block", args=arguments, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_versions_and_settings_match_what_the_libraries_say() -> None:
    report = environment_report()
    versions = report["versions"]
    assert versions["python"].startswith(platform.python_version())
    assert (versions["torch"], versions["numpy"]) == (torch.__version__, np.__version__)
    assert versions["cuda"] == torch.version.cuda
    assert versions["derivation"] == rb.DERIVATION_VERSION == 1
    assert report["devices"]["cuda_available"] == torch.cuda.is_available()
    assert report["devices"]["torch_cpu_threads"] == torch.get_num_threads()
    hash_seed = os.environ.get("PYTHONHASHSEED", "random")
    assert report["deterministic"]["str_hashes_fixed"] == (hash_seed != "random")
    assert report["deterministic"]["use_deterministic_algorithms"] is False
    with deterministic_mode(warn_only=True):
        inside = environment_report()
    assert inside["deterministic"]["use_deterministic_algorithms"] is True
    assert inside["deterministic"]["warn_only"] is True
    assert inside["deterministic"]["cudnn.deterministic"] is True
    assert inside["environment"]["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")


def test_environment_variables_are_reported_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("CUDA_LAUNCH_BLOCKING", raising=False)
    environment = environment_report()["environment"]
    assert environment["OMP_NUM_THREADS"] == "3"
    assert environment["CUDA_LAUNCH_BLOCKING"] is None
    assert environment["PYTHONHASHSEED"] == os.environ.get("PYTHONHASHSEED")


def test_root_seed_and_open_blocks() -> None:
    set_seed(1234)
    assert environment_report()["root_seed"] == 1234
    with ReproducibleBlock("inner"):
        assert environment_report()["open_blocks"] == 1
    assert environment_report()["open_blocks"] == 0


def test_report_changes_no_generator_state() -> None:
    set_seed(5)
    before = _raw_states()
    str(environment_report())
    assert _same_raw_states(before, _raw_states())
    assert not torch.cuda.is_initialized()


def test_fingerprints_follow_the_states() -> None:
    set_seed(5)
    first = environment_report()["generators"]
    assert list(first) == [source.name for source in registry.active()]
    assert environment_report()["generators"] == first
    np.random.rand()
    second = environment_report()["generators"]
    assert second["numpy"] != first["numpy"]
    assert {k: v for k, v in second.items() if k != "numpy"} == {
        k: v for k, v in first.items() if k != "numpy"
    }
    set_seed(5)
    assert environment_report()["generators"] == first


def test_registered_generators_get_fingerprints() -> None:
    register_generator(np.random.default_rng(1), name="report-numpy")
    register_generator(torch.Generator(), name="report-torch")
    generators = environment_report()["generators"]
    assert generators["report-numpy"] != generators["report-torch"]
    assert all(len(value) == 12 for value in generators.values())


def test_picklable_custom_state_is_fingerprinted_and_unpicklable_is_refused() -> None:
    register_generator(PlainSource(Fraction(1, 3)), name="fractions")
    assert len(environment_report()["generators"]["fractions"]) == 12
    register_generator(PlainSource(lambda: None), name="lambdas")
    with pytest.raises(ReproducibleBlockTypeError, match="cannot digest a generator state"):
        environment_report()


def test_table_shows_each_section_and_value() -> None:
    set_seed(99)
    report = environment_report()
    table = str(report)
    for title in (
        "Versions",
        "Devices",
        "Deterministic settings",
        "Environment variables",
        "Root",
        "Generator state fingerprints",
    ):
        assert f"\n{title}\n" in table
    assert torch.__version__ in table
    assert np.__version__ in table
    assert "root seed" in table
    assert " 99" in table
    for value in report["generators"].values():
        assert value in table
    assert str(EnvironmentReport(json.loads(json.dumps(report)))) == table


def test_main_prints_json_or_table(capsys: pytest.CaptureFixture[str]) -> None:
    set_seed(8)
    assert main(["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["root_seed"] == 8
    assert printed["generators"] == environment_report()["generators"]
    assert printed["versions"]["derivation"] == 1
    assert main([]) == 0
    table = capsys.readouterr().out
    assert "Generator state fingerprints" in table
    assert re.search(r"stream derivation +version 1\n", table)


_HASH_PROBE = "import sys; print(hash('reproducible_block'), file=sys.stderr)"
_REPORT = (
    f"{_HASH_PROBE}; import json, reproducible_block as rb; "
    "print(json.dumps(rb.diagnostics.environment_report()))"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "hash_seed", "fixed"),
    [
        ([], "123", True),
        ([], "0", True),
        ([], "", False),
        (["-E"], "0", False),
        (["-E"], "123", False),
    ],
    ids=["123", "0", "empty", "-E and 0", "-E and 123"],
)
def test_a_fresh_process_reports_whether_its_str_hashes_are_fixed(
    flags: list[str], hash_seed: str, fixed: bool
) -> None:
    # The claim is checked against Python itself: a second process started the same way hashes
    # a str alike exactly when hashes are fixed (two random hashes agree with odds of 2**-64).
    # -E makes Python ignore PYTHONHASHSEED, though os.environ still holds it.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    runs = [run_python(program, flags=flags, env=env) for program in (_REPORT, _HASH_PROBE)]
    assert runs[0].returncode == 0, runs[0].stderr
    report = json.loads(runs[0].stdout)
    assert report["environment"]["PYTHONHASHSEED"] == hash_seed
    assert report["deterministic"]["str_hashes_fixed"] is fixed
    assert (runs[0].stderr.split()[0] == runs[1].stderr.split()[0]) is fixed
    assert report["root_seed"] is None
    assert report["devices"]["cuda_initialized"] is False
    assert report["versions"]["torch"] == torch.__version__


@pytest.mark.slow
def test_module_prints_the_table_in_a_fresh_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    table = _run_module(env=env)
    assert table.startswith("reproducible_block environment report")
    assert "PYTHONHASHSEED" in table
    assert "str hashes vary per process" in table
    assert "not set (call set_seed)" in table
    assert re.search(r"\n  Python str hashes fixed +no\n", table)


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_report_does_not_initialise_cuda() -> None:
    code = textwrap.dedent(
        """
        import torch
        from reproducible_block import set_seed
        from reproducible_block.diagnostics import environment_report
        set_seed(0)
        report = environment_report()
        print(torch.cuda.is_initialized(), report["devices"]["cuda_device_count"] > 0,
              "cuda" in report["generators"])
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]
