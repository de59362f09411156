"""Independent, reproducible random streams for each part of a PyTorch program.

``set_seed(s)`` seeds everything as the usual recipe does; inside ``ReproducibleBlock(key)``
every generator is in a state derived only from (root seed, key).

The package in layers, each importing only from the ones below it:

1. ``_support``: plumbing (errors, checks, warnings, distributed and compile helpers);
   ``_fast``: raw-memory speed tricks behind one switch (``REPRODUCIBLE_BLOCK_FAST_PATHS=0``).
2. ``_streams``: the stream contract, pure functions of (root seed, key), versioned.
3. ``_sources``: one class per generator kind (save, switch, seed, checkpoint).
4. ``_blocks``: the switch, the only code that changes global generators; on it the
   features ``_checkpoint``, ``_stateful`` and ``_data``.
5. Public modules: this root, ``deterministic``, ``testing``, ``compat`` and ``diagnostics``.
"""

from reproducible_block import diagnostics as diagnostics
from reproducible_block._blocks.block import ReproducibleBlock
from reproducible_block._blocks.seeding import (
    register_generator,
    registered_generators,
    set_seed,
    unregister_generator,
)
from reproducible_block._blocks.stack import set_block_wait_timeout
from reproducible_block._checkpoint import get_rng_state, load_rng_state
from reproducible_block._data import (
    ReproducibleDataset,
    ReproducibleIterableDataset,
    ReproducibleSampler,
    SampleIndex,
    WorkerInit,
    numpy_generator,
    seed_worker,
    torch_generator,
)
from reproducible_block._sources import GeneratorSource
from reproducible_block._stateful import RNGState
from reproducible_block._streams.derivation import DERIVATION_VERSION
from reproducible_block._streams.keys import BlockKey
from reproducible_block._streams.root import MAX_SEED, SEED_ENVIRONMENT_VARIABLE
from reproducible_block._support.errors import (
    BlockUsageError,
    NotSeededError,
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from reproducible_block._support.version import __version__
from reproducible_block._support.warnings import RepetitionWarning
from reproducible_block.compat import Reproducible_Block
from reproducible_block.deterministic import configure_deterministic_mode, deterministic_mode

__all__ = [
    "DERIVATION_VERSION",
    "MAX_SEED",
    "SEED_ENVIRONMENT_VARIABLE",
    "BlockKey",
    "BlockUsageError",
    "GeneratorSource",
    "NotSeededError",
    "RNGState",
    "RepetitionWarning",
    "ReproducibleBlock",
    "ReproducibleBlockError",
    "ReproducibleBlockTypeError",
    "ReproducibleBlockValueError",
    "ReproducibleDataset",
    "ReproducibleIterableDataset",
    "ReproducibleSampler",
    "Reproducible_Block",
    "SampleIndex",
    "WorkerInit",
    "__version__",
    "configure_deterministic_mode",
    "deterministic_mode",
    "get_rng_state",
    "load_rng_state",
    "numpy_generator",
    "register_generator",
    "registered_generators",
    "seed_worker",
    "set_block_wait_timeout",
    "set_seed",
    "torch_generator",
    "unregister_generator",
]
