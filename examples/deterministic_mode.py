"""Deterministic mode and the diagnostics: is this run reproducible, and who drew what?

Run: python examples/deterministic_mode.py   (then: python -m reproducible_block)
"""

from __future__ import annotations

import random

import torch

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block.diagnostics import (
    NondeterminismError,
    assert_deterministic,
    environment_report,
    track_consumption,
)

# One call: seed every generator and turn on deterministic kernels (before any CUDA work).
set_seed(2024, deterministic=True)

model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))
batch = torch.randn(4, 8)


def forward() -> dict[str, torch.Tensor]:
    with ReproducibleBlock("forward"):
        return {"logits": model(batch)}


# Same random state in, same result out: nothing here escapes the managed generators.
assert_deterministic(forward)
print("forward() is deterministic")

# Which generators did it use? Inside the block: torch (dropout). Around it: nothing leaks.
with ReproducibleBlock("forward", replay=True), track_consumption() as inside:  # on purpose
    model(batch)
with track_consumption() as around:
    forward()
print("consumed inside the block:", inside.consumed, "| around it:", around.consumed)

# A generator the library does not manage makes two runs differ; the error says where.
unmanaged = random.Random()


def noisy_forward() -> dict[str, torch.Tensor]:
    logits = forward()["logits"].detach().clone()
    logits[3, 0] += unmanaged.random()
    return {"logits": logits}


try:
    assert_deterministic(noisy_forward)
except NondeterminismError as error:
    print("caught at result" + error.path, "| difference > 0:", (error.difference or 0) > 0)

print()
print(environment_report())
