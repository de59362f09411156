"""CUDA: blocks isolate every device's stream. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from reproducible_block import ReproducibleBlock, set_seed
from tests._spawn import run_python

pytestmark = pytest.mark.cuda


def test_set_seed_matches_manual_seed_on_cuda() -> None:
    torch.manual_seed(4)
    expected = torch.rand(3, device="cuda")
    set_seed(4)
    assert torch.equal(torch.rand(3, device="cuda"), expected)


def test_cuda_block_repeats_and_restores_caller() -> None:
    set_seed(0)
    torch.rand(1, device="cuda")
    expected_after = torch.rand(3, device="cuda")
    set_seed(0)
    torch.rand(1, device="cuda")
    with ReproducibleBlock("gpu"):
        first = torch.rand(3, device="cuda")
    with ReproducibleBlock("gpu"):
        assert torch.equal(torch.rand(3, device="cuda"), first)
    assert torch.equal(torch.rand(3, device="cuda"), expected_after)


@pytest.mark.slow
def test_block_entered_before_cuda_init_applies_when_cuda_starts() -> None:
    # Run in a fresh process so that CUDA is not initialised before the block.
    code = (
        "import torch, reproducible_block as rb\n"
        "rb.set_seed(0)\n"
        "with rb.ReproducibleBlock('late'):\n"
        "    a = torch.rand(3, device='cuda')\n"
        "with rb.ReproducibleBlock('late'):\n"
        "    b = torch.rand(3, device='cuda')\n"
        "rb.set_seed(0); c = torch.rand(3, device='cuda')\n"
        "torch.manual_seed(0); d = torch.rand(3, device='cuda')\n"
        "print(torch.equal(a, b), torch.equal(c, d), torch.equal(a, c))\n"
    )
    out = run_python(code)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr
