"""Fixtures for tests and doctests: every test leaves process-global state as it found it."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from reproducible_block import SEED_ENVIRONMENT_VARIABLE, _ledger, _root, deterministic
from reproducible_block._sources import registry


@pytest.fixture(autouse=True)
def _restore_global_random_state() -> Iterator[None]:
    """Restore every generator, the root and its exported seed, registered generators and
    deterministic settings; every test runs without a block ledger recording (unless it starts
    one), and a ledger a test left recording is closed."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    root = _root.peek_root()
    registered = registry.registered()
    settings = deterministic._current_settings()
    exported_seed = os.environ.get(SEED_ENVIRONMENT_VARIABLE)
    ledger, _ledger.recording = _ledger.recording, None
    try:
        yield
    finally:
        if _ledger.recording is not None:
            _ledger.recording.close()
        _ledger.recording = ledger
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        _root.replace_root(root)
        registry.restore_registered(registered)
        deterministic._apply(settings)
        if exported_seed is None:
            os.environ.pop(SEED_ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[SEED_ENVIRONMENT_VARIABLE] = exported_seed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` when no CUDA device is available (never initialises CUDA)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
