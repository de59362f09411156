"""configure_deterministic_mode, deterministic_mode and set_seed(deterministic=True).

The root conftest restores torch's deterministic flags, both cuDNN flags and
CUBLAS_WORKSPACE_CONFIG after every test; monkeypatch sets the variable's starting value.
"""

from __future__ import annotations

import os
import random
import textwrap
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import torch

from reproducible_block import (
    BlockUsageError,
    ReproducibleBlock,
    ReproducibleBlockTypeError,
    configure_deterministic_mode,
    deterministic_mode,
    set_seed,
)
from reproducible_block._support import deterministic
from tests._spawn import run_python

VARIABLE = "CUBLAS_WORKSPACE_CONFIG"


def _flags() -> tuple[bool, bool, bool, bool, str | None]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get(VARIABLE),
    )


def _put_without_deterministic_kernel() -> None:
    """``put_`` with accumulate=False has no deterministic kernel, on CPU too."""
    torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))


@pytest.fixture
def relaxed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from torch's defaults, the variable unset and no warning given yet."""
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.setattr(deterministic, "_warned", {})
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("warn_only", [False, True])
def test_configure_sets_every_setting(warn_only: bool) -> None:
    configure_deterministic_mode(warn_only=warn_only)
    assert _flags() == (True, warn_only, True, False, ":4096:8")


@pytest.mark.usefixtures("relaxed")
def test_operation_without_deterministic_kernel_raises() -> None:
    configure_deterministic_mode()
    with pytest.raises(RuntimeError, match="deterministic"):
        _put_without_deterministic_kernel()


@pytest.mark.usefixtures("relaxed")
def test_warn_only_warns_and_runs() -> None:
    configure_deterministic_mode(warn_only=True)
    with pytest.warns(UserWarning, match="deterministic"):
        _put_without_deterministic_kernel()


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("value", [":4096:8", ":16:8"])
def test_deterministic_workspace_value_is_kept(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(VARIABLE, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configure_deterministic_mode()
    assert os.environ[VARIABLE] == value


@pytest.mark.usefixtures("relaxed")
def test_other_workspace_value_is_replaced_with_one_warning_at_the_callers_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, ":4096:2")
    with pytest.warns(UserWarning, match=r"':4096:2' does not make cuBLAS deterministic") as seen:
        configure_deterministic_mode()
    assert os.environ[VARIABLE] == ":4096:8"
    assert [w.filename for w in seen] == [__file__]

    monkeypatch.setenv(VARIABLE, ":4096:2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configure_deterministic_mode()  # once per process
    assert os.environ[VARIABLE] == ":4096:8"


@pytest.mark.usefixtures("relaxed")
def test_warning_through_set_seed_points_at_the_callers_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "bad")
    with pytest.warns(UserWarning, match="does not make cuBLAS deterministic") as seen:
        set_seed(3, deterministic=True)
    assert [w.filename for w in seen] == [__file__]


@pytest.mark.usefixtures("relaxed")
def test_warning_through_an_exit_stack_points_at_the_callers_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VARIABLE, "bad")
    with (
        pytest.warns(UserWarning, match="does not make cuBLAS deterministic") as seen,
        ExitStack() as stack,
    ):
        stack.enter_context(deterministic_mode())  # entered here
    assert [w.filename for w in seen] == [__file__]
    assert "# entered here" in Path(__file__).read_text().splitlines()[seen[0].lineno - 1]


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("bad", [1, "yes", None])
def test_warn_only_must_be_bool(bad: object) -> None:
    before = _flags()
    with pytest.raises(ReproducibleBlockTypeError, match="warn_only must be True or False"):
        configure_deterministic_mode(warn_only=bad)  # type: ignore[arg-type]
    with pytest.raises(ReproducibleBlockTypeError, match="warn_only must be True or False"):
        deterministic_mode(warn_only=bad)  # type: ignore[arg-type]
    assert _flags() == before


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("outside", [None, ":16:8", "bad"])
def test_context_manager_restores_every_setting(
    monkeypatch: pytest.MonkeyPatch, outside: str | None
) -> None:
    if outside is not None:
        monkeypatch.setenv(VARIABLE, outside)
    torch.use_deterministic_algorithms(False, warn_only=True)
    before = _flags()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with deterministic_mode():
            inside = _flags()
    assert inside == (True, False, True, False, ":16:8" if outside == ":16:8" else ":4096:8")
    assert _flags() == before
    assert (VARIABLE in os.environ) == (outside is not None)


@pytest.mark.usefixtures("relaxed")
def _nest_then_fail(seen: list[tuple[bool, bool]]) -> None:
    section = deterministic_mode(warn_only=True)
    with section:
        with section, deterministic_mode():
            seen.append(_flags()[:2])
        seen.append(_flags()[:2])
        raise KeyError("boom")


def test_context_manager_restores_on_exception_and_nests() -> None:
    before = _flags()
    seen: list[tuple[bool, bool]] = []
    with pytest.raises(KeyError):
        _nest_then_fail(seen)
    assert seen == [(True, False), (True, True)]
    assert repr(deterministic_mode(warn_only=True)) == "deterministic_mode(warn_only=True)"
    assert _flags() == before


@pytest.mark.usefixtures("relaxed")
def test_set_seed_deterministic_seeds_and_configures() -> None:
    assert set_seed(11, deterministic=True) == 11
    drawn = (random.random(), np.random.rand(), torch.rand(2))
    assert _flags() == (True, False, True, False, ":4096:8")
    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    assert drawn[:2] == (random.random(), np.random.rand())
    assert torch.equal(drawn[2], torch.rand(2))


@pytest.mark.usefixtures("relaxed")
def test_set_seed_without_deterministic_leaves_the_settings() -> None:
    before = _flags()
    set_seed(11)
    assert _flags() == before


@pytest.mark.usefixtures("relaxed")
@pytest.mark.parametrize("bad", [1, "yes", None])
def test_set_seed_refuses_a_non_bool_deterministic_and_changes_nothing(bad: object) -> None:
    before_flags = _flags()
    before_state = torch.get_rng_state()
    with pytest.raises(ReproducibleBlockTypeError, match="deterministic must be True or False"):
        set_seed(5, deterministic=bad)  # type: ignore[arg-type]
    assert _flags() == before_flags
    assert torch.equal(torch.get_rng_state(), before_state)


@pytest.mark.usefixtures("relaxed")
def test_set_seed_refused_inside_a_block_changes_no_setting() -> None:
    set_seed(0)
    before = _flags()
    with ReproducibleBlock("b"), pytest.raises(BlockUsageError):
        set_seed(1, deterministic=True)
    assert _flags() == before


@pytest.mark.slow
def test_fresh_process_gets_the_settings_and_the_variable() -> None:
    """In a process of its own: the variable is absent at start, as in a plain launch."""
    code = textwrap.dedent(
        """
        import os, torch
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        from reproducible_block import set_seed
        set_seed(0, deterministic=True)
        print(torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, os.environ["CUBLAS_WORKSPACE_CONFIG"],
              torch.cuda.is_initialized())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "False", ":4096:8", "False"]


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_late_workspace_variable_warns_once_in_a_process_with_cuda() -> None:
    code = textwrap.dedent(
        """
        import warnings, torch
        torch.zeros(1, device="cuda")
        from reproducible_block import configure_deterministic_mode
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            configure_deterministic_mode()
            configure_deterministic_mode()
        print(len(seen), "too late" in str(seen[0].message), seen[0].lineno)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True", "7"]
