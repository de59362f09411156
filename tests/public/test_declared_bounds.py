"""The lower bounds in pyproject.toml are the versions `make test-oldest` runs, or say why not."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]

# Declared lower bounds that no test run covers, and why; the README's "Supported versions"
# says the same. Move a bound out of here when a run covers it.
UNTESTED_LOWER_BOUNDS = {
    "torch": "the oldest CPU build this machine can install is 2.13.0 (for CPython 3.11)",
}


def _declared() -> dict[str, Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    return {requirement.name: requirement for requirement in map(Requirement, dependencies)}


def _oldest_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements-oldest.txt").read_text().splitlines():
        text = line.split("#")[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        if specifier.operator == "==":
            pins[requirement.name] = Version(specifier.version)
    return pins


def _lower_bound(requirement: Requirement) -> Version:
    (bound,) = [s.version for s in requirement.specifier if s.operator == ">="]
    return Version(bound)


def test_every_dependency_is_pinned_in_the_oldest_run_and_satisfies_its_declaration() -> None:
    declared, pins = _declared(), _oldest_pins()
    assert set(declared) <= set(pins)
    for name, requirement in declared.items():
        assert requirement.specifier.contains(pins[name]), (name, str(requirement), pins[name])


@pytest.mark.parametrize("name", sorted(_declared()))
def test_the_lower_bound_is_the_oldest_run_or_declared_untested(name: str) -> None:
    bound, pinned = _lower_bound(_declared()[name]), _oldest_pins()[name]
    tested = pinned.release[: len(bound.release)] == bound.release
    assert tested != (name in UNTESTED_LOWER_BOUNDS), (name, bound, pinned)


def test_the_readme_names_each_untested_bound() -> None:
    readme = (ROOT / "README.md").read_text()
    declared = _declared()
    for name in UNTESTED_LOWER_BOUNDS:
        assert f"{name} {_lower_bound(declared[name])}" in readme
