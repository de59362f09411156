"""Recorded runs with per-sample blocks in DataLoader workers (test_ledger_workers.py).

``python _ledger_loader_run.py FOLDER RUN...``, each RUN ``NAME:WORKERS:METHOD:PERSISTENT:EXTRA:
EPOCHS:HOW``: record (``record_blocks``, or with ``HOW=environment`` the ledger armed by
``REPRODUCIBLE_BLOCK_LEDGER``) in ``FOLDER/NAME/ledger.jsonl`` ``EPOCHS`` epochs of a 16-sample
loader with ``WORKERS`` workers started by ``METHOD`` (fork or spawn), persistent or not (1 or
0); sample ``EXTRA`` draws one number more (-1: none). With ``HOW=off1``, worker 1 turns its
recording off (a worker that runs unrecorded). One interpreter records them all: starting one
costs seconds on a loaded machine.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from reproducible_block import ReproducibleBlock, seed_worker, set_seed, torch_generator
from reproducible_block.diagnostics import _ledger, ledger_note, record_blocks


class Samples(Dataset[torch.Tensor]):
    def __init__(self, extra: int) -> None:
        self.extra = extra

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        with ReproducibleBlock(("sample", index)):
            value = torch.rand(3 + (index == self.extra))
            ledger_note("value", value.sum())
        return value[:3]


def worker_off_1(worker_id: int) -> None:
    seed_worker(worker_id)
    if worker_id == 1:
        _ledger.set_recording(None)


def record(folder: str, run: str) -> None:
    name, workers_text, method, persistent, extra, epochs, how = run.split(":")
    workers = int(workers_text)
    set_seed(0)
    options: dict[str, Any] = {}
    if workers:
        options = {
            "multiprocessing_context": method,
            "persistent_workers": persistent == "1",
            "worker_init_fn": worker_off_1 if how == "off1" else seed_worker,
        }
    path = f"{folder}/{name}/ledger.jsonl"
    with nullcontext() if how == "environment" else record_blocks(path):
        loader = DataLoader(
            Samples(int(extra)),
            batch_size=4,
            num_workers=workers,
            generator=torch_generator("data"),
            **options,
        )
        for epoch in range(int(epochs)):
            with ReproducibleBlock(("train", epoch)):
                for batch in loader:
                    ledger_note("batch", batch.sum())
        del loader


if __name__ == "__main__":
    for run in sys.argv[2:]:
        record(sys.argv[1], run)
