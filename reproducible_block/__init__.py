"""Independent, reproducible random streams for each part of a PyTorch program.

``set_seed(s)`` seeds everything as the usual recipe does; inside ``ReproducibleBlock(key)``
every generator is in a state derived only from (root seed, key).
"""

from importlib.metadata import PackageNotFoundError, version

from ._block import ReproducibleBlock
from ._checkpoint import get_rng_state, load_rng_state
from ._errors import (
    BlockUsageError,
    NotSeededError,
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from ._keys import BlockKey
from ._seeding import MAX_SEED, get_random_seed, set_seed
from ._sources import (
    GeneratorSource,
    register_generator,
    registered_generators,
    unregister_generator,
)
from .compat import Reproducible_Block

try:
    __version__ = version("reproducible_block")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "MAX_SEED",
    "BlockKey",
    "BlockUsageError",
    "GeneratorSource",
    "NotSeededError",
    "ReproducibleBlock",
    "ReproducibleBlockError",
    "ReproducibleBlockTypeError",
    "ReproducibleBlockValueError",
    "Reproducible_Block",
    "__version__",
    "get_random_seed",
    "get_rng_state",
    "load_rng_state",
    "register_generator",
    "registered_generators",
    "set_seed",
    "unregister_generator",
]
