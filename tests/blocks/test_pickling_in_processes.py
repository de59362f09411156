"""Decorated code in other processes, for real: spawn and forkserver DataLoader workers,
``multiprocessing.Pool``, ``torch.multiprocessing.spawn`` and a model saved whole.

Each process pickles the decorated function or class by reference and imports it from
``tests._decorated``; blocks there derive from the parent's root (carried by ``seed_worker``, or
read from the environment that ``set_seed`` exported), so they draw what the parent draws.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as torch_mp
from torch.utils.data import DataLoader

from reproducible_block import ReproducibleBlock, seed_worker, set_seed
from tests._decorated import Net, NoiseTable, jitter_collate, spawned_draws, step_noise
from tests._spawn import run_python

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
]


def batches(num_workers: int, context: str | None = None) -> list[torch.Tensor]:
    workers = {}
    if num_workers:
        workers = {
            "multiprocessing_context": context,
            "worker_init_fn": seed_worker,
            "timeout": 120,
        }
    loader = DataLoader(
        NoiseTable(), batch_size=3, collate_fn=jitter_collate, num_workers=num_workers, **workers
    )
    return list(loader)


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_decorated_dataset_class_and_collate_fn_in_workers(context: str) -> None:
    set_seed(0)
    expected = batches(0)
    got = batches(2, context)
    assert len(got) == len(expected) == 3
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine, theirs)


def test_a_spawn_pool_maps_a_decorated_function() -> None:
    set_seed(0)
    expected = [step_noise(step) for step in range(4)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map_async(step_noise, range(4)).get(timeout=120)
    for mine, theirs in zip(got, expected, strict=True):
        assert torch.equal(mine, theirs)


def test_torch_multiprocessing_spawns_a_decorated_function(tmp_path: Path) -> None:
    set_seed(0)
    context = torch_mp.start_processes(
        spawned_draws, args=(str(tmp_path),), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            assert time.monotonic() < deadline, "the spawned processes did not finish"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    for rank in range(2):
        with ReproducibleBlock(("spawned", rank)):
            expected = torch.rand(3)
        assert torch.equal(torch.load(tmp_path / f"rank-{rank}.pt"), expected)


def test_a_decorated_model_saved_whole_loads_in_another_process(tmp_path: Path) -> None:
    set_seed(0)
    model = Net()
    torch.save(model, tmp_path / "model.pt")
    code = (
        "import sys, torch\n"
        "from tests._decorated import Net\n"
        f"model = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)\n"
        "assert type(model) is Net, type(model)\n"
        "torch.save(model.layer.weight, sys.argv[1])\n"
    )
    run_python(code, args=[str(tmp_path / "weight.pt")], cwd=ROOT, check=True)
    assert torch.equal(torch.load(tmp_path / "weight.pt"), model.layer.weight)
