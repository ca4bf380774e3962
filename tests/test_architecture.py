"""The package graph of datamill has no cycle, function-local imports included.

Every module under ``src/datamill`` is read with ``ast``; every import in it counts — at the top,
inside functions (a lazy import hides a cycle from Python, not from the design) and under
``if TYPE_CHECKING:`` (a type a package needs is a dependency too). Each import is mapped to
the package it lands in (``datamill.pipeline``, ``datamill.io``, ...); imports within one package
and of top-level modules (``datamill.rows``, ``datamill.errors``, ...) are not edges.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import datamill

ROOT = Path(datamill.__file__).parent

#: (importing package, imported package) → where: "file:line"
Edges = dict[tuple[str, str], list[str]]


def _module_parts(path: Path, root: Path) -> tuple[list[str], bool]:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def _targets(node: ast.AST, parts: list[str], is_package: bool) -> list[list[str]]:
    """The dotted names an import statement reaches (``from . import x`` reaches ``pkg.x``)."""
    if isinstance(node, ast.Import):
        return [alias.name.split(".") for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - (node.level - 1)]
    else:
        base = []
    module = base + (node.module.split(".") if node.module else [])
    return [module + [alias.name] for alias in node.names]


def package_edges(root: Path = ROOT) -> Edges:
    """Imports from one package of ``root`` into another, with where each is written."""
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    edges: Edges = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        parts, is_package = _module_parts(path, root)
        if len(parts) < 2 or parts[1] not in packages:
            continue
        source = parts[1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, parts, is_package):
                package = target[1] if len(target) > 1 and target[0] == "datamill" else None
                if package in packages and package != source:
                    where = f"{path.relative_to(root.parent)}:{node.lineno}"  # type: ignore[attr-defined]
                    edges[(source, package)].append(where)
    return dict(edges)


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle of packages (``[a, b, ..., a]``), or None."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_package_graph_has_no_cycle() -> None:
    edges = package_edges()
    assert len(edges) > 10  # the walk found the real imports
    cycle = find_cycle(edges)
    if cycle is not None:
        lines = [
            f"  datamill.{a} -> datamill.{b}: {', '.join(edges[(a, b)][:4])}"
            for a, b in zip(cycle, cycle[1:], strict=False)
        ]
        raise AssertionError("package cycle " + " -> ".join(cycle) + "\n" + "\n".join(lines))


def test_the_walk_counts_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "datamill"
    for name in ("alpha", "beta", "gamma"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "alpha" / "a.py").write_text("from ..beta import b\n")
    (pkg / "beta" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from datamill.gamma.c import C\n"
        "def f():\n    from ..alpha import a\n"
    )
    edges = package_edges(pkg)
    assert set(edges) == {("alpha", "beta"), ("beta", "gamma"), ("beta", "alpha")}
    assert edges[("beta", "alpha")] == ["datamill/beta/b.py:5"]
    assert find_cycle(edges) == ["alpha", "beta", "alpha"]
    assert find_cycle({("alpha", "beta"): [], ("beta", "gamma"): []}) is None
