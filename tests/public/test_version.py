"""The version lives in one place, pyproject.toml, and ``--version`` prints it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

import reproducible_block
from tests._spawn import run_python

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _declared_version() -> str:
    with PYPROJECT.open("rb") as file:
        project = tomllib.load(file)["project"]
    assert "version" not in project.get("dynamic", []), "the version is written in pyproject"
    declared: str = project["version"]
    return declared


def test_package_version_is_pyprojects() -> None:
    declared = _declared_version()
    assert version("reproducible_block") == declared
    assert reproducible_block.__version__ == declared


@pytest.mark.slow
def test_module_prints_the_version_and_exits(tmp_path: Path) -> None:
    # From another directory, so the installed package answers, not the current directory.
    result = run_python(module="reproducible_block", args=["--version"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"reproducible_block {_declared_version()}\n"
    assert result.stderr == ""
