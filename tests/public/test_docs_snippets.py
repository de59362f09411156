"""The code in the documentation runs: each page's ```python blocks, in order, as one script.

A page's blocks share one namespace, as they share a reader's session, so a later block may use
what an earlier one defined. The script runs in a fresh interpreter, from a scratch directory,
as ``__main__``: what it changes (generators, the root, deterministic settings, files) cannot
leak into other tests, and ``if __name__ == "__main__":`` and the spawn start method behave as
in a user's script. The blocks check their claims with ``assert``.

Convention: a block that cannot run here (a shell command, a program that needs a GPU) is
written in another language (```sh, ```text), or is preceded, on the line just above its fence,
by an HTML comment that gives the reason: ``<!-- skip: needs two GPUs -->``. Use it sparingly.
Every page has at least one block that runs, except those in ``PAGES_WITHOUT_CODE``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._spawn import run_python

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(path.relative_to(ROOT).as_posix() for path in DOCS.rglob("*.md")), "README.md"]
# The API reference is generated from the docstrings (their examples run as doctests).
PAGES_WITHOUT_CODE = {
    "docs/reference/compat.md",
    "docs/reference/deterministic.md",
    "docs/reference/diagnostics.md",
    "docs/reference/index.md",
    "docs/reference/testing.md",
}

# Pages whose code needs packages outside the package's dependencies: their code runs where
# those are installed (make test installs requirements-integrations.txt into .venv).
PAGES_NEEDING = {
    "docs/guides/integrations.md": ("lightning", "accelerate", "transformers"),
    "docs/guides/checkpoints.md": ("torchdata",),
}

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w-]*)")
SKIP = re.compile(r"^<!-- skip: (?P<reason>\S.*?) -->$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    code: str
    skip_reason: str | None


def python_blocks(path: Path) -> list[Block]:
    """The page's ```python blocks; raises ValueError on a marker or fence it cannot place."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        skip = SKIP.match(line)
        if line.startswith("<!-- skip") and not skip:
            raise ValueError(f"{path}:{index + 1}: write <!-- skip: reason -->")
        if skip:
            after = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
            if after is None or after["language"] != "python" or after["indent"]:
                raise ValueError(
                    f"{path}:{index + 1}: a skip marker must sit just above a ```python fence"
                )
        fence = FENCE.match(line)
        if fence is None:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path}:{index + 1}: unclosed code fence")
        if fence["language"] == "python":
            if fence["indent"]:
                raise ValueError(
                    f"{path}:{index + 1}: an indented ```python block does not "
                    "run here; put it at the start of the line"
                )
            previous = SKIP.match(lines[index - 1]) if index > 0 else None
            blocks.append(
                Block(
                    index + 1,
                    "\n".join(lines[index + 1 : end]),
                    previous["reason"] if previous else None,
                )
            )
        index = end + 1
    return blocks


def page_script(page: str) -> str:
    """The runnable blocks of one page, in order, marked with where they come from."""
    parts = [
        f"# {page}, line {block.line}\n{block.code}\n"
        for block in python_blocks(ROOT / page)
        if block.skip_reason is None
    ]
    return "\n".join(parts)


def test_pages_without_code_exist() -> None:
    assert set(PAGES) >= PAGES_WITHOUT_CODE | set(PAGES_NEEDING)


@pytest.mark.parametrize("page", PAGES)
def test_each_page_has_runnable_code_unless_listed(page: str) -> None:
    runnable = [block for block in python_blocks(ROOT / page) if block.skip_reason is None]
    assert bool(runnable) == (page not in PAGES_WITHOUT_CODE)


def test_blocks_markers_and_fences_are_read_as_documented(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\na = 1\n```\n<!-- skip: needs two GPUs -->\n"
        "```python\nb = 2\n```\n```sh\nmake test\n```\n```python\nc = a\n```\n"
    )
    assert python_blocks(page) == [
        Block(2, "a = 1", None),
        Block(6, "b = 2", "needs two GPUs"),
        Block(12, "c = a", None),
    ]
    for broken in (
        "<!-- skip -->\n```python\nx\n```\n",
        "<!-- skip: why -->\ntext\n",
        "```python\nx = 1\n",
        "- item\n\n    ```python\n    x = 1\n    ```\n",
    ):
        page.write_text(broken)
        with pytest.raises(ValueError, match=str(page)):
            python_blocks(page)


@pytest.mark.slow
@pytest.mark.skipif(
    sys.flags.optimize > 0,
    reason="the page scripts run in an interpreter of "
    "their own, without -O, exactly as in the pass without -O",
)
@pytest.mark.parametrize("page", sorted(set(PAGES) - PAGES_WITHOUT_CODE))
def test_page_code_runs(page: str, tmp_path: Path) -> None:
    for module in PAGES_NEEDING.get(page, ()):
        pytest.importorskip(module)
    script = tmp_path / "page_script.py"
    script.write_text(page_script(page))
    # A repeated key is an error: the docs replay keys only where they say so (replay=True).
    # Python reads -W before the library is importable: the filter names RepetitionWarning by
    # its message and base class. A warning printed by a process the filter missed fails too.
    flags = ["-W", "error:Repeated key:UserWarning"]
    result = run_python(args=[script.name], flags=flags, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, f"{page}'s code failed:\n{result.stderr[-4000:]}"
    assert "RepetitionWarning" not in result.stderr, result.stderr[-4000:]
