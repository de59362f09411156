"""Trace a model whose output follows a set's iteration order (str hashes): run by
tests/diagnostics/test_find_nondeterminism.py under two PYTHONHASHSEEDs; writes the trace (JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from reproducible_block.diagnostics import trace_ops

WEIGHTS = {"alpha": 0.1, "beta": 1e8, "gamma": 0.3, "delta": -1e8, "epsilon": 0.5, "zeta": 0.7}


class Mixer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.names = set(WEIGHTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor([WEIGHTS[name] for name in self.names])  # INJECTED: hash order
        return (weights * x).cumsum(0)


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Linear(1, 1)
        self.mixer = Mixer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x * 2)


if __name__ == "__main__":
    torch.manual_seed(0)
    model = Model()
    trace = trace_ops(model, torch.ones(len(WEIGHTS)))
    Path(sys.argv[1]).write_text(
        json.dumps({"order": list(model.mixer.names), "trace": trace.to_json()})
    )
