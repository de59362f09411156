"""``python -m reproducible_block``: print the environment report (``--json`` for logs).

``--version`` prints the installed version (from the package metadata, which pyproject.toml's
``version`` sets) and exits. ``python -m reproducible_block diff RUN_A RUN_B [--json]`` compares
two runs' block ledgers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from reproducible_block._support.errors import ReproducibleBlockError
from reproducible_block._support.version import __version__
from reproducible_block.diagnostics._report import environment_report
from reproducible_block.diagnostics._run_diff import diff_runs


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report as a table, or as JSON with ``--json``; return the exit status."""
    arguments_given = list(sys.argv[1:] if argv is None else argv)
    if arguments_given[:1] == ["diff"]:
        return diff_main(arguments_given[1:])
    parser = argparse.ArgumentParser(
        prog="python -m reproducible_block",
        description="Report the versions, deterministic settings, environment variables and "
        "generator states that reproducibility depends on. Initialises nothing.",
        epilog="To compare two runs' block ledgers: python -m reproducible_block diff RUN_A RUN_B "
        "(see diff --help).",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON, for experiment logs"
    )
    parser.add_argument("--version", action="version", version=f"reproducible_block {__version__}")
    arguments = parser.parse_args(argv)
    report = environment_report()
    print(json.dumps(report, indent=2) if arguments.json else str(report))
    return 0


def diff_main(argv: Sequence[str]) -> int:
    """``diff RUN_A RUN_B``: 0 when the runs agree, 1 when they differ, 2 when unusable."""
    parser = argparse.ArgumentParser(
        prog="python -m reproducible_block diff",
        description="Compare two runs' block ledgers (written by record_blocks() or "
        "REPRODUCIBLE_BLOCK_LEDGER) and report the first record where they part. Exit status: "
        "0 the runs agree, 1 they differ, 2 bad usage or an unreadable ledger.",
    )
    parser.add_argument(
        "run_a",
        metavar="RUN_A",
        help="a ledger file, a folder of per-rank ledgers, or the path given "
        "to record_blocks() / REPRODUCIBLE_BLOCK_LEDGER",
    )
    parser.add_argument("run_b", metavar="RUN_B", help="the other run, in the same forms")
    parser.add_argument("--json", action="store_true", help="print the result as JSON, for tools")
    arguments = parser.parse_args(argv)
    try:
        found = diff_runs(arguments.run_a, arguments.run_b)
    except ReproducibleBlockError as error:  # an unreadable or unusable ledger
        print(f"python -m reproducible_block diff: {error}", file=sys.stderr)
        return 2
    print(json.dumps(found.as_dict(), indent=2) if arguments.json else found.message)
    return 0 if found.identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
