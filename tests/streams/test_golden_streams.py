"""The stream contract: the first draws of every derived stream, pinned as literals.

These values were computed once from derivation version 1 and written here by hand; the tests
never recompute them. They change only together with a ``DERIVATION_VERSION`` bump (a breaking
change, see the stability policy in docs/concepts.md), never to make a refactor or a speed-up
pass. The last test mutates each derivation constant in turn and checks that this file notices.

Floats are written with ``float.hex`` and integers in hex, so every bit is pinned.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

import reproducible_block as rb
from reproducible_block import (
    Reproducible_Block,
    ReproducibleBlock,
    _checkpoint,
    numpy_generator,
    register_generator,
    seed_worker,
    set_seed,
    torch_generator,
)
from reproducible_block._blocks import block as _block
from reproducible_block._sources.registry import registry
from reproducible_block._streams import derivation as _derivation

#: (root seed, key) pairs: str, int, tuple, large-int and unicode keys.
CASES: list[tuple[int, Any]] = [
    (0, "train"),
    (42, 7),
    (2024, ("epoch", 3)),
    (1, 2**64 - 1),
    (7, "δοκιμή-🎲"),
    (2**32 - 1, ("sample", 10**12, "crop")),
]

Observation = list[str]


def floats(values: Any) -> Observation:
    return [float(value).hex() for value in np.asarray(values, dtype=np.float64).ravel()]


def ints(values: Any) -> Observation:
    return [hex(int(value)) for value in np.asarray(values).ravel()]


def global_draws() -> dict[str, Observation]:
    """The first draws of Python ``random``, NumPy's global generator and torch's CPU one."""
    return {
        "random": [hex(random.getrandbits(64)), random.random().hex(), random.gauss(0, 1).hex()],
        "numpy.rand": floats(np.random.rand(2)),
        "numpy.randn": floats(np.random.randn(3)),
        "torch.rand": floats(torch.rand(2)),
        "torch.randn": floats(torch.randn(2)),
        "torch.randint": ints(torch.randint(0, 2**62, (2,))),
    }


class Registered:
    """A registered torch.Generator and np.random.Generator, for the duration of a test."""

    def __init__(self) -> None:
        self.torch = torch.Generator()
        self.numpy = np.random.Generator(np.random.PCG64(0))

    def draws(self) -> dict[str, Observation]:
        return {
            "registered.torch": floats(torch.rand(2, generator=self.torch)),
            "registered.numpy": ints(self.numpy.integers(0, 2**63, 2)),
        }


@pytest.fixture
def registered() -> Registered:
    generators = Registered()
    register_generator(generators.torch, name="golden-torch")
    register_generator(generators.numpy, name="golden-numpy")
    return generators  # conftest's fixture unregisters them


def observe_block(seed: int, key: Any, generators: Registered) -> dict[str, Observation]:
    set_seed(seed)
    with ReproducibleBlock(key):
        drawn = global_draws()
        drawn.update(generators.draws())
    return drawn


def observe_root(seed: int, generators: Registered) -> dict[str, Observation]:
    """Outside blocks: the recipe's streams, and registered generators seeded from (seed, name)."""
    set_seed(seed)
    return {**global_draws(), **generators.draws()}


def observe_loader_generators(seed: int, key: Any) -> dict[str, Observation]:
    set_seed(seed)
    return {
        "torch_generator": ints(torch.randint(0, 2**62, (2,), generator=torch_generator(key))),
        "numpy_generator": ints(numpy_generator(key).integers(0, 2**63, 2)),
    }


def observe_folds(seed: int, key: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Observation]:
    set_seed(seed)
    drawn = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        with ReproducibleBlock(key, per_rank=True):
            drawn[f"per_rank.{rank}"] = floats(torch.rand(2))
        with ReproducibleBlock(key, per_rank=True, per_worker=True):
            drawn[f"per_rank.{rank}.per_worker.0"] = floats(torch.rand(2))
    monkeypatch.delenv("RANK")
    with ReproducibleBlock(key, per_worker=True):
        drawn["per_worker.0"] = floats(torch.rand(2))
    return drawn


