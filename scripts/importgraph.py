"""Prints the nutups package's import graph, its function-level imports and its import cycles.

Run from the repository root: ``python -m scripts.importgraph`` or ``python scripts/importgraph.py``
(``--package DIR`` for another tree).  The graph is read from the source (ast), not by importing:
an edge A -> B is any ``import``/``from ... import`` in A that names module B of the package,
at module level or inside a function (``if TYPE_CHECKING:`` blocks are left out: they never run).
A cycle is a strongly connected component of more than one module, or a module importing itself.
Exit status 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function_level: bool  # inside a def: runs when called, not when the module loads
    implied: bool = False  # the package __init__ that importing one of its modules runs first


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its __init__)."""
    base = package_dir.parent
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """(node, inside_function) for every import that can run."""
    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for orelse in child.orelse:
                    yield from walk_one(orelse, in_function)
                continue
            yield from walk_one(child, in_function)

    def walk_one(node: ast.AST, in_function: bool):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from walk(node, inner)

    yield from walk(tree, False)


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or is inside of."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def edges_of(module: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    out = []
    for node, in_function in _imports(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                prefix = f"{base}.{node.module}" if node.module else base
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule sub when there is one
            targets = [f"{prefix}.{alias.name}" for alias in node.names] or [prefix]
            targets = [t if t in known else prefix for t in targets]
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is None or resolved == module:
                continue
            out.append(Edge(module, resolved, node.lineno, in_function))
            # importing pkg.sub runs pkg/__init__ first: the importer depends on it too (unless
            # the importer is inside pkg, which its own loading already ran)
            package = resolved.rpartition(".")[0]
            while package:
                if package in known and package != module and not module.startswith(package + "."):
                    out.append(Edge(module, package, node.lineno, in_function, implied=True))
                package = package.rpartition(".")[0]
    return sorted(set(out), key=lambda e: (e.target, e.line))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found, key=lambda c: (-len(c), c))


def package_edges(package_dir: Path) -> list[Edge]:
    known = module_names(package_dir)
    edges: list[Edge] = []
    for module, path in known.items():
        edges.extend(edges_of(module, path, known))
    return edges


def graph_of(edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    return graph


def package_cycles(package_dir: Path = ROOT / "nutups") -> list[list[str]]:
    """The import cycles of the package (module-level and function-level imports alike)."""
    return cycles(graph_of(package_edges(package_dir)))


def function_level_imports(package_dir: Path = ROOT / "nutups") -> list[Edge]:
    """The imports inside functions (each once, by the module it names)."""
    return [e for e in package_edges(package_dir) if e.function_level and not e.implied]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.importgraph", description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / "nutups", help="the package directory")
    args = parser.parse_args(argv)
    edges = package_edges(args.package)
    graph = graph_of(edges)
    print(f"# import graph of {args.package.name} ({len(graph)} modules, "
          f"{sum(len(v) for v in graph.values())} edges; * = function-level import)")
    by_source: dict[str, list[Edge]] = {}
    for e in edges:
        by_source.setdefault(e.source, []).append(e)
    for module in sorted(graph):
        targets = sorted({(e.target, e.function_level) for e in by_source.get(module, [])})
        names = sorted({t for t, _ in targets})
        shown = [t + ("*" if all(fl for tt, fl in targets if tt == t) else "") for t in names]
        print(f"{module} -> {', '.join(shown) if shown else '(nothing of the package)'}")
    late = [e for e in edges if e.function_level and not e.implied]
    print(f"\n# function-level imports ({len(late)})")
    for e in late:
        print(f"{e.source}:{e.line} -> {e.target}")
    found = cycles(graph)
    print(f"\n# cycles ({len(found)})")
    for component in found:
        print(f"{len(component)} modules: {' '.join(component)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
