"""`make bench`: what a block costs, as ratios taken in one process.

Timings on a shared machine are noisy (two identical timings in one run can differ by 30%), so
every figure is timed in rounds, the rounds of the figures being compared alternate, and ratios
compare medians. The script prints a table and exits 1 when a target is missed.

The floor is the least a block can cost through each library's public calls: save the caller's
state (`random.getstate`, `np.random.get_state`, `torch.get_rng_state`), install a block state the
cheapest public way (seed each generator from an int, torch through its default generator only),
restore the caller's state (the three `set` calls).
"""

from __future__ import annotations

import functools
import gc
import itertools
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reproducible_block import ReproducibleBlock, _block, _ledger, record_blocks, set_seed

ROUNDS = 15


def floor() -> None:
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed(1)
    np.random.seed(1)
    torch.default_generator.manual_seed(1)
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


def repeated_key() -> None:
    with ReproducibleBlock("train"):
        pass


_fresh = itertools.count()


def fresh_key() -> None:
    with ReproducibleBlock(("sample", next(_fresh))):
        pass


def key_one_uncached() -> None:
    with ReproducibleBlock(1):
        pass


def key_huge_uncached() -> None:
    with ReproducibleBlock(10**12):
        pass


def ledger_cost(calls: int) -> dict[str, float]:
    """The repeated-key block with the block ledger recording (to a temporary file) and off.

    The rounds alternate, so each figure switches the ledger on or off for its own round.
    """
    with tempfile.TemporaryDirectory() as folder, \
            record_blocks(Path(folder) / "ledger.jsonl") as ledger:

        def off() -> None:
            _ledger.set_recording(None)
            repeated_key()

        def on() -> None:
            _ledger.set_recording(ledger)
            repeated_key()

        try:
            return medians({"off": off, "on": on}, calls)
        finally:
            _ledger.set_recording(ledger)  # record_blocks puts the previous one back on exit


def torch_only() -> None:
    with ReproducibleBlock("train", sources=("torch",)):
        pass


def fork_rng() -> None:
    with torch.random.fork_rng(devices=[]):
        pass


def plain() -> int:
    return 1


decorated = ReproducibleBlock("call")(plain)


