"""The environment report: what a run's reproducibility depends on, as a dict or a table.

Reading it never initialises CUDA and never changes a generator's state: generator states are
read with each source's ``get_state()`` and shown as short fingerprints.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from reproducible_block._blocks import stack as _stack
from reproducible_block._sources.registry import registry
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import DERIVATION_VERSION
from reproducible_block._support.deterministic import DeterministicSettings
from reproducible_block._support.fingerprint import fingerprint
from reproducible_block._support.version import __version__

__all__ = ["REPORTED_VARIABLES", "EnvironmentReport", "environment_report"]

#: Environment variables that change random streams or kernel results.
REPORTED_VARIABLES = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def _cudnn_version() -> int | None:
    if torch.backends.cudnn.is_available():  # type: ignore[no-untyped-call]  # pragma: no cover
        version: int | None = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        return version
    return None


def _str_hashes_fixed() -> bool:
    """Whether Python's str hashes are the same in every run (``PYTHONHASHSEED`` set, not random).

    ``sys.flags.hash_randomization`` is 0 only for ``PYTHONHASHSEED=0``; any other fixed value
    still reads 1, so then the variable decides (it must be valid, or Python would not have
    started), unless Python ignored the environment (``-E``, ``-I``). Python treats an empty
    value as unset. A change to ``os.environ`` after Python started is not seen by Python, and not
    told apart here.
    """
    if not sys.flags.hash_randomization:
        return True
    if sys.flags.ignore_environment:
        return False  # PYTHONHASHSEED, even if set, did not reach Python
    return os.environ.get("PYTHONHASHSEED", "") not in ("", "random")


def environment_report() -> EnvironmentReport:
    """The versions, settings and generator states a run's results depend on, as plain data.

    Sections: ``versions`` (Python, reproducible_block, its stream ``derivation`` version, torch,
    NumPy, the CUDA and cuDNN torch was built with), ``devices``, ``deterministic`` (torch's
    flags, and whether Python randomises ``str`` hashes), ``environment`` (the variables in
    :data:`REPORTED_VARIABLES`, None when unset), ``root_seed`` (None before
    :func:`set_seed`), ``open_blocks`` and ``generators``: a short fingerprint of each managed
    generator's current state. Every value is JSON-serialisable, ready for an experiment
    tracker. It initialises nothing, draws nothing.

    >>> import json
    >>> from reproducible_block import set_seed
    >>> _ = set_seed(7)
    >>> report = environment_report()
    >>> report["root_seed"] == 7 and "torch" in report["generators"]
    True
    >>> json.loads(json.dumps(report)) == report
    True
    """
    cuda_initialized = bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]
    with _stack.held("environment_report()"):
        states = {source.name: fingerprint(source.get_state()) for source in registry.active()}
        blocks = _stack.open_count()
    root = _root.peek_seed()
    settings = DeterministicSettings.current()
    return EnvironmentReport(
        {
            "versions": {
                "python": f"{platform.python_version()} ({platform.python_implementation()})",
                "platform": platform.platform(),
                "reproducible_block": __version__,
                "derivation": DERIVATION_VERSION,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "cuda": torch.version.cuda,
                "cudnn": _cudnn_version(),
            },
            "devices": {
                "cuda_available": torch.cuda.is_available(),
                "cuda_initialized": cuda_initialized,
                "cuda_device_count": torch.cuda.device_count(),
                "torch_cpu_threads": torch.get_num_threads(),
            },
            "deterministic": {
                "use_deterministic_algorithms": settings.algorithms,
                "warn_only": settings.warn_only,
                "cudnn.deterministic": settings.cudnn_deterministic,
                "cudnn.benchmark": settings.cudnn_benchmark,
                "str_hashes_fixed": _str_hashes_fixed(),
            },
            "environment": {name: os.environ.get(name) for name in REPORTED_VARIABLES},
            "root_seed": root,
            "open_blocks": blocks,
            "generators": states,
        }
    )


_SETTING_LABELS = {
    "use_deterministic_algorithms": "torch.use_deterministic_algorithms",
    "warn_only": "  warn_only",
    "cudnn.deterministic": "torch.backends.cudnn.deterministic",
    "cudnn.benchmark": "torch.backends.cudnn.benchmark",
    "str_hashes_fixed": "Python str hashes fixed",
}
_NOTES = {
    "PYTHONHASHSEED": "str hashes vary per process (set it where Python is launched)",
    "CUBLAS_WORKSPACE_CONFIG": "cuBLAS on CUDA may be nondeterministic",
}


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _rows(report: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    versions, devices = report["versions"], report["devices"]
    environment = report["environment"]
    cuda_built = versions["cuda"] or "- (torch built without CUDA)"
    return [
        (
            "Versions",
            [
                ("Python", f"{versions['python']} on {versions['platform']}"),
                ("reproducible_block", versions["reproducible_block"]),
                ("stream derivation", f"version {versions['derivation']}"),
                ("torch", versions["torch"]),
                ("NumPy", versions["numpy"]),
                ("CUDA (torch built with)", cuda_built),
                ("cuDNN", _text(versions["cudnn"])),
            ],
        ),
        (
            "Devices",
            [
                ("CUDA available", _text(devices["cuda_available"])),
                ("CUDA initialised", _text(devices["cuda_initialized"])),
                ("CUDA devices", _text(devices["cuda_device_count"])),
                ("torch CPU threads", _text(devices["torch_cpu_threads"])),
            ],
        ),
        (
            "Deterministic settings",
            [
                (_SETTING_LABELS.get(name, name), _text(value))
                for name, value in report["deterministic"].items()
            ],
        ),
        (
            "Environment variables",
            [
                (
                    name,
                    _text(value)
                    if value is not None or name not in _NOTES
                    else f"unset: {_NOTES[name]}",
                )
                for name, value in environment.items()
            ],
        ),
        (
            "Root",
            [
                (
                    "root seed",
                    "not set (call set_seed)"
                    if report["root_seed"] is None
                    else str(report["root_seed"]),
                ),
                ("open blocks", _text(report["open_blocks"])),
            ],
        ),
        ("Generator state fingerprints", list(report["generators"].items())),
    ]


class EnvironmentReport(dict[str, Any]):
    """What :func:`environment_report` returns: plain data (a ``dict``, JSON-serialisable) whose
    ``str()`` is the readable table ``python -m reproducible_block`` prints.

    >>> text = str(environment_report())
    >>> "Deterministic settings" in text and "PYTHONHASHSEED" in text
    True
    """

    def __str__(self) -> str:
        sections = _rows(self)
        width = max(len(label) for _, rows in sections for label, _ in rows)
        lines = ["reproducible_block environment report"]
        for title, rows in sections:
            lines += ["", title]
            lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        return "\n".join(lines)