def observe_workers(monkeypatch: pytest.MonkeyPatch) -> dict[str, Observation]:
    """seed_worker in a worker whose DataLoader base seed is 12345, for two worker ids."""
    set_seed(5)
    drawn = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        for worker_id in (0, 1):
            torch.manual_seed(12345 + worker_id)  # what the DataLoader does in the worker
            seed_worker(worker_id)
            drawn[f"rank{rank}.worker{worker_id}"] = [
                hex(random.getrandbits(64)), *floats(np.random.rand(1)), *floats(torch.rand(1))
            ]
    monkeypatch.delenv("RANK")
    return drawn


def observe_new_ranks(generators: Registered) -> dict[str, Observation]:
    """The states load_rng_state(..., on_world_size_change="derive") gives ranks 1 and 2."""
    set_seed(42)
    drawn = {}
    for rank in (1, 2):
        sources = registry.active()
        for source, state in zip(sources, _checkpoint.new_rank_states(42, rank, sources),
                                 strict=True):
            source.restore(state)
        drawn.update({f"rank{rank}.{name}": value for name, value in global_draws().items()})
        drawn.update({f"rank{rank}.{name}": value for name, value in generators.draws().items()})
    return drawn


def observe_compat() -> dict[str, Observation]:
    """torch-reproducible-block 0.0.1's numbers, which the drop-in keeps."""
    Reproducible_Block.set_seed(42)
    drawn = {}
    for block_seed in (0, 3, 64):
        with Reproducible_Block(block_seed=block_seed):
            drawn[f"block{block_seed}"] = [
                *floats(torch.rand(2)), *floats(np.random.rand(1)), random.random().hex()
            ]
    return drawn


