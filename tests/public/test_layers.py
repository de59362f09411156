"""The package's layers: every import runs down (or within a layer), and there are no cycles.

The root docstring names the layers; this test keeps the folders honest. Function-local imports
count too (a lazy import that runs up is still an arrow up).
"""

from __future__ import annotations

import ast
from pathlib import Path

import reproducible_block

PACKAGE = Path(reproducible_block.__file__).parent

#: Bottom up. A module's layer is that of its first path component.
LAYERS: dict[str, int] = {
    "_support": 0,
    "_fast": 1,
    "_streams": 2,
    "_sources": 3,
    "_blocks": 4,
    "_checkpoint": 5,
    "_data": 5,
    "_stateful": 5,
    "deterministic": 6,
    "testing": 6,
    "compat": 6,
    "diagnostics": 6,
    "__init__": 6,
    "__main__": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (absolute ``reproducible_block.x.y`` names, without
    the package prefix), including imports inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "reproducible_block":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("reproducible_block."):
                module = node.module.removeprefix("reproducible_block.")
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("reproducible_block.")
                for alias in node.names
                if alias.name.startswith("reproducible_block.")
            )
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(path) for name, path in modules.items()}


def test_every_module_is_in_a_named_layer() -> None:
    unknown = sorted(name for name in _graph() if name.split(".")[0] not in LAYERS)
    assert unknown == []


def test_every_import_runs_down_or_within_its_layer() -> None:
    graph = _graph()
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if (target in graph or f"{target}.__init__" in graph) and _layer(target) > _layer(name)
    )
    assert upward == []


def test_the_import_graph_has_no_cycles() -> None:
    graph = _graph()

    def resolve(target: str) -> str | None:
        # ``from reproducible_block._blocks import stack`` names the module _blocks.stack.
        for candidate in (target, f"{target}.__init__"):
            if candidate in graph:
                return candidate
        return None

    edges = {
        name: {found for target in targets if (found := resolve(target)) not in (None, name)}
        for name, targets in graph.items()
    }
    # A package's __init__ importing its own modules is not a cycle of code.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.endswith("__init__") and node.startswith(nxt.removesuffix("__init__")):
                continue
            if state.get(nxt) == 1:
                cycle.extend([*path, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for node in sorted(edges):
        if state.get(node) is None and visit(node, []):
            break
    assert cycle == []


def test_the_root_keeps_an_everyday_api_and_diagnostics_have_their_own_package() -> None:
    from reproducible_block import diagnostics

    assert 20 <= len(reproducible_block.__all__) <= 32
    assert "Reproducible_Block" in reproducible_block.__all__  # 0.0.1's import keeps working
    assert set(reproducible_block.__all__).isdisjoint(diagnostics.__all__)
    for name in (*reproducible_block.__all__, *diagnostics.__all__):
        assert (
            name == "__version__"
            or hasattr(reproducible_block, name)
            or (hasattr(diagnostics, name))
        )
