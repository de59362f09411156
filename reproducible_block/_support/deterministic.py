"""Deterministic settings: torch's flags and cuBLAS's workspace (public as ``deterministic``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from reproducible_block._support.checks import check_bool
from reproducible_block._support.errors import BlockUsageError
from reproducible_block._support.warnings import warn_at_user_line

__all__ = [
    "CUBLAS_WORKSPACE_VARIABLE",
    "DETERMINISTIC_CUBLAS_CONFIGS",
    "DeterministicSettings",
    "configure_deterministic_mode",
    "deterministic_mode",
]

#: The environment variable cuBLAS reads for its workspace configuration.
CUBLAS_WORKSPACE_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
#: The values torch accepts as deterministic; the first is set when the variable is not.
DETERMINISTIC_CUBLAS_CONFIGS = (":4096:8", ":16:8")

_warned: dict[str, object] = {}


@dataclass(frozen=True)
class DeterministicSettings:
    """Every setting deterministic mode changes, as one value to save and put back.

    >>> before = DeterministicSettings.current()
    >>> configure_deterministic_mode()
    >>> before.apply()
    >>> DeterministicSettings.current() == before
    True
    """

    algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    cublas_workspace: str | None

    @classmethod
    def current(cls) -> DeterministicSettings:
        """The settings in effect now."""
        return cls(
            algorithms=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
            cublas_workspace=os.environ.get(CUBLAS_WORKSPACE_VARIABLE),
        )

    def apply(self) -> None:
        """Put these settings in effect (the environment variable included)."""
        torch.use_deterministic_algorithms(self.algorithms, warn_only=self.warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.cublas_workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE_VARIABLE, None)
        else:
            os.environ[CUBLAS_WORKSPACE_VARIABLE] = self.cublas_workspace


def _warn_once(key: str, message: str) -> None:
    """Warn once per process (per ``key``), at the user's line."""
    warn_at_user_line(message, once=key, seen=_warned)


def _check_warn_only(warn_only: object) -> bool:
    return check_bool(
        warn_only,
        "warn_only",
        "False raises at an operation without a deterministic kernel, True only warns.",
    )


def _deterministic_settings(warn_only: bool) -> DeterministicSettings:
    """The settings to apply, warning about a workspace value that cannot take effect."""
    workspace = os.environ.get(CUBLAS_WORKSPACE_VARIABLE)
    if workspace not in DETERMINISTIC_CUBLAS_CONFIGS:
        if workspace:
            _warn_once(
                "cublas-replaced",
                f"{CUBLAS_WORKSPACE_VARIABLE}={workspace!r} does not make cuBLAS deterministic; "
                f"reproducible_block set it to {DETERMINISTIC_CUBLAS_CONFIGS[0]!r}. Set it to "
                f"{DETERMINISTIC_CUBLAS_CONFIGS[0]!r} or {DETERMINISTIC_CUBLAS_CONFIGS[1]!r} "
                "where you launch Python to silence this warning.",
            )
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            _warn_once(
                "cublas-late",
                f"CUDA is already initialised, so setting {CUBLAS_WORKSPACE_VARIABLE} now may "
                "come too late for cuBLAS, and its matrix products may stay nondeterministic. "
                "Call configure_deterministic_mode() before any CUDA work, or launch Python "
                f"with {CUBLAS_WORKSPACE_VARIABLE}={DETERMINISTIC_CUBLAS_CONFIGS[0]} in the "
                "environment.",
            )
        workspace = DETERMINISTIC_CUBLAS_CONFIGS[0]
    return DeterministicSettings(
        algorithms=True,
        warn_only=warn_only,
        cudnn_deterministic=True,
        cudnn_benchmark=False,
        cublas_workspace=workspace,
    )


def configure_deterministic_mode(*, warn_only: bool = False) -> None:
    """Make torch use deterministic kernels for the rest of the process.

    Turns on ``torch.use_deterministic_algorithms(True, warn_only=warn_only)``, sets
    ``torch.backends.cudnn.deterministic = True`` and ``torch.backends.cudnn.benchmark = False``,
    and sets ``CUBLAS_WORKSPACE_CONFIG=":4096:8"`` unless it already holds a deterministic value
    (``":4096:8"`` or ``":16:8"``). With ``warn_only=False`` an operation that has no
    deterministic kernel raises ``RuntimeError``; with ``True`` it warns and runs.

    Call it at the start of the program, before any CUDA work: cuBLAS reads the variable when
    CUDA starts, so if CUDA is already initialised this warns (once) that it may come too late.
    Deterministic kernels can be slower (see the deterministic mode guide); use
    :class:`deterministic_mode` to turn them on for one section only.
    ``set_seed(seed, deterministic=True)`` calls this too.

    >>> import torch
    >>> from reproducible_block import configure_deterministic_mode
    >>> configure_deterministic_mode()
    >>> torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    True
    """
    _deterministic_settings(_check_warn_only(warn_only)).apply()


class deterministic_mode:  # lower case, like torch.no_grad: it reads as a setting
    """Deterministic kernels inside a ``with`` section; every previous setting comes back on exit.

    Applies what :func:`configure_deterministic_mode` applies; on exit (normal or exception)
    restores the previous values of ``use_deterministic_algorithms`` and its ``warn_only``, of
    both cuDNN flags and of ``CUBLAS_WORKSPACE_CONFIG`` (removed again if it was not set). The
    settings are process-wide, not per thread: do not change them from two threads at once. A
    copy (or a pickle) is a new, closed section with the same ``warn_only``.

    >>> import torch
    >>> from reproducible_block import deterministic_mode
    >>> before = torch.are_deterministic_algorithms_enabled()
    >>> with deterministic_mode():
    ...     inside = torch.are_deterministic_algorithms_enabled()
    >>> inside and torch.are_deterministic_algorithms_enabled() == before
    True
    """

    def __init__(self, *, warn_only: bool = False) -> None:
        self._warn_only = _check_warn_only(warn_only)
        self._saved: list[DeterministicSettings] = []

    def __repr__(self) -> str:
        return f"deterministic_mode(warn_only={self._warn_only!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy is a new section with the same option, never the settings saved by this one.
        return (_deterministic_mode, (self._warn_only,))

    def __enter__(self) -> deterministic_mode:
        previous = DeterministicSettings.current()
        _deterministic_settings(self._warn_only).apply()
        self._saved.append(previous)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._saved:
            raise BlockUsageError(
                f"{self!r}.__exit__() was called, but the section is not open. Use it as "
                "`with deterministic_mode():` (which enters and exits it)."
            )
        self._saved.pop().apply()


def _deterministic_mode(warn_only: bool) -> deterministic_mode:
    return deterministic_mode(warn_only=warn_only)
