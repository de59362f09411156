"""One rank of tests/features/test_distributed_rng_state.py, in its own process: rank-N.json."""

from __future__ import annotations

import gc
import io
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from reproducible_block import (
    ReproducibleBlock,
    ReproducibleBlockValueError,
    get_rng_state,
    load_rng_state,
    register_generator,
    set_block_wait_timeout,
    set_seed,
    unregister_generator,
)
from reproducible_block._streams.root import peek_seed

from ._plain_source import Unplugged

SEED = 5


def through_file(value: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def refusal(load: Any) -> dict[str, Any]:
    """Try a load that should be refused: its message, and whether torch's stream moved."""
    before = torch.get_rng_state()
    try:
        load()
    except ReproducibleBlockValueError as error:
        return {"error": str(error), "untouched": torch.equal(torch.get_rng_state(), before)}
    return {"error": None, "untouched": torch.equal(torch.get_rng_state(), before)}


def checks(rank: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    set_seed(SEED)
    with ReproducibleBlock("init"):
        results["init"] = torch.rand(3).tolist()
    with ReproducibleBlock("dropout", per_rank=True):
        results["per_rank"] = torch.rand(3).tolist()

    torch.rand(rank + 1)  # the ranks' global streams part ways
    states = through_file(get_rng_state())
    results["entries"] = [(entry["rank"], entry["world_size"]) for entry in states]
    results["expected"] = torch.rand(3).tolist()  # what this rank draws next
    torch.rand(5)
    load_rng_state(states)
    results["after_load"] = torch.rand(3).tolist()

    saved_by_one = [{**states[0], "world_size": 1}]  # as if saved by a single process
    results["mismatch"] = refusal(lambda: load_rng_state(saved_by_one))
    load_rng_state(saved_by_one, on_world_size_change="derive")
    results["derived"] = torch.rand(3).tolist()
    load_rng_state(saved_by_one, on_world_size_change="derive")
    results["derived_again"] = torch.rand(3).tolist()

    if rank == 1:
        register_generator(torch.Generator(), name="only-on-rank-1")
    results["peer"] = refusal(lambda: load_rng_state(states))

    # A user source that refuses its state only when it is installed, on rank 1 only.
    if rank == 1:
        unregister_generator("only-on-rank-1")
    unplugged = Unplugged()
    register_generator(unplugged, name="unplugged")
    set_seed(SEED)
    saved = through_file(get_rng_state())
    torch.rand(rank + 2)
    unplugged.plugged = rank != 1
    results["install"] = install_refusal(lambda: load_rng_state(saved))
    results["seed"] = install_refusal(lambda: set_seed(SEED + 1))
    unregister_generator("unplugged")
    saved = through_file(get_rng_state())

    # Rank 1 cannot have the lock (another thread holds a block open): it times out.
    hold = threading.Thread(
        target=hold_a_block, args=(opened := threading.Event(), done := threading.Event())
    )
    if rank == 1:
        hold.start()
        assert opened.wait(timeout=60)
        set_block_wait_timeout(0.2)
    try:
        results["busy_seed"] = install_refusal(lambda: set_seed(SEED + 2))
        results["busy_load"] = install_refusal(lambda: load_rng_state(saved))
        results["busy_get"] = install_refusal(get_rng_state)
    finally:
        done.set()
        if rank == 1:
            hold.join(timeout=60)
    return results


def hold_a_block(opened: threading.Event, done: threading.Event) -> None:
    with ReproducibleBlock("held-by-another-thread"):
        opened.set()
        done.wait(timeout=60)


def install_refusal(call: Any) -> dict[str, Any]:
    """A call refused while installing: its error, and whether torch's stream and the root
    stayed as they were."""
    before, root = torch.get_rng_state(), peek_seed()
    error = None
    try:
        call()
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"
    return {
        "error": error,
        "untouched": torch.equal(torch.get_rng_state(), before),
        "root": peek_seed() == root,
    }


def rank_main(rank: int, world_size: int, port: int, workdir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),
    )
    try:
        results = checks(rank)
        dist.barrier()  # rank 0 holds the store: nobody leaves before everyone is done
    finally:
        gc.collect()
        dist.destroy_process_group()
    (Path(workdir) / f"rank-{rank}.json").write_text(json.dumps(results))
