"""`make dist-check`: build the sdist and the wheel, check what they carry, install the wheel.

Run with the dev environment's Python (it has `build` and the torch build to preinstall):

1. `python -m build` makes the sdist, then the wheel from the unpacked sdist, so the sdist is
   proven to hold everything a source build needs.
2. The sdist holds only the package, pyproject.toml, README.md and LICENSE (plus PKG-INFO and
   the .gitignore that hatchling always adds); the wheel holds py.typed and the LICENSE.
3. A fresh venv gets the dev environment's torch (the same local CPU build, so pip never looks
   for another), then the wheel with its other dependencies; from outside the source tree,
   `python -m reproducible_block --version` must print pyproject's version.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from importlib.metadata import version
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SDIST_ALLOWED = {
    "reproducible_block",
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "PKG-INFO",
    ".gitignore",
}
COPYRIGHT = "Copyright (c) 2026 reproducible_block developers"


def fail(message: str) -> None:
    raise SystemExit(f"dist-check: {message}")


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        fail(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def check_sdist(path: Path, project_version: str) -> None:
    prefix = f"reproducible_block-{project_version}/"
    with tarfile.open(path) as archive:
        names = archive.getnames()
        top = {name.removeprefix(prefix).split("/")[0] for name in names if name != prefix[:-1]}
        if top - SDIST_ALLOWED:
            fail(f"the sdist carries more than a build needs: {sorted(top - SDIST_ALLOWED)}")
        for needed in ("LICENSE", "README.md", "pyproject.toml", "reproducible_block/py.typed"):
            if prefix + needed not in names:
                fail(f"the sdist lacks {needed}")
        license_file = archive.extractfile(prefix + "LICENSE")
        if license_file is None or COPYRIGHT not in license_file.read().decode():
            fail("the sdist's LICENSE lacks the copyright line")


def check_wheel(path: Path, project_version: str) -> None:
    dist_info = f"reproducible_block-{project_version}.dist-info"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for needed in (
            "reproducible_block/__init__.py",
            "reproducible_block/py.typed",
            f"{dist_info}/licenses/LICENSE",
        ):
            if needed not in names:
                fail(f"the wheel lacks {needed}")
        if COPYRIGHT not in archive.read(f"{dist_info}/licenses/LICENSE").decode():
            fail("the wheel's LICENSE lacks the copyright line")
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        if "License-Expression: MIT" not in metadata:
            fail("the wheel's metadata does not say License-Expression: MIT")
        stray = sorted(
            name for name in names if not name.startswith(("reproducible_block/", f"{dist_info}/"))
        )
        if stray:
            fail(f"the wheel carries files outside the package: {stray}")


def main() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project_version = tomllib.load(file)["project"]["version"]
    with tempfile.TemporaryDirectory(prefix="dist-check-") as scratch:
        work = Path(scratch)
        run(sys.executable, "-m", "build", "--outdir", work / "dist", ".")
        (sdist,) = (work / "dist").glob("*.tar.gz")
        (wheel,) = (work / "dist").glob("*.whl")
        check_sdist(sdist, project_version)
        check_wheel(wheel, project_version)

        venv.create(work / "venv", with_pip=True)
        python = work / "venv" / "bin" / "python"
        run(python, "-m", "pip", "install", "-q", f"torch=={version('torch')}")
        run(python, "-m", "pip", "install", "-q", wheel)
        printed = run(python, "-m", "reproducible_block", "--version", cwd=work)
        if printed != f"reproducible_block {project_version}\n":
            fail(f"--version printed {printed!r}, pyproject says {project_version}")
        print(
            f"dist-check: {sdist.name} and {wheel.name} carry LICENSE and py.typed; "
            f"the wheel installs into a fresh venv and reports {project_version}"
        )


if __name__ == "__main__":
    main()
