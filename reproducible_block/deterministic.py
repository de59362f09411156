"""Deterministic kernels: the settings the usual recipe lists, in one call or for one section.

Seeds fix where random streams start; they do not make kernels deterministic. Four settings do,
on one machine with one software stack:

* ``torch.use_deterministic_algorithms(True)``: torch picks deterministic kernels, and raises
  (``warn_only=True``: warns) at an operation that has none;
* ``torch.backends.cudnn.deterministic = True``: cuDNN convolutions use deterministic algorithms;
* ``torch.backends.cudnn.benchmark = False``: cuDNN does not time candidate algorithms and pick the
  fastest, a choice that can differ from run to run;
* ``CUBLAS_WORKSPACE_CONFIG=":4096:8"`` (or ``":16:8"``): cuBLAS uses fixed workspaces, so its
  matrix products are deterministic on CUDA 10.2 and later. cuBLAS reads the variable when
  CUDA starts: set it before any CUDA work, best in the environment that launches Python.

``PYTHONHASHSEED`` cannot be changed for a running process; see the deterministic mode guide.
(The settings live in the plumbing layer, ``_support.deterministic``, since ``set_seed`` applies
them too.)
"""

from reproducible_block._support.deterministic import (
    CUBLAS_WORKSPACE_VARIABLE,
    DETERMINISTIC_CUBLAS_CONFIGS,
    DeterministicSettings,
    configure_deterministic_mode,
    deterministic_mode,
)

__all__ = [
    "CUBLAS_WORKSPACE_VARIABLE",
    "DETERMINISTIC_CUBLAS_CONFIGS",
    "DeterministicSettings",
    "configure_deterministic_mode",
    "deterministic_mode",
]
