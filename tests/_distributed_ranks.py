"""The ranks of tests/support/test_distributed.py: each in its own process, writing rank-N.json.

``two_ranks`` (2 ranks): DataLoader workers under a real process group, and ``set_seed`` as a
collective. ``four_ranks`` (4 ranks): blocks with ``per_rank=<process group>``.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from reproducible_block import (
    SEED_ENVIRONMENT_VARIABLE,
    ReproducibleBlock,
    ReproducibleBlockError,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block._streams import root as _root
from reproducible_block.diagnostics import record_blocks
from tests._worker_datasets import AugmentedSamples, SeedsInWorker, unbatch

SEED = 1234
WORKERS = 3
COLLECTIVE_TIMEOUT_S = 180  # below spawn_ranks' 240 s, above the DataLoaders' 120 s
STUCK_AFTER_S = 150


@contextmanager
def process_group(rank: int, world_size: int, port: int) -> Iterator[None]:
    os.environ.pop(SEED_ENVIRONMENT_VARIABLE, None)  # not the pytest process's, if it has one
    # A rank may wait for a peer that is starved on a loaded machine (the DataLoader runs fork
    # workers between collectives): a generous timeout, and this rank's stacks if it is stuck.
    faulthandler.dump_traceback_later(STUCK_AFTER_S, exit=False, file=sys.stderr)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        yield
        dist.barrier()  # rank 0 holds the store: nobody leaves before everyone is done
    finally:
        faulthandler.cancel_dump_traceback_later()
        gc.collect()
        dist.destroy_process_group()


def write(workdir: str, rank: int, results: dict[str, Any]) -> None:
    (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps(results))


# Two ranks: DataLoader workers.


def load_in_workers(
    context: str = "fork", init: Callable[[int], None] | None = seed_worker, per_rank: bool = False
) -> dict[str, Any]:
    """set_seed(SEED), then every sample through WORKERS workers: each worker's first draws
    outside blocks (its global streams), its torch seed, and every sample's augmentation."""
    set_seed(SEED)  # alike on every rank, as identical model initialisation needs
    loader = DataLoader(
        AugmentedSamples(per_rank=per_rank),
        batch_size=1,
        num_workers=WORKERS,
        multiprocessing_context=context,
        worker_init_fn=init,
        timeout=120,
    )
    samples = unbatch(loader)
    first: dict[int, Any] = {}
    for sample in samples:
        first.setdefault(sample["worker"], sample)
    return {
        "outside": [first[worker]["outside"].tolist() for worker in range(WORKERS)],
        "torch_seeds": [first[worker]["torch_seed"] for worker in range(WORKERS)],
        "augmentation": {sample["index"]: sample["augmentation"].tolist() for sample in samples},
    }


def worker_runs() -> dict[str, Any]:
    return {
        "fork": load_in_workers(),
        "fork_again": load_in_workers(),
        "without_seed_worker": load_in_workers(init=None),
        "per_rank": load_in_workers(per_rank=True),
        "spawn": load_in_workers(context="spawn"),
    }


# Two ranks: set_seed under a process group.


class Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def warned(call: Callable[[], int]) -> tuple[int, list[list[Any]]]:
    """What ``call`` returns, and the warnings it raised as [message, file name]."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    return value, [[str(warning.message), warning.filename] for warning in caught]


def refusal(call: Callable[[], object]) -> dict[str, Any]:
    """Run a call that some rank refuses: its message here, and whether this rank's generators
    and root stayed as they were."""
    before, root = torch.get_rng_state(), _root.peek_seed()
    try:
        call()
        message = None
    except ReproducibleBlockError as error:
        message = str(error)
    return {
        "error": message,
        "untouched": torch.equal(torch.get_rng_state(), before) and _root.peek_seed() == root,
    }


def seeding_checks(rank: int) -> dict[str, Any]:
    handler = Messages()
    logger = logging.getLogger("reproducible_block")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    results: dict[str, Any] = {}
    results["drawn"] = set_seed()  # no seed, no environment: rank 0 draws for every rank
    results["drawn_draws"] = torch.rand(3).tolist()
    results["drawn_again"] = set_seed()
    os.environ[SEED_ENVIRONMENT_VARIABLE] = str(700 + rank)  # a launcher, per rank (odd!)
    results["environment"] = set_seed()
    results["same"], results["same_warnings"] = warned(lambda: set_seed(5))
    results["different"], results["different_warnings"] = warned(lambda: set_seed(5 + rank))
    results["bad_seed"] = refusal(lambda: set_seed(-1 if rank == 1 else 5))
    with ReproducibleBlock("open on rank 0", enabled=rank == 0):
        results["in_block"] = refusal(lambda: set_seed(5))
    set_seed(5)
    loader = DataLoader(
        SeedsInWorker(), batch_size=None, num_workers=1, multiprocessing_context="fork", timeout=60
    )
    results["in_worker"] = [sample.tolist() for sample in loader]
    logger.removeHandler(handler)
    results["logs"] = handler.messages
    results["file"] = __file__
    return results


def two_ranks(rank: int, world_size: int, port: int, workdir: str) -> None:
    with process_group(rank, world_size, port):
        results = {"workers": worker_runs(), "seeding": seeding_checks(rank)}
    write(workdir, rank, results)


# Four ranks: tensor-parallel groups {0, 1}, {2, 3}; data-parallel groups {0, 2}, {1, 3}.


def mask(block: ReproducibleBlock) -> list[float]:
    with block:
        return torch.nn.functional.dropout(torch.ones(32), 0.5).tolist()


def four_ranks(rank: int, world_size: int, port: int, workdir: str) -> None:
    with process_group(rank, world_size, port):
        # Every rank creates every group, in the same order (dist.new_group is a collective).
        tensor_parallel = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        data_parallel = [dist.new_group([0, 2]), dist.new_group([1, 3])]
        mine_tp, mine_dp = tensor_parallel[rank // 2], data_parallel[rank % 2]
        set_seed(SEED)
        results: dict[str, Any] = {
            "shared": mask(ReproducibleBlock("dropout")),
            "global": mask(ReproducibleBlock("dropout", per_rank=True)),
            "data_parallel": mask(ReproducibleBlock("dropout", per_rank=mine_dp)),
            "tensor_parallel": mask(ReproducibleBlock("dropout", per_rank=mine_tp)),
            "order": torch.randperm(
                8, generator=torch_generator("order", per_rank=mine_dp)
            ).tolist(),
        }
        # The other tensor-parallel group: dist.new_group gave this rank a placeholder.
        results["not_member"] = refusal(
            lambda: mask(ReproducibleBlock("dropout", per_rank=tensor_parallel[1 - rank // 2]))
        )["error"]
        ledger = Path(workdir) / "ledger.jsonl"
        with record_blocks(ledger) as recording:
            mask(ReproducibleBlock("dropout", per_rank=mine_dp))
        assert recording.path is not None
        records = [json.loads(line) for line in recording.path.read_text().splitlines()]
        results["ledger_per_rank"] = [
            record.get("per_rank") for record in records if record.get("key") == "dropout"
        ]
    write(workdir, rank, results)
