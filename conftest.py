"""Fixtures for tests and doctests: every test leaves process-global state as it found it.

Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE``: "ci" (the default, 500 examples), "dev"
(50, for ``make quick``) and "fuzz" (5000, ``make fuzz``). Tests that set ``max_examples``
themselves keep their own count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import HealthCheck, settings

from reproducible_block.diagnostics import _ledger
from reproducible_block.testing import isolated_random_state
from tests._draws import GENERATOR_KINDS, GeneratorKind

_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=500, **_PROFILE)
settings.register_profile("dev", max_examples=50, **_PROFILE)
settings.register_profile("fuzz", max_examples=5000, **_PROFILE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Not collected: the typing file is read by mypy (pyproject.toml), never run; the Lightning run
# is a script started by tests/features/test_stateful.py (--doctest-modules would import both).
collect_ignore = [
    "tests/typing",
    "tests/_stateful_lightning_run.py",  # imports Lightning, which .venv-oldest lacks
]


@pytest.fixture(autouse=True)
def _restore_global_random_state() -> Iterator[None]:
    """Restore every generator, the root and its exported seed, registered generators,
    deterministic settings and the block wait limit (reproducible_block.testing); every test runs
    without a block ledger recording (unless it starts one), and a ledger a test left recording
    is closed."""
    ledger = _ledger.set_recording(None)
    try:
        with isolated_random_state():
            yield
    finally:
        left = _ledger.set_recording(ledger)
        if left is not None:
            left.close()


@pytest.fixture(params=sorted(GENERATOR_KINDS))
def generator_kind(request: pytest.FixtureRequest) -> GeneratorKind:
    """Each kind of generator a block manages: Python ``random``, NumPy's global generator,
    torch's CPU generator, and a registered ``torch.Generator`` and ``np.random.Generator``
    (registered inside the test; the autouse fixture unregisters them)."""
    return GENERATOR_KINDS[request.param]()


@pytest.fixture
def single_rank_group(tmp_path: Path) -> Iterator[None]:
    """A real gloo process group of one rank in this process, destroyed after the test (the
    multi-rank behaviour is tested in spawned processes: tests/support/test_distributed.py)."""
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path}/rendezvous",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=60),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` when no CUDA device is available (never initialises CUDA)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
