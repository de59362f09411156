"""CUDA streams in checkpoints: every device, and the seed queued before CUDA initialises.

Each check runs in a fresh interpreter, so that whether CUDA is initialised is known.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from tests._spawn import run_python

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SAVE = """
import io, torch
from reproducible_block import get_rng_state, load_rng_state, set_seed
set_seed(3)
"""


def run(code: str) -> None:
    completed = run_python(textwrap.dedent(SAVE + code))
    assert completed.returncode == 0, completed.stderr


def test_cuda_states_of_every_device_resume_exactly() -> None:
    run("""
    torch.rand(3, device="cuda")
    buffer = io.BytesIO()
    torch.save(get_rng_state(), buffer)
    buffer.seek(0)
    states = torch.load(buffer, weights_only=True)
    count = torch.cuda.device_count()
    assert len(states[0]["sources"]["cuda"]["state"]["states"]) == count
    expected = [torch.rand(3, device=f"cuda:{i}") for i in range(count)]
    torch.cuda.manual_seed_all(99)
    load_rng_state(states)
    assert all(torch.equal(torch.rand(3, device=f"cuda:{i}"), expected[i]) for i in range(count))
    """)


def test_saving_never_initialises_cuda_and_the_queued_seed_resumes() -> None:
    run("""
    (entry,) = get_rng_state()
    assert not torch.cuda.is_initialized()
    assert entry["sources"]["cuda"]["state"]["queued_seed"] == 3
    first = torch.rand(3, device="cuda")  # what a fresh program draws after set_seed(3)
    load_rng_state([entry])               # CUDA is initialised now: the seed applies at once
    assert torch.equal(torch.rand(3, device="cuda"), first)
    """)


def test_device_states_load_into_a_process_where_cuda_is_not_initialised(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    run(f"""
    torch.rand(5, device="cuda")
    states = get_rng_state()
    torch.save({{"rng": states, "expected": torch.rand(3, device="cuda").cpu()}}, {str(path)!r})
    """)
    run(f"""
    saved = torch.load({str(path)!r}, weights_only=True)
    assert not torch.cuda.is_initialized()
    load_rng_state(saved["rng"])
    assert torch.equal(torch.rand(3, device="cuda").cpu(), saved["expected"])
    """)
