"""Lightning, accelerate and transformers: the recipes of the integrations guide, for real.

The packages come from ``requirements-integrations.txt`` (``make test`` installs them into
``.venv``); where they are not installed (``make test-oldest``) these tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from reproducible_block import (
    ReproducibleBlock,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block._streams import other_seeders as _other_seeders
from tests._spawn import run_python
from tests._worker_datasets import (
    LENGTH,
    AugmentedSamples,
    EpochShuffle,
    NoisyRegression,
    unbatch,
)

L = pytest.importorskip("lightning")
accelerate = pytest.importorskip("accelerate")
transformers = pytest.importorskip("transformers")

pytestmark = [
    # Two workers on a two-core machine, and a loader without a validation set, on purpose.
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*`training_step` returned"),
    # Lightning, accelerate and transformers loops never replay a key by mistake.
    pytest.mark.filterwarnings("error::reproducible_block.RepetitionWarning"),
]


@pytest.fixture(autouse=True)
def _seeders_leave_no_trace(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Lightning's seed_everything exports its seed; each test starts as a process that has not
    warned about another seeder."""
    monkeypatch.setattr(_other_seeders, "_warned", {})
    saved = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def first_block_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with ReproducibleBlock("after-seeding"):
            torch.rand(1)
    return [str(record.message) for record in records]


@pytest.mark.parametrize("seeder", ["lightning", "transformers", "accelerate"])
def test_another_seeder_after_set_seed_is_noticed_and_set_seed_after_it_fixes_it(
    seeder: str,
) -> None:
    seed = {
        "lightning": lambda value: L.seed_everything(value, verbose=False),
        "transformers": transformers.set_seed,
        "accelerate": accelerate.utils.set_seed,
    }[seeder]
    set_seed(42)
    seed(43)
    (message,) = first_block_warnings()
    assert "seeded with 43 after reproducible_block.set_seed(42)" in message
    assert "reproducible_block.set_seed(43)" in message
    seed(43)
    set_seed(43)  # the recipe: set_seed right after the other seeder
    assert first_block_warnings() == []


class Regression(L.LightningModule):  # type: ignore[misc]
    """Blocks in the model: its initialisation, and each training step (dropout)."""

    def __init__(self, draws_outside_blocks: bool = False) -> None:
        super().__init__()
        with ReproducibleBlock("model-init"):
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
        self.draws_outside_blocks = draws_outside_blocks

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        with ReproducibleBlock(("train-step", self.global_step)):
            inputs, targets = batch
            return nn.functional.mse_loss(self.net(inputs), targets)

    def on_train_epoch_end(self) -> None:
        if self.draws_outside_blocks:  # a validation or logging step that draws
            torch.rand(100)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    num_workers: int = 0, context: str | None = None, draws_outside_blocks: bool = False
) -> torch.Tensor:
    """Lightning's seeding, then set_seed; a two-epoch fit; the trained weights."""
    L.seed_everything(43, verbose=False)
    set_seed(43)
    workers: dict[str, Any] = {}
    if num_workers:
        workers = {
            "multiprocessing_context": context,
            "worker_init_fn": seed_worker,
            "persistent_workers": True,
            "timeout": 120,
        }
    loader = DataLoader(
        NoisyRegression(),
        batch_size=4,
        sampler=EpochShuffle(LENGTH),
        num_workers=num_workers,
        **workers,
    )
    model = Regression(draws_outside_blocks)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        trainer.fit(model, loader)
    assert not [record for record in records if "reproducible_block" in str(record.message)]
    return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])


@pytest.mark.slow
def test_a_lightning_fit_repeats_whatever_the_workers_and_draws_outside_blocks() -> None:
    reference = fit()
    assert torch.equal(fit(), reference)
    assert torch.equal(fit(draws_outside_blocks=True), reference)
    assert torch.equal(fit(num_workers=2, context="fork"), reference)


@pytest.mark.slow
def test_a_lightning_fit_with_spawn_workers_matches() -> None:
    assert torch.equal(fit(num_workers=2, context="spawn"), fit())


@pytest.mark.slow
def test_an_accelerate_prepared_loader_keeps_the_order_and_the_augmentations() -> None:
    from accelerate.state import AcceleratorState

    set_seed(0)

    def loader(**workers: Any) -> DataLoader[Any]:
        return DataLoader(
            AugmentedSamples(),
            batch_size=4,
            shuffle=True,
            generator=torch_generator(("data", 0)),
            **workers,
        )

    try:
        prepared = accelerate.Accelerator(cpu=True).prepare(
            loader(num_workers=2, multiprocessing_context="fork", worker_init_fn=seed_worker)
        )
        got = unbatch(prepared)
    finally:
        AcceleratorState._reset_state(True)
    expected = unbatch(loader())
    assert [sample["index"] for sample in got] == [sample["index"] for sample in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine["augmentation"], theirs["augmentation"])


@pytest.mark.slow
def test_a_trainer_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """transformers' ``Trainer`` restores the global generators from its checkpoint, not the
    generators you registered nor the root: with the RNG callback of the integrations guide, a
    run SIGKILLed after checkpoint-6 and resumed in a new process ends with the weights of the
    uninterrupted run; without it, the registered generator starts afresh and they differ."""
    script = str(Path(__file__).parents[1] / "_trainer_resume_run.py")
    killed = run_python(args=[script, str(tmp_path), "full", "killed"], timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "interrupted" / "checkpoint-6" / "rng_streams.pt").is_file()
    run_python(args=[script, str(tmp_path), "resume", "resume-without"], timeout=240, check=True)
    weights = {
        mode: json.loads((tmp_path / f"{mode}.json").read_text())
        for mode in ("full", "resume", "resume-without")
    }
    assert weights["resume"] == weights["full"]
    assert weights["resume-without"] != weights["full"]  # so the test can fail