def time_per_call(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


def medians(figures: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Median µs per call of each figure over ROUNDS rounds, the figures alternating."""
    samples: dict[str, list[float]] = {name: [] for name in figures}
    for function in figures.values():  # warm-up
        time_per_call(function, max(calls // 10, 1))
    for _ in range(ROUNDS):
        for name, function in figures.items():
            samples[name].append(time_per_call(function, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


class Augmented(Dataset[torch.Tensor]):
    """About 1 ms of work per sample, with augmentation draws in a per-sample block or not.

    The key is ``("sample", index)``. With more samples than the derived-state cache holds
    (the usual case), every block is a fresh key; with fewer, epochs after the first reuse it.
    """

    def __init__(self, size: int, work: int, blocks: bool, sources: tuple[str, ...] | None) -> None:
        self.size, self.work, self.blocks, self.sources = size, work, blocks, sources
        self.matrix = torch.linspace(0, 1, 64 * 64).reshape(64, 64)
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def _sample(self) -> torch.Tensor:
        value = self.matrix
        for _ in range(self.work):
            value = torch.tanh(value @ self.matrix)
        noise = torch.rand(8) + float(np.random.rand()) + random.random()
        return value[0, :8] + noise

    def __getitem__(self, index: int) -> torch.Tensor:
        if not self.blocks:
            return self._sample()
        with ReproducibleBlock(("sample", index), sources=self.sources):
            return self._sample()


def calibrate_work() -> int:
    """How many matrix steps make about 1 ms of work per sample on this machine."""
    work = 10
    for _ in range(3):
        dataset = Augmented(1, work, blocks=False, sources=None)
        sample = functools.partial(dataset.__getitem__, 0)
        per_sample = statistics.median(time_per_call(sample, 100) for _ in range(5))
        work = max(1, round(work * 1000 / per_sample))
    return work


def loader_epoch(dataset: Augmented) -> Callable[[], object]:
    def epoch() -> None:
        dataset.epoch += 1
        for _ in DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0):
            pass

    return epoch


def pipeline_overhead(sources: tuple[str, ...] | None, samples: int) -> tuple[float, float]:
    work = calibrate_work()
    plain_set = Augmented(samples, work, blocks=False, sources=None)
    block_set = Augmented(samples, work, blocks=True, sources=sources)
    timings = medians({"plain": loader_epoch(plain_set), "blocks": loader_epoch(block_set)}, 1)
    per_sample = timings["plain"] / samples
    return per_sample, timings["blocks"] / timings["plain"]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_growth(keys: int) -> tuple[float, int]:
    for index in range(2000):  # fill the cache and warm every allocator first
        with ReproducibleBlock(("warm", index)):
            pass
    gc.collect()
    before = rss_mib()
    for index in range(keys):
        with ReproducibleBlock(("memory", index)):
            pass
    gc.collect()
    return rss_mib() - before, _block.cached_states()


@dataclass
class Row:
    figure: str
    value: str
    ratio: float | None
    target: float | None

    @property
    def ok(self) -> bool:
        return self.target is None or (self.ratio is not None and self.ratio <= self.target)


def main() -> int:
    set_seed(0)
    rows: list[Row] = []
    calls = 2000

    timings = medians(
        {"floor": floor, "repeated": repeated_key, "fresh": fresh_key}, calls
    )
    rows.append(Row("floor: public save + int seed + restore", f"{timings['floor']:.1f} µs",
                    None, None))
    rows.append(Row("block, repeated key / floor", f"{timings['repeated']:.1f} µs",
                    timings["repeated"] / timings["floor"], 1.25))
    rows.append(Row("block, fresh key / floor", f"{timings['fresh']:.1f} µs",
                    timings["fresh"] / timings["floor"], 1.4))

    ledger = ledger_cost(calls)
    rows.append(Row("block ledger on / off (repeated key)",
                    f"{ledger['on']:.1f} / {ledger['off']:.1f} µs",
                    ledger["on"] / ledger["off"], 2.0))

    cache_size = _block.CACHE_SIZE
    _block.CACHE_SIZE = 0  # derive on every entry: the cost that depends on the key
    _block.clear_cache()
    try:
        keys = medians({"one": key_one_uncached, "huge": key_huge_uncached}, calls)
    finally:
        _block.CACHE_SIZE = cache_size
    rows.append(Row("uncached key 10**12 / key 1", f"{keys['huge']:.1f} / {keys['one']:.1f} µs",
                    keys["huge"] / keys["one"], 1.25))

    torch_timings = medians({"block": torch_only, "fork_rng": fork_rng}, calls * 5)
    rows.append(Row("torch-only block / torch.random.fork_rng",
                    f"{torch_timings['block']:.1f} / {torch_timings['fork_rng']:.1f} µs",
                    torch_timings["block"] / torch_timings["fork_rng"], 1.5))

    call_timings = medians({"decorated": decorated, "plain": plain}, calls * 5)
    rows.append(Row("decorated call / plain call",
                    f"{call_timings['decorated']:.1f} / {call_timings['plain']:.2f} µs",
                    call_timings["decorated"] / call_timings["plain"], None))

    # DataLoader workers run torch with one intra-op thread; so does this in-process pipeline
    # (with two, OpenMP's spinning threads compete with the Python between samples).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = 2 * cache_size  # more samples than the cache holds: every key is fresh
        per_sample, ratio = pipeline_overhead(("torch",), fresh)
        rows.append(Row("DataLoader, per-sample block (torch, fresh) / none",
                        f"{per_sample:.0f} µs per sample", ratio, 1.05))
        per_sample, ratio = pipeline_overhead(("torch",), cache_size // 2)
        rows.append(Row("DataLoader, per-sample block (torch, cached) / none",
                        f"{per_sample:.0f} µs per sample", ratio, None))
        per_sample, ratio = pipeline_overhead(None, fresh)
        rows.append(Row("DataLoader, per-sample block (all, fresh) / none",
                        f"{per_sample:.0f} µs per sample", ratio, None))
    finally:
        torch.set_num_threads(threads)

    growth, cached = memory_growth(100_000)
    rows.append(Row("memory growth, 100,000 distinct keys",
                    f"{growth:.1f} MiB, {cached} cached (bound {cache_size})",
                    None, None))
    memory_ok = growth < 16 and cached <= cache_size

    print(f"reproducible_block benchmark ({ROUNDS} alternating rounds, medians; "
          f"torch {torch.__version__}, NumPy {np.__version__})\n")
    print(f"| {'figure':<52} | {'value':<34} | {'ratio':>6} | {'target':>7} |   |")
    print(f"|{'-' * 54}|{'-' * 36}|{'-' * 8}|{'-' * 9}|---|")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        target = "" if row.target is None else f"≤ {row.target:.2f}"
        mark = "ok" if row.ok else "NO"
        if row.figure.startswith("memory"):
            mark = "ok" if memory_ok else "NO"
        print(f"| {row.figure:<52} | {row.value:<34} | {ratio:>6} | {target:>7} | {mark} |")
    failed = [row.figure for row in rows if not row.ok] + ([] if memory_ok else ["memory"])
    if failed:
        print(f"\nmissed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
