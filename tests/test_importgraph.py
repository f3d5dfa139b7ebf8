"""The package's layers import downwards only: no import cycle, config/ at the bottom, and
function-level imports only where a late import is the point (scripts/importgraph.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("importgraph", REPO / "scripts" / "importgraph.py")
importgraph = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["importgraph"] = importgraph
_spec.loader.exec_module(importgraph)  # type: ignore[union-attr]

PACKAGE = REPO / "nutups"


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_script_finds_a_cycle_where_there_is_one(tmp_path):
    """The detector itself: a package whose __init__ imports, inside a function, a module that
    imports one of the package's modules (the shape of the old config cycle)."""
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("def late():\n    from ..high import thing\n")
    (pkg / "low" / "schema.py").write_text("X = 1\n")
    (pkg / "high.py").write_text("from .low.schema import X\nthing = X\n")
    # pkg.high imports pkg.low.schema, which runs pkg.low's __init__ first
    assert importgraph.cycles(importgraph.graph_of(importgraph.package_edges(pkg))) == [["pkg.high", "pkg.low"]]


def test_no_import_cycle():
    assert importgraph.package_cycles(PACKAGE) == []


def test_the_script_runs_both_ways_and_says_no_cycle():
    for argv in (["-m", "scripts.importgraph"], [str(REPO / "scripts" / "importgraph.py")]):
        run = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr
        assert "# cycles (0)" in run.stdout
        assert "nutups.configuration -> " in run.stdout


def test_config_imports_nothing_above_it():
    graph = importgraph.graph_of(importgraph.package_edges(PACKAGE))
    below = reachable(graph, "nutups.config")
    assert below <= {m for m in graph if m.startswith("nutups.config.")} | {"nutups.parseconf"}, below


def test_the_event_detector_loads_no_driver_or_hardware():
    graph = importgraph.graph_of(importgraph.package_edges(PACKAGE))
    loaded = reachable(graph, "nutups.events.detector")
    assert not [m for m in loaded if m.startswith(("nutups.drivers", "nutups.hardware"))], loaded


def test_function_level_imports_only_where_late_is_the_point():
    """The CLI loads each command's layer when it runs; the modules that load a heavy library
    (aiohttp for the web, apprise for notifications) are loaded only when asked for.  Optional
    extras (smbus2, gpiod) are not of the package."""
    heavy = {"nutups.web.service", "nutups.events.notifications", "nutups.events.notify_targets"}
    late = [(e.source, e.target) for e in importgraph.function_level_imports(PACKAGE)]
    assert [(src, dst) for src, dst in late if src != "nutups.cli" and dst not in heavy] == []
