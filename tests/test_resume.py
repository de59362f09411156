"""examples/resume.py: a run resumed in fresh processes from a checkpoint equals the whole run.

The example trains a tiny model with dropout on shuffled data, saves model, optimizer and
get_rng_state() at step SAVE_AT (mid-epoch), and resumes in freshly spawned processes after
torch.load(..., weights_only=True): alone, and as 2 ranks under DistributedDataParallel (gloo).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # On sys.path, so that the spawned processes import the example's functions too.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("resume")


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_resumed_run_repeats_the_uninterrupted_losses_exactly(
    example: ModuleType, world_size: int, tmp_path: Path
) -> None:
    results = example.run(world_size, str(tmp_path))
    for losses in results.values():
        assert len(losses["full"]) == example.STEPS
        assert losses["resumed"] == losses["full"][example.SAVE_AT :]
        # Without load_rng_state the same checkpoint gives other losses: dropout's stream.
        assert losses["control"] != losses["full"][example.SAVE_AT :]
    if world_size == 2:
        assert results[0]["full"] != results[1]["full"]  # a shard and a dropout stream per rank
