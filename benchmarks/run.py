"""`make bench`: what a block costs, as ratios taken in one process, each against its target.

Timings on a shared machine are noisy (two identical timings in one run can differ by 30%), so
every figure is this thread's CPU time (time spent on other processes does not count), timed in
rounds, the rounds of the figures being compared alternate, and ratios
compare medians. The script prints a table with a met/missed column, writes it to
``--markdown FILE`` if asked (``docs/performance.md`` keeps a copy), and exits 1 when a target is
missed.

The public floor is the least a block can cost through each library's public calls: save the
caller's state (``random.getstate``, ``np.random.get_state``, ``torch.get_rng_state``), seed each
generator from an int, restore the caller's state (the three ``set`` calls).
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from reproducible_block import ReproducibleBlock, ReproducibleDataset, SampleIndex, set_seed
from reproducible_block._blocks import states as _block
from reproducible_block._sources.devices import CudaSource
from reproducible_block._sources.registry import registry
from reproducible_block.diagnostics import _ledger, record_blocks

ROUNDS = 15


# --- Figures: each a function timed per call. ---------------------------------------------------


def public_floor() -> None:
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    random.seed(1)
    np.random.seed(1)
    torch.default_generator.manual_seed(1)
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


def fork_rng() -> None:
    with torch.random.fork_rng(devices=[]):
        pass


def repeated_key() -> None:
    with ReproducibleBlock("train"):
        pass


def repeated_replay() -> None:
    """The repeated-key block that opts out of the check for repeated keys (another key, so
    that the record's lookup misses, as for a key never checked)."""
    with ReproducibleBlock("replayed", replay=True):
        pass


def repeated_torch_only() -> None:
    with ReproducibleBlock("train", sources=("torch",)):
        pass


_fresh = itertools.count()


def fresh_key() -> None:
    with ReproducibleBlock(("sample", next(_fresh))):
        pass


def with_cached_gaussian() -> None:
    np.random.standard_normal()  # an odd draw: the caller holds NumPy's cached Gaussian
    with ReproducibleBlock("train"):
        pass
    np.random.standard_normal()  # and uses it up again


def without_cached_gaussian() -> None:
    np.random.standard_normal(2)  # the same work, leaving no Gaussian cached
    with ReproducibleBlock("train"):
        pass


_derived = itertools.count()


def derive_fresh_block() -> None:
    """What a fresh all-sources block derives: key checks and encoding, bits, every state."""
    _, tail = _block.validate_and_encode(("sample", next(_derived)))
    _block.derive_states(0, tail, _ALL_SOURCES)


def key_one() -> None:
    _block.derive_states(0, _block.validate_and_encode(1)[1], _ALL_SOURCES)


def key_huge() -> None:
    _block.derive_states(0, _block.validate_and_encode(10**12)[1], _ALL_SOURCES)


@ReproducibleBlock("items")
def decorated_items() -> Iterator[None]:
    while True:
        yield


_items = decorated_items()


def decorated_item() -> None:
    next(_items)


def plain() -> int:
    return 1


decorated = ReproducibleBlock("call")(plain)


_cuda = CudaSource()  # its queued-seed side runs without CUDA (it never initialises CUDA)
_cuda_state = _cuda.from_bits(bytes(range(16)))


def cuda_install_restore() -> None:
    saved = _cuda.save()
    _cuda.restore(_cuda_state)
    _cuda.restore(saved)


def time_per_call(function: Callable[[], object], calls: int) -> float:
    """µs of this thread's CPU time per call: time the machine spent on other processes (the
    project's machine is shared) does not count, as wall time would."""
    start = time.thread_time_ns()
    for _ in range(calls):
        function()
    return (time.thread_time_ns() - start) / calls / 1e3


def medians(figures: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Median µs per call of each figure over ROUNDS rounds, the figures alternating."""
    samples: dict[str, list[float]] = {name: [] for name in figures}
    for function in figures.values():  # warm-up
        time_per_call(function, max(calls // 10, 1))
    for _ in range(ROUNDS):
        for name, function in figures.items():
            samples[name].append(time_per_call(function, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def ledger_cost(calls: int) -> dict[str, float]:
    """The repeated-key block with the block ledger recording (to a temporary file) and off."""
    with (
        tempfile.TemporaryDirectory() as folder,
        record_blocks(Path(folder) / "ledger.jsonl") as ledger,
    ):

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


# --- Pipelines: per-sample blocks in a real DataLoader, against the same work without. ----------


class Pipeline(Dataset[torch.Tensor]):
    """Samples whose work draws inside a per-sample block (every other index) or not.

    Both kinds of sample run alternately in the same DataLoader epoch, so they share the
    process's state (allocator, caches) and the comparison is fair; each kind's time is summed.
    Which indices (odd or even) get blocks swaps every epoch, so a sample's place in the batch
    favours neither kind.
    The key is ``(name, epoch, index)``: a fresh key every epoch, as per-sample keys that
    change every epoch are. ``__getitems__`` (which the DataLoader calls with a batch of
    indices) derives the batch's states at once with ``ReproducibleBlock.prepare``, counted in
    the blocks' time.
    """

    name = "sample"  # the first part of every key: each pipeline has its own, so no key repeats

    def __init__(self, size: int, sources: tuple[str, ...] | None) -> None:
        self.size, self.sources = size, sources
        self.epoch = 0
        self.seconds = {"plain": 0.0, "blocks": 0.0}

    def __len__(self) -> int:
        return self.size

    def sample(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def in_block(self, index: int) -> bool:
        return (index + self.epoch) % 2 == 1

    def __getitem__(self, index: int) -> torch.Tensor:
        if not self.in_block(index):
            return self.sample(index)
        with ReproducibleBlock((self.name, self.epoch, index), sources=self.sources):
            return self.sample(index)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        start = time.thread_time()  # CPU time: other processes on the machine do not count
        keys = [(self.name, self.epoch, index) for index in indices if self.in_block(index)]
        ReproducibleBlock.prepare(keys, sources=self.sources)
        self.seconds["blocks"] += time.thread_time() - start
        samples = []
        for index in indices:
            start = time.thread_time()
            samples.append(self[index])
            self.seconds["blocks" if self.in_block(index) else "plain"] += (
                time.thread_time() - start
            )
        return samples


class MatrixWork(Pipeline):
    """The README's pipeline: about 1 ms of matrix work, then a few draws."""

    name = "matrix"

    def __init__(self, size: int, sources: tuple[str, ...] | None, work: int) -> None:
        super().__init__(size, sources)
        self.work = work
        self.matrix = torch.linspace(0, 1, 64 * 64).reshape(64, 64)

    def sample(self, index: int) -> torch.Tensor:
        value = self.matrix
        for _ in range(self.work):
            value = torch.tanh(value @ self.matrix)
        return value[0, :8] + torch.rand(8)


class ImageAugmentation(Pipeline):
    """A 3x224x224 image: random crop (with padding), flip, colour jitter and noise.

    The draws come from torch (crop offsets, flip, noise), NumPy (jitter factors) and Python's
    ``random`` (a jitter order): every source a block manages is used. The work does not depend
    on what is drawn (the flip is a select), so samples with and without blocks do the same.
    """

    name = "augment"

    def __init__(self, size: int, sources: tuple[str, ...] | None) -> None:
        super().__init__(size, sources)
        self.image = torch.linspace(0, 1, 3 * 256 * 256).reshape(3, 256, 256)

    def sample(self, index: int) -> torch.Tensor:
        top, left = torch.randint(0, 256 - 224 + 1, (2,)).tolist()
        image = self.image[:, top : top + 224, left : left + 224]
        image = torch.where(torch.rand(()) < 0.5, image.flip(-1), image)
        brightness, contrast = np.random.uniform(0.8, 1.2, size=2)
        steps = [
            lambda x: x * float(brightness),
            lambda x: (x - x.mean()) * float(contrast) + x.mean(),
        ]
        random.shuffle(steps)
        for step in steps:
            image = step(image)
        return (image + 0.01 * torch.randn_like(image)).clamp(0, 1)


# --- Small images: per-sample blocks where a sample's work is about as cheap as a block. ----


class SmallImages(Dataset[torch.Tensor]):
    """3x32x32 images (CIFAR-sized): pad by 4 and crop 32x32 at a random offset, flip at
    random, scale the brightness by a random factor in [0.8, 1.2], clamp to [0, 1].

    Four torch ops draw (``randint`` for the offsets, ``rand`` for the flip, ``uniform_`` for
    the brightness), from the global generator or from ``generator``; the flip is a select, so
    the work does not depend on the draws. About 36 µs a sample with one intra-op thread on the
    issue's machine. ``__getitems__`` is the prepared-per-batch recipe: the batch's keys derived
    at once with ``ReproducibleBlock.prepare``, then a block per sample.
    """

    def __init__(self, size: int) -> None:
        self.images = torch.linspace(0, 1, size * 3 * 32 * 32).reshape(size, 3, 32, 32)
        self.epoch = 0  # part of every key: a fresh key each epoch

    def __len__(self) -> int:
        return len(self.images)

    def augment(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        padded = F.pad(self.images[index], (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
        crop = padded[:, top : top + 32, left : left + 32]
        crop = torch.where(torch.rand((), generator=generator) < 0.5, crop.flip(-1), crop)
        brightness = torch.empty(()).uniform_(0.8, 1.2, generator=generator)
        return (crop * brightness).clamp(0, 1)

    def __getitem__(self, index: int) -> torch.Tensor:
        with ReproducibleBlock(("sample", self.epoch, index)):
            return self.augment(index)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        ReproducibleBlock.prepare([("sample", self.epoch, index) for index in indices])
        return [self[index] for index in indices]


class _Unwrapped(Dataset[torch.Tensor]):
    """The small images without blocks, as a torchvision-style dataset: ``__getitem__``
    augments from the global generator, and never sees a seed."""

    def __init__(self, images: SmallImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images.augment(index)


def small_image_figures(dataset: SmallImages) -> dict[str, Callable[[list[int]], object]]:
    """Each recipe, run on a batch of indices; every call starts a new epoch (fresh keys)."""

    def plain(indices: list[int]) -> object:
        return [dataset.augment(index) for index in indices]

    def all_sources(indices: list[int]) -> object:
        return [dataset[index] for index in indices]

    def torch_only(indices: list[int]) -> object:
        samples = []
        for index in indices:
            with ReproducibleBlock(("sample", dataset.epoch, index), sources=("torch",)):
                samples.append(dataset.augment(index))
        return samples

    def prepared(indices: list[int]) -> object:
        return dataset.__getitems__(indices)

    # The library's wrapper around a plain dataset: its __getitems__ prepares the batch, then
    # runs each sample's __getitem__ in the block ("sample", epoch, index); the epoch comes
    # with the indices, as ReproducibleSampler yields them.
    wrapped = ReproducibleDataset(_Unwrapped(dataset), key="sample")

    def wrapper(indices: list[int]) -> object:
        return wrapped.__getitems__([SampleIndex(index, dataset.epoch) for index in indices])

    wrapped_torch = ReproducibleDataset(_Unwrapped(dataset), key="sample", sources=("torch",))

    def wrapper_torch_only(indices: list[int]) -> object:
        return wrapped_torch.__getitems__([SampleIndex(index, dataset.epoch) for index in indices])

    def fork_rng_manual_seed(indices: list[int]) -> object:
        samples = []
        for index in indices:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(dataset.epoch * len(dataset) + index)
                samples.append(dataset.augment(index))
        return samples

    generator = torch.Generator()

    def seeded_generator(indices: list[int]) -> object:
        samples = []
        for index in indices:
            generator.manual_seed(dataset.epoch * len(dataset) + index)
            samples.append(dataset.augment(index, generator))
        return samples

    return {
        "plain": plain,
        "all sources": all_sources,
        "torch only": torch_only,
        "prepared": prepared,
        "wrapper": wrapper,
        "wrapper, torch only": wrapper_torch_only,
        "fork_rng + manual_seed": fork_rng_manual_seed,
        "seeded torch.Generator": seeded_generator,
    }


SMALL_IMAGE_ROUNDS = 41
SMALL_IMAGE_LABELS = {
    "all sources": "all sources, fresh keys",
    "torch only": "sources=('torch',), fresh keys",
    "prepared": "all sources, prepared per batch of 64",
    "wrapper": "ReproducibleDataset, batch of 64",
    "wrapper, torch only": "ReproducibleDataset(sources=('torch',)), batch of 64",
    "fork_rng + manual_seed": "fork_rng + torch.manual_seed per sample",
    "seeded torch.Generator": "a torch.Generator seeded per sample, passed to every op",
}


def small_image_costs(batch: int = 64) -> dict[str, float]:
    """CPU µs per sample of each recipe (this thread's CPU time, so other processes on the
    machine do not count): medians over rounds in which the recipes alternate, the order
    rotating every round, each round on a batch of fresh keys."""
    dataset = SmallImages(batch)
    figures = small_image_figures(dataset)
    indices = list(range(batch))
    samples: dict[str, list[float]] = {name: [] for name in figures}
    names = list(figures)
    for round_ in range(SMALL_IMAGE_ROUNDS + 1):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            dataset.epoch += 1
            start = time.thread_time_ns()
            figures[name](indices)
            elapsed = (time.thread_time_ns() - start) / batch / 1e3
            if round_:  # the first round warms up
                samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def calibrate_matrix_work() -> int:
    """How many matrix steps make about 1 ms of work per sample on this machine."""
    work = 10
    for _ in range(3):
        sample = functools.partial(MatrixWork(1, None, work).sample, 0)
        per_sample = statistics.median(time_per_call(sample, 100) for _ in range(5))
        work = max(1, round(work * 1000 / per_sample))
    return work


def pipeline_ratio(dataset: Pipeline) -> tuple[float, float]:
    """(µs per sample without a block, with / without): medians over ROUNDS rounds.

    A round is two epochs, one with blocks on the odd indices and one on the even; the first
    round warms up.
    """
    plain, ratios = [], []
    for _ in range(ROUNDS + 1):
        dataset.seconds = {"plain": 0.0, "blocks": 0.0}
        for _ in range(2):
            dataset.epoch += 1
            for _ in DataLoader(dataset, batch_size=16, shuffle=False, num_workers=0):
                pass
        plain.append(dataset.seconds["plain"] / dataset.size * 1e6)
        ratios.append(dataset.seconds["blocks"] / dataset.seconds["plain"])
    return statistics.median(plain[1:]), statistics.median(ratios[1:])


# --- Memory. -------------------------------------------------------------------------------------


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


# --- The table. ----------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    ratio: float | None = None
    target: float | None = None
    unit: str = ""  # "" for a ratio; "µs" for an absolute target
    ok: bool | None = None  # for rows without a ratio (memory)

    @property
    def met(self) -> bool | None:
        if self.ok is not None:
            return self.ok
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None or self.unit else f"{self.ratio:.2f}"
        unit = f" {self.unit}" if self.unit else ""
        target = "" if self.target is None else f"≤ {self.target:g}{unit}"
        met = {None: "", True: "met", False: "MISSED"}[self.met]
        return [self.figure, self.value, ratio, target, met]


def table(rows: list[Row]) -> str:
    header = ["figure", "value", "ratio", "target", ""]
    cells = [header] + [row.cells() for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(header))]
    lines = [
        "| "
        + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        + " |"
        for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


_ALL_SOURCES = registry.select(None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    arguments = parser.parse_args()
    set_seed(0)
    calls = 2000
    rows: list[Row] = []

    base = medians(
        {"fork_rng": fork_rng, "repeated": repeated_key, "torch": repeated_torch_only}, calls
    )
    rows.append(
        Row(
            "repeated key, all sources / fork_rng (torch only)",
            f"{base['repeated']:.1f} / {base['fork_rng']:.1f} µs",
            base["repeated"] / base["fork_rng"],
            2.0,
        )
    )
    rows.append(
        Row(
            "repeated key, sources=('torch',) / fork_rng",
            f"{base['torch']:.1f} / {base['fork_rng']:.1f} µs",
            base["torch"] / base["fork_rng"],
            1.1,
        )
    )

    checked = medians({"checked": repeated_key, "replay": repeated_replay}, calls)
    rows.append(
        Row(
            "repeated key, checked / replay=True",
            f"{checked['checked']:.1f} / {checked['replay']:.1f} µs",
            checked["checked"] / checked["replay"],
            1.05,
        )
    )

    fresh = medians({"floor": public_floor, "fresh": fresh_key}, calls // 4)
    rows.append(
        Row(
            "fresh key, all sources / public floor (3 generators)",
            f"{fresh['fresh']:.1f} / {fresh['floor']:.1f} µs",
            fresh["fresh"] / fresh["floor"],
            0.35,
        )
    )

    gauss = medians({"with": with_cached_gaussian, "without": without_cached_gaussian}, calls)
    rows.append(
        Row(
            "caller holding a cached NumPy Gaussian / without",
            f"{gauss['with']:.1f} / {gauss['without']:.1f} µs",
            gauss["with"] / gauss["without"],
            1.2,
        )
    )

    cuda = medians({"cuda": cuda_install_restore}, calls)["cuda"]
    rows.append(
        Row(
            "CUDA source install + restore before CUDA starts (CPU side)",
            f"{cuda:.1f} µs",
            cuda,
            5.0,
            unit="µs",
        )
    )

    items = medians({"item": decorated_item, "block": repeated_key}, calls)
    rows.append(
        Row(
            "decorated generator, per item / repeated-key block",
            f"{items['item']:.1f} / {items['block']:.1f} µs",
            items["item"] / items["block"],
            1.3,
        )
    )

    cache_size = _block.CACHE_SIZE
    _block.CACHE_SIZE = 0  # derive on every call: nothing is cached
    try:
        derived = medians({"fresh": derive_fresh_block, "one": key_one, "huge": key_huge}, calls)
    finally:
        _block.CACHE_SIZE = cache_size
        _block.clear_cache()
    rows.append(
        Row(
            "derivation of a fresh all-sources block (key included)",
            f"{derived['fresh']:.1f} µs",
            derived["fresh"],
            10.0,
            unit="µs",
        )
    )
    rows.append(
        Row(
            "derivation, key 10**12 / key 1",
            f"{derived['huge']:.1f} / {derived['one']:.1f} µs",
            derived["huge"] / derived["one"],
            1.25,
        )
    )

    ledger = ledger_cost(calls)
    rows.append(
        Row(
            "block ledger on / off (repeated key)",
            f"{ledger['on']:.1f} / {ledger['off']:.1f} µs",
            ledger["on"] / ledger["off"],
            2.0,
        )
    )

    call = medians({"decorated": decorated, "plain": plain}, calls * 5)
    rows.append(
        Row(
            "decorated call / plain call",
            f"{call['decorated']:.1f} / {call['plain']:.2f} µs",
            call["decorated"] / call["plain"],
        )
    )

    # DataLoader workers run torch with one intra-op thread; so does this in-process pipeline.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = calibrate_matrix_work()
        samples = cache_size  # fresh keys anyway: the epoch is part of the key
        per_sample, ratio = pipeline_ratio(MatrixWork(samples, ("torch",), work))
        rows.append(
            Row(
                "per-sample blocks, ~1 ms pipeline, torch only, fresh keys / none",
                f"{per_sample:.0f} µs per sample",
                ratio,
                1.05,
            )
        )
        per_sample, ratio = pipeline_ratio(ImageAugmentation(samples, None))
        rows.append(
            Row(
                "per-sample blocks, 3x224x224 augmentation, all sources / none",
                f"{per_sample:.0f} µs per sample",
                ratio,
                1.05,
            )
        )
        small = small_image_costs()
        for name, target in (
            ("all sources", 1.35),
            ("torch only", 1.2),
            ("prepared", None),
            ("wrapper", 1.25),
            ("wrapper, torch only", None),
        ):
            rows.append(
                Row(
                    f"per-sample blocks, 3x32x32 augmentation, {SMALL_IMAGE_LABELS[name]} / none",
                    f"{small[name]:.0f} / {small['plain']:.0f} µs per sample",
                    small[name] / small["plain"],
                    target,
                )
            )
        for name in ("fork_rng + manual_seed", "seeded torch.Generator"):
            rows.append(
                Row(
                    f"by hand, 3x32x32 augmentation, {SMALL_IMAGE_LABELS[name]} / none",
                    f"{small[name]:.0f} / {small['plain']:.0f} µs per sample",
                    small[name] / small["plain"],
                )
            )
    finally:
        torch.set_num_threads(threads)

    growth, cached = memory_growth(100_000)
    rows.append(
        Row(
            "memory growth over 100,000 distinct keys",
            f"{growth:.1f} MiB, {cached} cached (bound {cache_size})",
            ok=growth < 16 and cached <= cache_size,
        )
    )

    text = table(rows)
    print(
        f"reproducible_block benchmark ({ROUNDS} alternating rounds, medians; torch "
        f"{torch.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]})\n"
    )
    print(text)
    if arguments.markdown is not None:
        arguments.markdown.write_text(text + "\n")
    missed = [row.figure for row in rows if row.met is False]
    if missed:
        print(f"\nmissed: {'; '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
