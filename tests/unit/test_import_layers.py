"""The layer rules of the design notes, read from the code's own imports: every import in
`src/dlms` goes to a layer below its own or to its own layer without a cycle, nothing in the
library imports the command line or the experiments, a backbone knows no diffusion, a schedule
is maths of t, and a method has no loop."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dlms

ROOT = Path(dlms.__file__).parent

# Bottom to top. A unit is a subpackage of dlms, or a module directly in it.
LAYERS = [
    {"errors", "checks", "jsonsafe", "paths", "hub", "registry", "method_options", "config", "devices", "reporting",
     "data"},
    {"schedules", "backbones"},
    {"methods"},
    {"samplers", "likelihood", "scoring", "checkpoint", "run_folder", "assembly", "prompting", "infill", "drafts"},
    {"model", "training", "trainer"},
    {"eval", "dglm", "distill", "generation", "serving"},
    {"experiments"},
    {"cli", "__init__"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}
# What a role must never import (DESIGN.md, "Which way imports flow").
NEVER = {
    "backbones": {"schedules", "methods", "samplers", "training", "likelihood", "scoring"},
    "schedules": set(LAYER) - {"schedules", "registry", "errors"},
    "methods": {"samplers", "training", "trainer", "model"},
}


def unit_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def imports() -> dict[tuple[str, str], set[str]]:
    """(importing unit, imported unit) -> the files that make the edge."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        package = list(path.relative_to(ROOT).parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + [p for p in (node.module or "").split(".") if p]
                names = target[:1] if target else [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlms."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("dlms.")]
            else:
                continue
            for name in names:
                if unit_of(path) != name:
                    edges[(unit_of(path), name)].add(str(path.relative_to(ROOT)))
    return edges


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")}
    assert units - set(LAYER) == set(), "give each new module a layer in LAYERS"


def test_imports_never_run_back_up():
    up = {f"{a} -> {b} ({', '.join(sorted(files))})" for (a, b), files in imports().items()
          if b in LAYER and LAYER[b] > LAYER[a]}
    assert up == set()


def test_no_cycles_between_units():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in imports():
        graph[a].add(b)
    seen: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        seen[node] = 1
        for nxt in graph[node]:
            assert seen.get(nxt) != 1, f"import cycle: {' -> '.join(trail + [node, nxt])}"
            if nxt not in seen:
                visit(nxt, trail + [node])
        seen[node] = 2

    for node in list(graph):
        if node not in seen:
            visit(node, [])


def test_the_roles_import_only_what_they_may():
    bad = {f"{a} -> {b}" for (a, b) in imports() if b in NEVER.get(a, set())}
    assert bad == set()
    assert not [a for (a, b) in imports() if b in ("cli", "experiments") and a not in ("cli", "experiments")]
