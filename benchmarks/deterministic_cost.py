"""What deterministic mode and the diagnostics cost, on this machine.

Run: python benchmarks/deterministic_cost.py
Prints median times from torch.utils.benchmark. On CPU most kernels are already deterministic,
so the mode costs little there; ``index_put_(accumulate=True)`` is one that switches to a
sorted, deterministic path. On CUDA the cost is larger (cuDNN and cuBLAS choices, atomics).
"""

from __future__ import annotations

import torch
from torch.utils.benchmark import Timer

from reproducible_block import deterministic_mode, set_seed
from reproducible_block.diagnostics import environment_report, track_consumption


def median_us(statement: str, env: dict[str, object]) -> float:
    measurement = Timer(stmt=statement, globals=env).blocked_autorange(min_run_time=1.0)
    return float(measurement.median * 1e6)


def main() -> None:
    set_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3)
    )
    images = torch.randn(8, 3, 64, 64)
    target = torch.zeros(100_000)
    index = (torch.randint(0, 1000, (100_000,)),)
    values = torch.randn(100_000)
    cases = {
        "conv forward+backward (8x3x64x64)": (
            "conv(images).sum().backward()",
            {"conv": conv, "images": images},
        ),
        "index_put_ accumulate (100k into 100k)": (
            "target.index_put_(index, values, accumulate=True)",
            {"target": target, "index": index, "values": values},
        ),
    }
    for name, (statement, env) in cases.items():
        plain = median_us(statement, env)
        with deterministic_mode():
            strict = median_us(statement, env)
        print(
            f"{name:42s} default {plain:9.1f} us   deterministic {strict:9.1f} us   "
            f"x{strict / plain:.2f}"
        )
    tracked = median_us("with track_consumption(): pass", {"track_consumption": track_consumption})
    report = median_us("environment_report()", {"environment_report": environment_report})
    print(f"{'track_consumption() enter+exit':42s} {tracked:9.1f} us")
    print(f"{'environment_report()':42s} {report:9.1f} us")


if __name__ == "__main__":
    main()
