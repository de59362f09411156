"""Independent, reproducible random streams for each part of a PyTorch program.

``set_seed(s)`` seeds everything as the usual recipe does; inside ``ReproducibleBlock(key)``
every generator is in a state derived only from (root seed, key).
"""

from importlib.metadata import PackageNotFoundError, version

from ._block import ReproducibleBlock
from ._checkpoint import get_rng_state, load_rng_state
from ._diagnostics import ConsumptionReport, assert_deterministic, track_consumption
from ._errors import (
    BlockUsageError,
    NondeterminismError,
    NotSeededError,
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from ._keys import BlockKey
from ._ledger import LEDGER_ENVIRONMENT_VARIABLE, BlockLedger, ledger_note, record_blocks
from ._nondeterminism import (
    OpCall,
    OpDivergence,
    OpOutput,
    OpTrace,
    compare_traces,
    find_nondeterminism,
    trace_ops,
)
from ._report import environment_report, format_environment_report
from ._run_diff import RunDiff, diff_runs, read_ledger
from ._seeding import MAX_SEED, SEED_ENVIRONMENT_VARIABLE, get_random_seed, set_seed
from ._sources import (
    GeneratorSource,
    register_generator,
    registered_generators,
    unregister_generator,
)
from ._workers import WorkerInit, seed_worker
from .compat import Reproducible_Block
from .deterministic import configure_deterministic_mode, deterministic_mode

try:
    __version__ = version("reproducible_block")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "LEDGER_ENVIRONMENT_VARIABLE",
    "MAX_SEED",
    "SEED_ENVIRONMENT_VARIABLE",
    "BlockKey",
    "BlockLedger",
    "BlockUsageError",
    "ConsumptionReport",
    "GeneratorSource",
    "NondeterminismError",
    "NotSeededError",
    "OpCall",
    "OpDivergence",
    "OpOutput",
    "OpTrace",
    "ReproducibleBlock",
    "ReproducibleBlockError",
    "ReproducibleBlockTypeError",
    "ReproducibleBlockValueError",
    "Reproducible_Block",
    "RunDiff",
    "WorkerInit",
    "__version__",
    "assert_deterministic",
    "compare_traces",
    "configure_deterministic_mode",
    "deterministic_mode",
    "diff_runs",
    "environment_report",
    "find_nondeterminism",
    "format_environment_report",
    "get_random_seed",
    "get_rng_state",
    "ledger_note",
    "load_rng_state",
    "read_ledger",
    "record_blocks",
    "register_generator",
    "registered_generators",
    "seed_worker",
    "set_seed",
    "trace_ops",
    "track_consumption",
    "unregister_generator",
]