GOLDEN_BLOCKS: dict[tuple[int, Any], dict[str, Observation]] = {
    (0, "train"): {
        "random": ["0x6e0d2eb5abcc456a", "0x1.ae3a128805c82p-2", "-0x1.4aad5744855c4p-2"],
        "numpy.rand": ["0x1.2bd28d795b9a4p-1", "0x1.84fa6a93b7508p-4"],
        "numpy.randn": ["-0x1.70a0eddccacebp-3", "-0x1.3d7c08b89afd9p-1", "0x1.992adc7288978p-1"],
        "torch.rand": ["0x1.e2ab780000000p-3", "0x1.0c8d380000000p-2"],
        "torch.randn": ["0x1.62e9160000000p+0", "0x1.479a020000000p-2"],
        "torch.randint": ["0x2b6ceb8c633a9f5a", "0x10d2d467ef84beda"],
        "registered.torch": ["0x1.e4ec040000000p-2", "0x1.83c5fc0000000p-2"],
        "registered.numpy": ["0x4e9866ccc00cacb2", "0x78e11d5aa886510c"],
    },
    (42, 7): {
        "random": ["0x2f52f32003c8fbe1", "0x1.510b248e25521p-1", "0x1.3a198ba0aba07p+0"],
        "numpy.rand": ["0x1.a2b2ee56d71d0p-3", "0x1.a178657f89e9fp-1"],
        "numpy.randn": ["0x1.a3460251faab8p+0", "-0x1.1748f8b42924ap+1", "0x1.3ad5b0a051b48p-3"],
        "torch.rand": ["0x1.ee636a0000000p-1", "0x1.de41ec0000000p-2"],
        "torch.randn": ["-0x1.6581a00000000p+1", "-0x1.2741840000000p+0"],
        "torch.randint": ["0x6af4afbc703199c", "0x23da126d39c9e940"],
        "registered.torch": ["0x1.664f0c0000000p-2", "0x1.eb55480000000p-1"],
        "registered.numpy": ["0x9eab882b11383f1", "0x6bcee723f268e6ef"],
    },
    (2024, ("epoch", 3)): {
        "random": ["0xacb0fe96e974310f", "0x1.2bd3580211315p-1", "-0x1.9c7e95982acdep-2"],
        "numpy.rand": ["0x1.1a74fc2821f30p-2", "0x1.2c08ce34067d6p-1"],
        "numpy.randn": ["0x1.967ad598e2100p+1", "0x1.151abe143db9fp+1", "0x1.4d2dc03344286p+0"],
        "torch.rand": ["0x1.b4d2520000000p-1", "0x1.521b1c0000000p-2"],
        "torch.randn": ["-0x1.daeed20000000p-2", "0x1.7517ce0000000p+0"],
        "torch.randint": ["0x1b43d310d2f72bb9", "0x19fab0c459f983d1"],
        "registered.torch": ["0x1.8f86800000000p-7", "0x1.3c6a0a0000000p-1"],
        "registered.numpy": ["0xe3c8a0c242c96fc", "0x5dac26854d089238"],
    },
    (1, 18446744073709551615): {
        "random": ["0xa163163a8b37a53f", "0x1.cb46ad67b4dc0p-6", "0x1.47a33e0a8ae30p-1"],
        "numpy.rand": ["0x1.ecb2989632159p-1", "0x1.f7f7ad1c87bfap-1"],
        "numpy.randn": ["0x1.3341eda28fa22p-1", "0x1.3edba93ad6be6p-2", "0x1.1839d5c715ba6p-1"],
        "torch.rand": ["0x1.e42d980000000p-3", "0x1.a647540000000p-2"],
        "torch.randn": ["-0x1.09846e0000000p-2", "0x1.bfd5800000000p-1"],
        "torch.randint": ["0x32183792996021c3", "0x29b0a1adb846ae86"],
        "registered.torch": ["0x1.0df0c80000000p-3", "0x1.179d0c0000000p-1"],
        "registered.numpy": ["0x7dd50efc2336b70", "0x58fce011ba6ae80"],
    },
    (7, "δοκιμή-🎲"): {
        "random": ["0xa50882a27755700b", "0x1.ed9955a09679ep-1", "0x1.29c9b8d8772e9p+0"],
        "numpy.rand": ["0x1.5f8b16aa40001p-1", "0x1.c9c0b42d1b6f9p-1"],
        "numpy.randn": ["0x1.837132f8d46b7p-1", "0x1.7218f63b5dae1p-3", "0x1.50eb5cf62621bp+0"],
        "torch.rand": ["0x1.4360d40000000p-1", "0x1.ea2a160000000p-1"],
        "torch.randn": ["-0x1.b56b0e0000000p-1", "0x1.1bcdb80000000p-3"],
        "torch.randint": ["0x11a0b5705585d2b2", "0x1ad918313559c352"],
        "registered.torch": ["0x1.1fc8b80000000p-2", "0x1.64fc680000000p-1"],
        "registered.numpy": ["0x12b3fcfaf5c9ffa6", "0x404d2c59152236a8"],
    },
    (4294967295, ("sample", 1000000000000, "crop")): {
        "random": ["0x40c3600b98205477", "0x1.0cc34adcb3d59p-1", "0x1.972088bd6407ap-1"],
        "numpy.rand": ["0x1.aedbf082b7a53p-1", "0x1.499aeff16f8dap-1"],
        "numpy.randn": ["-0x1.aaf50d9b6a025p-1", "0x1.c17159654d004p-4", "-0x1.e1a9fe682791fp-5"],
        "torch.rand": ["0x1.f7f7ca0000000p-1", "0x1.c5d1d00000000p-2"],
        "torch.randn": ["-0x1.bfe3a80000000p-5", "0x1.31c0360000000p-1"],
        "torch.randint": ["0x1a4e66e31de9df37", "0x394ce94ded68bff3"],
        "registered.torch": ["0x1.f7c13c0000000p-2", "0x1.f857400000000p-3"],
        "registered.numpy": ["0x1c00df7a6e6596de", "0x1c48a3a6e67b2fb0"],
    },
}

