"""The core's architecture, enforced: layers import downwards only, no import cycles, no plugin imports.

Every ``import`` / ``from ... import`` in ``core/medprobe`` counts, including the lazy ones inside
functions (a lazy import is still a dependency). The layers are the ones CONTRIBUTING.md's
"Architecture" section documents; a module may import modules of its own layer or below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"

#: layer -> module prefixes (the longest matching prefix decides a module's layer)
LAYERS: dict[int, tuple[str, ...]] = {
    0: ("medprobe.registry", "medprobe.hookspecs", "medprobe.plugins", "medprobe.cards", "medprobe.adapter",
        "medprobe.layermap", "medprobe.runtime", "medprobe.progress", "medprobe.prompts",
        "medprobe.features.capture", "medprobe.features.readouts", "medprobe.features.store",
        "medprobe.features"),
    1: ("medprobe.features.plan", "medprobe.features.engine", "medprobe.features.provenance", "medprobe.models",
        "medprobe.datasets"),
    2: ("medprobe.features.extract", "medprobe.features.distributed", "medprobe.tasks", "medprobe.analysis"),
    3: ("medprobe.api", "medprobe.cli", "medprobe.commands", "medprobe.grid", "medprobe.testing", "medprobe"),
}
NAMES = {0: "contracts", 1: "engine", 2: "tasks", 3: "interfaces"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, layer = -1, None
    for number, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), number
    assert layer is not None, f"{module} is in no layer: add it to LAYERS and to CONTRIBUTING.md"
    return layer


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((CORE / "medprobe").rglob("*.py"))}


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of the core that ``module`` imports (a ``from pkg import name`` counts as
    ``pkg.name`` when that is a module), plus every plugin package it names."""
    is_pkg = path.name == "__init__.py"
    package = module.split(".") if is_pkg else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        for t in targets:
            if t.startswith("medprobe_"):
                out.add(t.split(".")[0])
            while t and t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in known and t != module:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def test_every_core_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_the_core_imports_no_plugin(graph):
    bad = {m: sorted(d for d in deps if d.startswith("medprobe_")) for m, deps in graph.items()}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"core modules importing plugins: {bad}"


def test_imports_point_down_the_layers(graph):
    bad = []
    for module, deps in graph.items():
        for dep in deps:
            if dep.startswith("medprobe_") or dep == "medprobe":
                continue
            if layer_of(dep) > layer_of(module):
                bad.append(f"{module} ({NAMES[layer_of(module)]}) imports {dep} ({NAMES[layer_of(dep)]})")
    assert not bad, "imports pointing up the layers:\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components over module-level dependencies
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_sees_lazy_imports(graph):
    # the oracle for the parser: extract imports prepare_model inside its function body
    assert "medprobe.models.prepare" in graph["medprobe.features.extract"]
