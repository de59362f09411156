"""torch.func: blocks inside grad, vmap and functional_call, with keys never seen before.

Under functorch's transforms, reading a tensor's bytes raises "Cannot access data pointer of
Tensor that doesn't have storage"; deriving a block's states (and, once per process, checking
torch's state layout) reads bytes. ``fresh_process`` makes the layout check run again, as it does
for the first block of a process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._fast import torch_cpu
from reproducible_block.diagnostics import record_blocks


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: torch's state layout is not checked yet."""
    monkeypatch.setattr(torch_cpu, "_checked", False)
    monkeypatch.setattr(torch_cpu, "_layout", None)


def eager_draw(key: str, shape: tuple[int, ...] = (3,)) -> torch.Tensor:
    with ReproducibleBlock(key):
        return torch.rand(shape)


def test_a_new_key_inside_grad(fresh_process: None) -> None:
    set_seed(0)

    def loss(x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("func-grad"):
            return (x * torch.rand(3)).sum()

    before = torch.get_rng_state()
    gradient = torch.func.grad(loss)(torch.ones(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(gradient, eager_draw("func-grad"))  # d(x * r)/dx = r
    assert torch.equal(torch.func.grad(loss)(torch.ones(3)), gradient)


@pytest.mark.parametrize("randomness", ["different", "same"])
def test_a_new_key_inside_vmap(fresh_process: None, randomness: str) -> None:
    set_seed(0)
    key = f"func-vmap-{randomness}"

    def noisy(x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock(key):
            return x + torch.rand(3)

    batch = torch.func.vmap(noisy, randomness=randomness)(torch.zeros(4, 3))
    torch.rand(5)  # the caller draws in between
    assert torch.equal(torch.func.vmap(noisy, randomness=randomness)(torch.zeros(4, 3)), batch)
    rows_alike = all(torch.equal(row, batch[0]) for row in batch)
    assert rows_alike is (randomness == "same")
    if randomness == "same":  # one draw for the batch: the block's first draw
        assert torch.equal(batch[0], eager_draw(key))


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("func-call"):
            return nn.functional.dropout(self.linear(x), 0.5)


def test_a_new_key_inside_functional_call_and_its_grad(fresh_process: None) -> None:
    set_seed(0)
    model = Noisy()
    params = {name: value.detach() for name, value in model.named_parameters()}

    def loss(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, params, (x,)).sum()

    first = torch.func.grad(loss)(params, torch.ones(3))
    assert torch.equal(
        torch.func.grad(loss)(params, torch.ones(3))["linear.weight"], first["linear.weight"]
    )
    with ReproducibleBlock("func-call"):
        mask = nn.functional.dropout(torch.ones(3), 0.5) != 0
    # The dropout mask of the block zeroes the same output rows of the weight's gradient.
    assert torch.equal(first["linear.bias"] != 0, mask)


def test_the_ledger_records_a_block_closed_under_grad(tmp_path: Path) -> None:
    set_seed(0)

    def loss(x: torch.Tensor) -> torch.Tensor:
        with ReproducibleBlock("func-ledger"):
            return (x * torch.rand(3)).sum()

    with record_blocks(tmp_path / "ledger.jsonl") as ledger:
        torch.func.grad(loss)(torch.ones(3))
    assert ledger.records == 1
    assert '"func-ledger"' in (tmp_path / "ledger.jsonl").read_text()