GOLDEN_ROOTS: dict[int, dict[str, Observation]] = {
    0: {
        "random": ["0x629f6fbed82c07cd", "0x1.84129978f9c1ap-1", "-0x1.5c03883a3b23fp-1"],
        "numpy.rand": ["0x1.18fe1565f12a8p-1", "0x1.6e2d4cf608733p-1"],
        "numpy.randn": ["0x1.f51d25222c9abp-1", "0x1.1ed5969e3314ep+1", "0x1.de1847cb13ddap+0"],
        "torch.rand": ["0x1.fc2ab00000000p-2", "0x1.89545e0000000p-1"],
        "torch.randn": ["-0x1.297b420000000p-2", "-0x1.1203ca0000000p+0"],
        "torch.randint": ["0xb7d76c3d8e57d67", "0x2c74a4099fa1ded3"],
        "registered.torch": ["0x1.7aeca40000000p-1", "0x1.aed24c0000000p-1"],
        "registered.numpy": ["0x9dfe2ae7f1c6df4", "0x2dc7baec8772b025"],
    },
    1: {
        "random": ["0x91b7584a2265b1f5", "0x1.b1e2d5b3584f8p-1", "0x1.0fb6231f18bccp-4"],
        "numpy.rand": ["0x1.ab07d0ffa3c06p-2", "0x1.70ce5f3baf051p-1"],
        "numpy.randn": ["-0x1.0e6c872548fd2p-1", "-0x1.12ae1255cb80cp+0", "0x1.bb16b5735117dp-1"],
        "torch.rand": ["0x1.83e84a0000000p-1", "0x1.1e03ac0000000p-2"],
        "torch.randn": ["0x1.dc6baa0000000p-4", "0x1.714e840000000p-1"],
        "torch.randint": ["0xd65aacbffc11e85", "0x2591cb4f3c7053c0"],
        "registered.torch": ["0x1.409cd00000000p-1", "0x1.6718cc0000000p-1"],
        "registered.numpy": ["0x363d6730f15c8d8d", "0x15493a97513b947c"],
    },
    7: {
        "random": ["0xf2a74de452e6b438", "0x1.34f0696513270p-3", "-0x1.cf0b818bf4a85p-3"],
        "numpy.rand": ["0x1.388f0a7465c98p-4", "0x1.8f5184146a0a7p-1"],
        "numpy.randn": ["0x1.b0c64ae2deb29p+0", "-0x1.dd1eafa1d414dp-2", "0x1.0cdcdf34c3aedp-5"],
        "torch.rand": ["0x1.11e15e0000000p-1", "0x1.9726200000000p-3"],
        "torch.randn": ["-0x1.2e54fa0000000p-2", "0x1.f7f2c00000000p+0"],
        "torch.randint": ["0x3935039774a13667", "0x3a5d855c4ed9ecb9"],
        "registered.torch": ["0x1.5bae320000000p-1", "0x1.d7fc240000000p-2"],
        "registered.numpy": ["0x2530fb6ec3534885", "0x2edb3fb428d5b4bd"],
    },
    42: {
        "random": ["0x1c80317fa3b1799d", "0x1.99c6b5eeb2060p-6", "-0x1.c7f3240f58c66p-4"],
        "numpy.rand": ["0x1.7f8771e5f51ecp-2", "0x1.e6c4068bbd654p-1"],
        "numpy.randn": ["0x1.4b9dd50245e68p-1", "0x1.85e548e01aa2bp+0", "-0x1.df8bcdf57a640p-3"],
        "torch.rand": ["0x1.c3b8cc0000000p-1", "0x1.d47b660000000p-1"],
        "torch.randn": ["0x1.e56ac40000000p-2", "0x1.95112a0000000p-3"],
        "torch.randint": ["0x1941aebc98cb2c14", "0x27f0d66672221879"],
        "registered.torch": ["0x1.9fd2ec0000000p-2", "0x1.1988400000000p-4"],
        "registered.numpy": ["0x276db11550e8de93", "0x65adae1462d17f03"],
    },
    2024: {
        "random": ["0x2e84496e7857dd86", "0x1.74df0ea503bb8p-1", "-0x1.627b767b9f013p-1"],
        "numpy.rand": ["0x1.2d103d3075337p-1", "0x1.65f194ef47a2ap-1"],
        "numpy.randn": ["-0x1.9cbfd3e69067bp-3", "-0x1.351152b8611dcp-3", "0x1.d504be14c4690p-1"],
        "torch.rand": ["0x1.103d100000000p-1", "0x1.a99bf40000000p-1"],
        "torch.randn": ["0x1.1e1d660000000p-3", "-0x1.c91be40000000p-1"],
        "torch.randint": ["0xb3709bee49ec0b7", "0x347c1f29fcbfcc7f"],
        "registered.torch": ["0x1.2c77880000000p-2", "0x1.e060c60000000p-1"],
        "registered.numpy": ["0x1fff37ff3e2428ee", "0x3e4f57fc93c68621"],
    },
    4294967295: {
        "random": ["0x9e9c04f4a2a6c909", "0x1.a0274a3720bf8p-3", "-0x1.4bd655ab9d61ep-1"],
        "numpy.rand": ["0x1.8fe69a3924820p-4", "0x1.d323d824032b1p-1"],
        "numpy.randn": ["0x1.4bfc38c486d8ap-1", "0x1.56b192e507eeep-1", "-0x1.149e836f192fdp+0"],
        "torch.rand": ["0x1.fcd3460000000p-1", "0x1.2482440000000p-1"],
        "torch.randn": ["-0x1.1df7740000000p+1", "-0x1.c56d000000000p-1"],
        "torch.randint": ["0x7ae50d6c54701fa", "0x497b1d948977f20"],
        "registered.torch": ["0x1.9a3e240000000p-2", "0x1.40a9200000000p-2"],
        "registered.numpy": ["0x6c5f7af78d48f362", "0x6849d86ba21b7174"],
    },
}

