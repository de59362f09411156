"""When two runs do not match: find where they parted, and why.

- ``track_consumption`` / ``assert_deterministic``: what a call drew, and whether it repeats.
- ``environment_report``: the versions, settings and generator states a run depends on.
- ``record_blocks`` / ``ledger_note`` and ``diff_runs`` (``python -m reproducible_block diff``):
  a ledger of every block's entry and exit, and the first record where two runs differ.
- ``trace_ops`` / ``compare_traces`` / ``find_nondeterminism``: the first torch op that differs.
"""

from reproducible_block._support.errors import NondeterminismError
from reproducible_block.diagnostics._consumption import (
    ConsumptionReport,
    assert_deterministic,
    track_consumption,
)
from reproducible_block.diagnostics._ledger import (
    LEDGER_ENVIRONMENT_VARIABLE,
    BlockLedger,
    ledger_note,
    record_blocks,
)
from reproducible_block.diagnostics._ops import (
    OpCall,
    OpDivergence,
    OpOutput,
    OpTrace,
    compare_traces,
    find_nondeterminism,
    trace_ops,
)
from reproducible_block.diagnostics._report import EnvironmentReport, environment_report
from reproducible_block.diagnostics._run_diff import RunDiff, diff_runs, read_ledger

__all__ = [
    "LEDGER_ENVIRONMENT_VARIABLE",
    "BlockLedger",
    "ConsumptionReport",
    "EnvironmentReport",
    "NondeterminismError",
    "OpCall",
    "OpDivergence",
    "OpOutput",
    "OpTrace",
    "RunDiff",
    "assert_deterministic",
    "compare_traces",
    "diff_runs",
    "environment_report",
    "find_nondeterminism",
    "ledger_note",
    "read_ledger",
    "record_blocks",
    "trace_ops",
    "track_consumption",
]
