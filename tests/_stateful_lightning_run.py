"""A Lightning ``Trainer.fit`` in its own process, for tests/features/test_stateful.py.

``python _stateful_lightning_run.py killed WORKDIR`` is sent SIGKILL at the first batch of epoch
2 (after epoch 1's checkpoint is written); ``... rest WORKDIR`` then runs, each from
``set_seed``: ``full`` (2 epochs whole), ``resume`` and ``resume-without`` (``fit(ckpt_path=...)``
from the killed run's checkpoint, with and without the RNG callback). Each run that ends writes
its draws (epoch, step, torch, NumPy, Python) to MODE.json.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from reproducible_block import RNGState, set_seed

warnings.filterwarnings("ignore")  # Lightning's advice on workers, loggers and the like


class RNGCallback(RNGState, pl.Callback):
    pass


class Killed(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)


class Noisy(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.draws: list[list[float]] = []

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        noise = torch.rand(1).item()
        self.draws.append([self.current_epoch, index, noise, np.random.rand(), random.random()])
        return (self.layer(batch[0]) * noise).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(mode: str, workdir: Path) -> None:
    set_seed(3)
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(dirpath=workdir / mode, save_last=True)
    ]
    if mode != "resume-without":
        callbacks.append(RNGCallback())
    if mode == "killed":
        callbacks.append(Killed())
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=workdir,
    )
    model = Noisy()
    loader = DataLoader(TensorDataset(torch.ones(6, 1)), batch_size=2)
    resume = mode.startswith("resume")
    ckpt_path = workdir / "killed" / "last.ckpt" if resume else None
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    (workdir / f"{mode}.json").write_text(json.dumps(model.draws))


if __name__ == "__main__":
    # After the killed run, one process (Lightning imports once) fits whole, then resumes twice.
    modes = ["killed"] if sys.argv[1] == "killed" else ["full", "resume", "resume-without"]
    for each in modes:
        main(each, Path(sys.argv[2]))