GOLDEN_LOADER_GENERATORS: dict[tuple[int, Any], dict[str, Observation]] = {
    (0, "train"): {
        "torch_generator": ["0x3d44693cfbbf046e", "0x2faa50bdef35dc9a"],
        "numpy_generator": ["0x4a6d9eddeeccf6c3", "0x52fa933eef32d9d"],
    },
    (42, 7): {
        "torch_generator": ["0xb68423f89c09161", "0x4854f01d3b1fae2"],
        "numpy_generator": ["0x3b0804013d6677dd", "0x547e2479d73cac89"],
    },
    (2024, ("epoch", 3)): {
        "torch_generator": ["0x1b500cdcfa5712d9", "0x1b50792714125ca5"],
        "numpy_generator": ["0x14338d47f99d665e", "0x17e13f290b829ce"],
    },
    (1, 18446744073709551615): {
        "torch_generator": ["0x1d55cd4419099cea", "0x3e97264ad16c302e"],
        "numpy_generator": ["0x71466dc0ed01cc0b", "0x5cc77a6f0d8623d8"],
    },
    (7, "δοκιμή-🎲"): {
        "torch_generator": ["0x144aee7828264bdb", "0x29493cdc1cd66b19"],
        "numpy_generator": ["0x374183fe16eecd41", "0x58fda0a687820232"],
    },
    (4294967295, ("sample", 1000000000000, "crop")): {
        "torch_generator": ["0x15f462c80e654f85", "0x30ddb487ae277a4f"],
        "numpy_generator": ["0x7662c3f7016dabab", "0x426fe5ad9adb3965"],
    },
}

GOLDEN_FOLDS: dict[tuple[int, Any], dict[str, Observation]] = {
    (0, "train"): {
        "per_rank.0": ["0x1.9d70700000000p-1", "0x1.4bb31a0000000p-1"],
        "per_rank.0.per_worker.0": ["0x1.1caf380000000p-2", "0x1.bb469c0000000p-1"],
        "per_rank.1": ["0x1.6b5c980000000p-3", "0x1.279e580000000p-3"],
        "per_rank.1.per_worker.0": ["0x1.2d1ff40000000p-1", "0x1.db988a0000000p-1"],
        "per_worker.0": ["0x1.dc89f80000000p-3", "0x1.3134880000000p-3"],
    },
    (42, 7): {
        "per_rank.0": ["0x1.ee85a40000000p-2", "0x1.57c7940000000p-2"],
        "per_rank.0.per_worker.0": ["0x1.c722060000000p-1", "0x1.730e080000000p-1"],
        "per_rank.1": ["0x1.ff19000000000p-6", "0x1.d502960000000p-1"],
        "per_rank.1.per_worker.0": ["0x1.7f95940000000p-1", "0x1.858f6e0000000p-1"],
        "per_worker.0": ["0x1.a14d500000000p-3", "0x1.b171500000000p-4"],
    },
    (2024, ("epoch", 3)): {
        "per_rank.0": ["0x1.816c800000000p-6", "0x1.fbc2b40000000p-1"],
        "per_rank.0.per_worker.0": ["0x1.88ae0a0000000p-1", "0x1.6d68580000000p-1"],
        "per_rank.1": ["0x1.c690ae0000000p-1", "0x1.06dc420000000p-1"],
        "per_rank.1.per_worker.0": ["0x1.9f7ccc0000000p-2", "0x1.3eaad80000000p-2"],
        "per_worker.0": ["0x1.a353d40000000p-2", "0x1.034e040000000p-1"],
    },
}

