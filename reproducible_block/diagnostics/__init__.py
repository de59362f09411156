"""When two runs do not match: find where they parted, and why.

- ``track_consumption`` / ``assert_deterministic``: what a call drew, and whether it repeats.
- ``environment_report``: the versions, settings and generator states a run depends on.
- ``record_blocks`` / ``ledger_note`` and ``diff_runs`` (``python -m reproducible_block diff``):
  a ledger of every block's entry and exit, and the first record where two runs differ.
- ``trace_ops`` / ``compare_traces`` / ``find_nondeterminism``: the first torch op that differs.
"""

from reproducible_block._support.errors import NondeterminismError
from reproducible_block.diagnostics._arming import (
    LEDGER_ENVIRONMENT_VARIABLE,
    ledger_note,
    record_blocks,
)
from reproducible_block.diagnostics._consumption import (
    ConsumptionReport,
    assert_deterministic,
    track_consumption,
)
from reproducible_block.diagnostics._find import find_nondeterminism
from reproducible_block.diagnostics._ledger import BlockLedger
from reproducible_block.diagnostics._op_records import OpCall, OpDivergence, OpOutput, OpTrace
from reproducible_block.diagnostics._ops import compare_traces, trace_ops
from reproducible_block.diagnostics._read import read_ledger
from reproducible_block.diagnostics._report import EnvironmentReport, environment_report
from reproducible_block.diagnostics._run_diff import RunDiff, diff_runs

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
