"""The sampler and the dataset wrappers in real DataLoaders: every worker setting gives the same
samples, order and draws; resumes mid-epoch (torchdata's StatefulDataLoader, a SIGKILLed run);
Lightning and accelerate keep the sampler."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from reproducible_block import (
    ReproducibleDataset,
    ReproducibleIterableDataset,
    ReproducibleSampler,
    seed_worker,
    set_seed,
)
from reproducible_block.testing import isolated_random_state
from tests import _sampler_resume_run
from tests._sampler_datasets import Augmented, Stream
from tests._spawn import run_python

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]

REPOSITORY = Path(__file__).resolve().parents[2]
Record = tuple[int, int, tuple[float, ...]]


def epochs_through(loader: Any, sampler: ReproducibleSampler, epochs: int) -> list[Record]:
    records = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for indices, draws in loader:
            records += [
                (epoch, index, tuple(row))
                for index, row in zip(indices.tolist(), draws.tolist(), strict=True)
            ]
    return records


def loaded(num_workers: int, persistent: bool, context: str | None, epochs: int) -> list[Record]:
    set_seed(21)
    sampler = ReproducibleSampler(Augmented())
    loader = DataLoader(
        ReproducibleDataset(Augmented()),
        sampler=sampler,
        batch_size=3,
        num_workers=num_workers,
        persistent_workers=persistent,
        multiprocessing_context=context,
        worker_init_fn=seed_worker,
    )
    return epochs_through(loader, sampler, epochs)


@pytest.fixture(scope="module")
def baseline() -> list[Record]:
    # Module-scoped: outside each test's own isolation, so it restores what set_seed changes.
    with isolated_random_state():
        return loaded(0, False, None, 2)


@pytest.mark.parametrize(
    ("num_workers", "persistent", "context"),
    [(1, False, "fork"), (2, True, "fork"), (4, False, "fork"), (2, True, "spawn")],
)
def test_every_worker_setting_gives_the_same_samples_order_and_draws(
    baseline: list[Record], num_workers: int, persistent: bool, context: str
) -> None:
    assert loaded(num_workers, persistent, context, 2) == baseline


def test_each_epoch_has_a_new_order_and_new_draws(baseline: list[Record]) -> None:
    first = [record for record in baseline if record[0] == 0]
    second = [record for record in baseline if record[0] == 1]
    assert [index for _, index, _ in first] != [index for _, index, _ in second]
    draws = {index: row for _, index, row in first}
    assert all(draws[index] != row for _, index, row in second)


def stream_epochs(num_workers: int, persistent: bool) -> list[list[tuple[int, float]]]:
    set_seed(8)
    stream = ReproducibleIterableDataset(Stream())
    loader = DataLoader(
        stream, batch_size=None, num_workers=num_workers, persistent_workers=persistent
    )
    epochs = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        epochs.append(sorted((int(worker), float(value)) for worker, value in loader))
    return epochs


def test_an_iterable_dataset_streams_alike_with_and_without_persistent_workers() -> None:
    fresh, persistent = stream_epochs(2, False), stream_epochs(2, True)
    assert fresh == persistent
    assert fresh[0] != fresh[1]
    assert {worker for worker, _ in fresh[0]} == {0, 1}


@pytest.mark.parametrize("persistent", [False, True])
def test_a_stateful_dataloader_resumes_mid_epoch(persistent: bool) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def build() -> tuple[Any, ReproducibleSampler]:
        sampler = ReproducibleSampler(Augmented())
        loader = stateful.StatefulDataLoader(
            ReproducibleDataset(Augmented()),
            sampler=sampler,
            batch_size=3,
            num_workers=2,
            persistent_workers=persistent,
        )
        return loader, sampler

    set_seed(21)
    loader, sampler = build()
    full = epochs_through(loader, sampler, 2)
    loader, sampler = build()
    records: list[Record] = []
    sampler.set_epoch(0)
    records += [r for b in loader for r in _rows(0, b)]
    sampler.set_epoch(1)
    batches = iter(loader)
    for _ in range(2):  # two batches of epoch 1, while the workers prefetch further
        records += _rows(1, next(batches))
    state = loader.state_dict()
    del batches, loader
    resumed, sampler = build()
    resumed.load_state_dict(state)
    sampler.set_epoch(1)  # what a training loop does at the top of the epoch
    records += [r for b in resumed for r in _rows(1, b)]
    assert records == full


def _rows(epoch: int, batch: Any) -> list[Record]:
    indices, draws = batch
    return [
        (epoch, index, tuple(row))
        for index, row in zip(indices.tolist(), draws.tolist(), strict=True)
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_run_killed_mid_epoch_with_persistent_workers_resumes_bit_for_bit(
    tmp_path: Path,
) -> None:
    script = str(REPOSITORY / "tests" / "_sampler_resume_run.py")
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    _sampler_resume_run.main(whole, None, num_workers=0)  # the same batches, in this process
    # 14 samples in batches of 4: 4 batches an epoch; batch 6 is mid-epoch 1.
    preempted = run_python(args=[script, str(killed), "6"], env=env)
    assert preempted.returncode == -9, preempted.stderr[-2000:]
    assert len((killed / "batches.txt").read_text().splitlines()) < 14 * 3
    run_python(args=[script, str(killed)], env=env, check=True)
    assert (killed / "batches.txt").read_text() == (whole / "batches.txt").read_text()


def test_lightning_keeps_the_sampler_and_its_epochs(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning.pytorch")

    class Recorder(lightning.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 1)
            self.seen: list[tuple[int, int]] = []

        def training_step(self, batch: Any, batch_index: int) -> torch.Tensor:
            indices, draws = batch
            self.seen += [(self.current_epoch, int(index)) for index in indices]
            return self.layer(draws.float()).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    set_seed(3)
    sampler = ReproducibleSampler(Augmented())
    loader = DataLoader(ReproducibleDataset(Augmented()), sampler=sampler, batch_size=4)
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = Recorder()
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.train_dataloader.sampler is sampler
    expected = [(epoch, index) for epoch in range(2) for index in sampler.order(epoch)]
    assert model.seen == expected


def test_accelerate_keeps_the_sampler_and_the_order() -> None:
    accelerate = pytest.importorskip("accelerate")
    set_seed(3)
    sampler = ReproducibleSampler(Augmented())
    loader = DataLoader(ReproducibleDataset(Augmented()), sampler=sampler, batch_size=4)
    prepared = accelerate.Accelerator(cpu=True).prepare(loader)
    assert prepared.batch_sampler.sampler is sampler
    seen = [[int(i) for batch in prepared for i in batch[0]] for _ in range(2)]
    assert seen == [sampler.order(0), sampler.order(1)]  # accelerate calls set_epoch