GOLDEN_WORKERS: dict[str, Observation] = {
    "rank0.worker0": ["0x9d72e3ab8c3f4cdc", "0x1.8deb90cb21331p-1", "0x1.a620b40000000p-1"],
    "rank0.worker1": ["0xe0c55a1fd14ecfb3", "0x1.2eeace92f2e80p-4", "0x1.62a0d60000000p-1"],
    "rank1.worker0": ["0xa72650d080150a0f", "0x1.fb5f5a482c523p-1", "0x1.eb80480000000p-1"],
    "rank1.worker1": ["0x857a13f0347a7247", "0x1.8d82fa8717a4ep-2", "0x1.72a7180000000p-2"],
}

GOLDEN_NEW_RANKS: dict[str, Observation] = {
    "rank1.random": ["0x5720ee8578ced2fb", "0x1.08bf6544a5a4ep-1", "0x1.2d4011c060b6ap+0"],
    "rank1.numpy.rand": ["0x1.34befb13a5a4cp-2", "0x1.0d41e70004d2ap-2"],
    "rank1.numpy.randn": ["0x1.369f4ef23d4dap+0", "0x1.10f7a4eeaa9c2p-3", "-0x1.dad5e6067e3e8p-2"],
    "rank1.torch.rand": ["0x1.d057400000000p-1", "0x1.fdad7e0000000p-1"],
    "rank1.torch.randn": ["0x1.11a1440000000p-6", "0x1.fef76a0000000p-1"],
    "rank1.torch.randint": ["0x35037c332af5570", "0x118d58971e276ccf"],
    "rank1.registered.torch": ["0x1.32f4d00000000p-4", "0x1.fde4d00000000p-3"],
    "rank1.registered.numpy": ["0x73e80cb04639991c", "0x2b80782e45a5598c"],
    "rank2.random": ["0xe7200e8b6f896466", "0x1.52a5224c2fddep-1", "0x1.342d970e10f57p-1"],
    "rank2.numpy.rand": ["0x1.ac21d1872417fp-1", "0x1.d1908cedb4098p-4"],
    "rank2.numpy.randn": [
        "-0x1.a5cd7c29b2ac6p-1",
        "-0x1.d63d8a2e89566p+0",
        "-0x1.b03256daadaa3p-2",
    ],
    "rank2.torch.rand": ["0x1.662f320000000p-1", "0x1.64d36e0000000p-1"],
    "rank2.torch.randn": ["0x1.d33a060000000p-4", "-0x1.a2e4bc0000000p-1"],
    "rank2.torch.randint": ["0x3a5a90d1b6651a53", "0x311214db6efede7b"],
    "rank2.registered.torch": ["0x1.1cfe500000000p-4", "0x1.7424240000000p-2"],
    "rank2.registered.numpy": ["0x7933463103de8105", "0x66a6516d5341c051"],
}

GOLDEN_COMPAT: dict[str, Observation] = {
    "block0": [
        "0x1.c3b8cc0000000p-1",
        "0x1.d47b660000000p-1",
        "0x1.7f8771e5f51ecp-2",
        "0x1.4762f307200c5p-1",
    ],
    "block3": [
        "0x1.eb2a1c0000000p-1",
        "0x1.8fd1a80000000p-2",
        "0x1.32835d6632cb0p-1",
        "0x1.f589dc392456cp-3",
    ],
    "block64": [
        "0x1.4e714c0000000p-1",
        "0x1.9554440000000p-2",
        "0x1.8e016b5fa82f6p-2",
        "0x1.d04aca515e1b8p-2",
    ],
}


