"""sim/'s own import rules: the two simulators never import each other, the shared modules
import neither, and nothing inside sim/ is an import cycle.

Read from the source with ``ast`` (imports inside functions and under ``TYPE_CHECKING``
count: a cycle hidden in either still ties the modules together).
"""

from __future__ import annotations

import ast
from pathlib import Path

import bulkprov.sim

SIM = Path(bulkprov.sim.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module → the bulkprov.sim modules it imports (packages by their own name)."""
    modules: dict[str, Path] = {}
    for path in SIM.rglob("*.py"):
        parts = ("bulkprov", *path.relative_to(SIM.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("bulkprov.sim"):
                    module = resolve(target)
                    if module is not None and module != name:
                        found.add(module)
        graph[name] = found
    return graph


def test_the_simulators_do_not_import_each_other() -> None:
    graph = _imports()
    assert "bulkprov.sim.graph.tenant" in graph and "bulkprov.sim.scim.service" in graph
    for name, targets in graph.items():
        if name.startswith("bulkprov.sim.graph"):
            assert not {t for t in targets if t.startswith("bulkprov.sim.scim")}, name
        if name.startswith("bulkprov.sim.scim"):
            assert not {t for t in targets if t.startswith("bulkprov.sim.graph")}, name


def test_shared_modules_import_neither_simulator() -> None:
    graph = _imports()
    for shared in ("faults", "http", "users"):
        targets = graph[f"bulkprov.sim.{shared}"]
        assert not {
            t for t in targets if t.startswith(("bulkprov.sim.graph", "bulkprov.sim.scim"))
        }, shared


def test_no_import_cycle_inside_sim() -> None:
    graph = _imports()
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError(" -> ".join((*path[path.index(name) :], name)))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())
