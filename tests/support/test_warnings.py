"""Warnings at the user's line, wherever the user's code lives."""

from __future__ import annotations

import pytest

from tests._spawn import run_python


@pytest.mark.slow
def test_a_warning_from_code_given_with_python_c_is_shown_not_raised() -> None:
    # python -c code has no file: its globals name a loader that raises when asked for the
    # line, and warnings.warn_explicit must not be handed them.
    result = run_python(
        """
import torch
from reproducible_block import ReproducibleBlock, set_seed

set_seed(0)
for _ in range(2):
    with ReproducibleBlock("again"):
        torch.rand(1)
print("continued")
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "continued"
    assert "RepetitionWarning" in result.stderr
    assert "<string>:7" in result.stderr