def test_the_derivation_version_is_1() -> None:
    assert rb.DERIVATION_VERSION == 1


@pytest.mark.parametrize(("seed", "key"), CASES)
def test_block_streams(seed: int, key: Any, registered: Registered) -> None:
    assert observe_block(seed, key, registered) == GOLDEN_BLOCKS[(seed, key)]


@pytest.mark.parametrize("seed", sorted({seed for seed, _ in CASES}))
def test_root_streams(seed: int, registered: Registered) -> None:
    assert observe_root(seed, registered) == GOLDEN_ROOTS[seed]


@pytest.mark.parametrize(("seed", "key"), CASES)
def test_loader_generators(seed: int, key: Any) -> None:
    assert observe_loader_generators(seed, key) == GOLDEN_LOADER_GENERATORS[(seed, key)]


@pytest.mark.parametrize(("seed", "key"), CASES[:3])
def test_per_rank_and_per_worker_blocks(
    seed: int, key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert observe_folds(seed, key, monkeypatch) == GOLDEN_FOLDS[(seed, key)]


def test_seed_worker_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    assert observe_workers(monkeypatch) == GOLDEN_WORKERS


def test_states_derived_for_new_ranks(registered: Registered) -> None:
    assert observe_new_ranks(registered) == GOLDEN_NEW_RANKS


def test_compat_keeps_the_numbers_of_0_0_1() -> None:
    assert observe_compat() == GOLDEN_COMPAT


# --- Every derivation constant is pinned: changing any of them changes a golden value. ---


def observe_everything(monkeypatch: pytest.MonkeyPatch, generators: Registered) -> bool:
    """Whether every observation still equals its golden value."""
    return all((
        all(observe_block(s, k, generators) == GOLDEN_BLOCKS[(s, k)] for s, k in CASES),
        all(observe_root(s, generators) == GOLDEN_ROOTS[s] for s in GOLDEN_ROOTS),
        all(observe_loader_generators(s, k) == GOLDEN_LOADER_GENERATORS[(s, k)]
            for s, k in CASES),
        all(observe_folds(s, k, monkeypatch) == GOLDEN_FOLDS[(s, k)] for s, k in CASES[:3]),
        observe_workers(monkeypatch) == GOLDEN_WORKERS,
        observe_new_ranks(generators) == GOLDEN_NEW_RANKS,
    ))


def forget_derived_states() -> None:
    """Drop every cache of derived values, so that the next draws use the patched constants."""
    _block.clear_cache()
    _block._plain_keys.clear()


def mutated(value: Any) -> Any:
    if isinstance(value, bytes):
        return value[:-1] + bytes((value[-1] ^ 1,))
    if isinstance(value, dict):
        names = list(value)
        return {**value, names[0]: value[names[1]], names[1]: value[names[0]]}
    return value ^ (1 << (value.bit_length() - 1))  # the top bit: MT19937 uses only that of
    # its first key word


CONSTANTS = [
    name for name, value in vars(_derivation).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, (int, bytes, dict))
    and name not in ("DERIVATION_VERSION", "SEED_BYTES", "MT_WORDS")
]


def test_the_mutation_test_covers_the_constants() -> None:
    assert {"PERSON", "BLOCK", "PCG_INCREMENT", "TAG_RANK", "TAG_WORKER", "BUILTIN_SLOTS"} <= set(
        CONSTANTS
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", CONSTANTS)
def test_changing_a_derivation_constant_changes_golden_values(
    name: str, monkeypatch: pytest.MonkeyPatch, registered: Registered
) -> None:
    assert observe_everything(monkeypatch, registered)  # unpatched, everything matches
    monkeypatch.setattr(_derivation, name, mutated(getattr(_derivation, name)))
    forget_derived_states()
    try:
        assert not observe_everything(monkeypatch, registered)
    finally:
        monkeypatch.undo()
        forget_derived_states()

