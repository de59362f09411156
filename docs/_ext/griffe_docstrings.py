"""A Griffe extension that makes the library's docstrings render as Markdown in the API pages.

The docstrings are written for ``help()`` and doctest: Sphinx roles (``:func:`set_seed```) for
cross-references and bare ``>>>`` examples. Before mkdocstrings parses them (Google style):

* a role naming a public object becomes an autorefs link to where the reference pages document
  it (``[`set_seed`][reproducible_block.set_seed]``); any other role becomes inline code;
* each run of doctest lines (from a ``>>>`` line to the next blank line) becomes a fenced
  ``pycon`` block; without it Markdown would read ``>>>`` as nested block quotes.

Every public name is documented once, in the public module whose ``__all__`` lists it:
``reproducible_block.compat``, ``reproducible_block.deterministic``,
``reproducible_block.diagnostics`` or ``reproducible_block.testing``, else the package root
(a name both a submodule and the root export keeps the submodule's entry).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import griffe

PACKAGE = "reproducible_block"
PUBLIC_SUBMODULES = ("compat", "deterministic", "diagnostics", "testing")
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|exc|mod|obj):`(~?)([\w.]+)`")
DOCTEST_START = re.compile(r"^>>> |^>>>$")


def documented_paths() -> dict[str, str]:
    """Public name -> the identifier its reference entry has."""
    root = importlib.import_module(PACKAGE)
    paths: dict[str, str] = {}
    for submodule in PUBLIC_SUBMODULES:
        module = importlib.import_module(f"{PACKAGE}.{submodule}")
        for name in module.__all__:
            paths[name] = f"{module.__name__}.{name}"
    for name in root.__all__:
        paths.setdefault(name, f"{PACKAGE}.{name}")  # re-exports keep their submodule's entry
    return paths


def _link(match: re.Match[str], paths: dict[str, str]) -> str:
    short, target = match.group(1) == "~", match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    parts = target.split(".")
    prefixes = {PACKAGE, *PUBLIC_SUBMODULES}
    for index, part in enumerate(parts):
        if part in paths:
            identifier = ".".join([paths[part], *parts[index + 1 :]])
            return f"[`{shown}`][{identifier}]"
        if part not in prefixes:
            break
    return f"`{shown}`"


def fence_doctests(text: str) -> str:
    """Wrap each top-level run of doctest lines in a ``pycon`` code fence."""
    out: list[str] = []
    in_example = in_fence = False
    for line in text.splitlines():
        if not in_example and line.startswith("```"):
            in_fence = not in_fence
        elif not in_example and not in_fence and DOCTEST_START.match(line):
            out.append("```pycon")
            in_example = True
        elif in_example and not line.strip():
            out.append("```")
            in_example = False
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


def convert(text: str, paths: dict[str, str]) -> str:
    """The Markdown form of one docstring."""
    return fence_doctests(ROLE.sub(lambda match: _link(match, paths), text))


class DocstringsToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once the object tree is complete."""

    def __init__(self) -> None:
        self._paths: dict[str, str] | None = None

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or not obj.path.startswith(PACKAGE):
            return
        if self._paths is None:
            self._paths = documented_paths()
        obj.docstring.value = convert(obj.docstring.value, self._paths)
