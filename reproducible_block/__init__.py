"""Independent, reproducible random streams for each part of a PyTorch program.

``set_seed(s)`` seeds everything as the usual recipe does; inside ``ReproducibleBlock(key)``
every generator is in a state derived only from (root seed, key).
"""

from ._block import ReproducibleBlock
from ._checkpoint import get_rng_state, load_rng_state
from ._derivation import DERIVATION_VERSION
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
from ._root import MAX_SEED, SEED_ENVIRONMENT_VARIABLE
from ._run_diff import RunDiff, diff_runs, read_ledger
from ._seeding import (
    get_random_seed,
    register_generator,
    registered_generators,
    set_seed,
    unregister_generator,
)
from ._sources import GeneratorSource
from ._stack import get_block_wait_timeout, set_block_wait_timeout
from ._version import __version__
from ._workers import WorkerInit, seed_worker
from .compat import Reproducible_Block
from .deterministic import configure_deterministic_mode, deterministic_mode

__all__ = [
    "DERIVATION_VERSION",
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
    "get_block_wait_timeout",
    "get_random_seed",
    "get_rng_state",
    "ledger_note",
    "load_rng_state",
    "read_ledger",
    "record_blocks",
    "register_generator",
    "registered_generators",
    "seed_worker",
    "set_block_wait_timeout",
    "set_seed",
    "trace_ops",
    "track_consumption",
    "unregister_generator",
]
