"""Hostile inputs at every public entry point: a clear exception, and nothing changed.

Each case must raise an exception of the library's hierarchy (so also the matching builtin) with a
message, and leave every generator, the root and the registry exactly as they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import (
    Reproducible_Block,
    ReproducibleBlock,
    WorkerInit,
    get_rng_state,
    load_rng_state,
    register_generator,
    seed_worker,
    set_seed,
    torch_generator,
    unregister_generator,
)
from reproducible_block.deterministic import configure_deterministic_mode, deterministic_mode
from reproducible_block.diagnostics import assert_deterministic, track_consumption

HUGE = 10**100
LONG = "x" * 1_000_000
NAN = float("nan")


def _enter(block: Any) -> None:
    with block:
        pass  # pragma: no cover - never reached


def _truncated_state() -> list[dict[str, Any]]:
    states = get_rng_state()
    del states[0]["sources"]["numpy"]
    return states


def _other_version() -> list[dict[str, Any]]:
    states = get_rng_state()
    states[0]["format_version"] = 999
    return states


def _corrupted_torch() -> list[dict[str, Any]]:
    states = get_rng_state()
    torch_state = states[0]["sources"]["torch"]["state"]
    torch_state["state"] = torch_state["state"][:100]
    return states


def _other_device_count() -> list[dict[str, Any]]:
    states = get_rng_state()
    states[0]["sources"]["cuda"] = {
        "kind": "cuda",
        "state": {"device_count": 8, "queued_seed": 1},
    }
    return states


CASES: dict[str, Callable[[], object]] = {
    "set_seed(True)": lambda: set_seed(True),
    "set_seed(nan)": lambda: set_seed(NAN),  # type: ignore[arg-type]
    "set_seed(-1)": lambda: set_seed(-1),
    "set_seed(10**100)": lambda: set_seed(HUGE),
    "set_seed('42')": lambda: set_seed("42"),  # type: ignore[arg-type]
    "set_seed(deterministic='yes')": lambda: set_seed(1, deterministic="yes"),  # type: ignore[arg-type]
    "ReproducibleBlock(10**100)": lambda: ReproducibleBlock(HUGE),
    "ReproducibleBlock(-5)": lambda: ReproducibleBlock(-5),
    "ReproducibleBlock(nan)": lambda: ReproducibleBlock(NAN),  # type: ignore[arg-type]
    "ReproducibleBlock(1e6-char str)": lambda: ReproducibleBlock(LONG),
    "ReproducibleBlock(nested tuple)": lambda: ReproducibleBlock(("a", ("b", 1))),  # type: ignore[arg-type]
    "ReproducibleBlock(deep tuple)": lambda: ReproducibleBlock(tuple(range(10_000))),
    "ReproducibleBlock(())": lambda: ReproducibleBlock(()),
    "ReproducibleBlock(None)": lambda: ReproducibleBlock(None),  # type: ignore[arg-type]
    "ReproducibleBlock(b'bytes')": lambda: ReproducibleBlock(b"k"),  # type: ignore[arg-type]
    "ReproducibleBlock(sources=42)": lambda: ReproducibleBlock(1, sources=42),  # type: ignore[arg-type]
    "ReproducibleBlock(sources=())": lambda: ReproducibleBlock(1, sources=()),
    "ReproducibleBlock(sources=[1])": lambda: ReproducibleBlock(1, sources=[1]),  # type: ignore[list-item]
    "enter with unknown source": lambda: _enter(ReproducibleBlock(1, sources=("jax",))),
    "ReproducibleBlock(enabled=1)": lambda: ReproducibleBlock(1, enabled=1),  # type: ignore[arg-type]
    "ReproducibleBlock(per_rank='y')": lambda: ReproducibleBlock(1, per_rank="y"),  # type: ignore[arg-type]
    "decorate a non-callable": lambda: ReproducibleBlock(1)(3),  # type: ignore[type-var]
    "torch_generator(device=3)": lambda: torch_generator(1, device=3),  # type: ignore[arg-type]
    "torch_generator('nonsense')": lambda: torch_generator(1, device="nonsense"),
    "register_generator(list)": lambda: register_generator([], name="x"),  # type: ignore[arg-type]
    "register_generator(name='')": lambda: register_generator(torch.Generator(), name=""),
    "register_generator(name=1e6 chars)": lambda: register_generator(torch.Generator(), name=LONG),
    "register_generator(name='numpy')": lambda: register_generator(torch.Generator(), name="numpy"),
    "unregister_generator('nope')": lambda: unregister_generator("nope"),
    "Reproducible_Block(block_seed=-1)": lambda: Reproducible_Block(block_seed=-1),
    "Reproducible_Block(block_seed=nan)": lambda: Reproducible_Block(block_seed=NAN),  # type: ignore[arg-type]
    "Reproducible_Block()": lambda: Reproducible_Block(),
    "load_rng_state('garbage')": lambda: load_rng_state("garbage"),  # type: ignore[arg-type]
    "load_rng_state([])": lambda: load_rng_state([]),
    "load_rng_state([{}])": lambda: load_rng_state([{}]),
    "load_rng_state(truncated sources)": lambda: load_rng_state(_truncated_state()),
    "load_rng_state(format 999)": lambda: load_rng_state(_other_version()),
    "load_rng_state(corrupted torch)": lambda: load_rng_state(_corrupted_torch()),
    "load_rng_state(8 CUDA devices)": lambda: load_rng_state(_other_device_count()),
    "load_rng_state(policy='maybe')": lambda: load_rng_state(  # type: ignore[arg-type]
        get_rng_state(), on_world_size_change="maybe"
    ),
    "seed_worker('0')": lambda: seed_worker("0"),  # type: ignore[arg-type]
    "seed_worker(-1)": lambda: seed_worker(-1),
    "WorkerInit()(nan)": lambda: WorkerInit()(NAN),  # type: ignore[arg-type]
    "configure_deterministic_mode(warn_only=1)": lambda: configure_deterministic_mode(
        warn_only=1  # type: ignore[arg-type]
    ),
    "deterministic_mode(warn_only='no')": lambda: deterministic_mode(warn_only="no"),  # type: ignore[arg-type]
    "assert_deterministic(not callable)": lambda: assert_deterministic(42),  # type: ignore[arg-type]
    "track_consumption(sources=['jax'])": lambda: _enter(track_consumption(sources=["jax"])),
}


def _everything() -> tuple[Any, ...]:
    return (
        random.getstate(),
        np.random.get_state()[1].tobytes(),
        np.random.get_state()[2:],
        torch.get_rng_state().tolist(),
        rb._streams.root.peek_seed(),
        rb.registered_generators(),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_is_refused_clearly_and_changes_nothing(case: str) -> None:
    set_seed(11)
    np.random.randn(1)  # a cached Gaussian must survive too
    before = _everything()
    with pytest.raises(rb.ReproducibleBlockError) as info:
        CASES[case]()
    assert isinstance(info.value, (TypeError, ValueError, RuntimeError))
    assert len(str(info.value)) > 20
    assert _everything() == before
