"""The guide's `python` blocks run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "when-runs-do-not-match.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", path.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_the_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(GUIDE)
    assert len(blocks) == 5
    namespace: dict[str, object] = {"__name__": "guide"}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{GUIDE}:block{number}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert ("both runs agree for 15 blocks; they first differ at ('sample', 13), entry 1: torch "
            "stream consumed differently (A drew 16 numbers, B 17)") in printed
