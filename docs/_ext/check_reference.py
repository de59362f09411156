"""After `mkdocs build`: every public name has an entry in the API reference.

Reads the inventory mkdocstrings writes (``site/objects.inv``) and checks that each name in the
``__all__`` of ``reproducible_block`` and of its public submodules (``compat``, ``deterministic``,
``diagnostics``, ``testing``: ``PUBLIC_SUBMODULES``) is documented where cross-references point
to it. A name left out of the reference pages, or hidden by a rendering option, fails
``make docs``.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

from griffe_docstrings import documented_paths


def inventory_names(path: Path) -> set[str]:
    """The object names in a Sphinx inventory (version 2: four header lines, then zlib)."""
    data = path.read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = data.index(b"\n", header_end) + 1
    lines = zlib.decompress(data[header_end:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if line}


def main() -> int:
    inventory = Path(sys.argv[1] if len(sys.argv) > 1 else "site/objects.inv")
    names = inventory_names(inventory)
    missing = sorted(path for path in documented_paths().values() if path not in names)
    if missing:
        print(f"not in the API reference: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"API reference: all {len(documented_paths())} public names documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
