"""``python -m reproducible_block``: print the environment report (``--json`` for logs).

``--version`` prints the installed version (from the package metadata, which pyproject.toml's
``version`` sets) and exits.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ._report import environment_report, format_environment_report
from ._version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report as a table, or as JSON with ``--json``; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reproducible_block",
        description="Report the versions, deterministic settings, environment variables and "
        "generator states that reproducibility depends on. Initialises nothing.",
    )
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON, for experiment logs")
    parser.add_argument("--version", action="version", version=f"reproducible_block {__version__}")
    arguments = parser.parse_args(argv)
    report = environment_report()
    print(json.dumps(report, indent=2) if arguments.json else format_environment_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
