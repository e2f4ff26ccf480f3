"""The layout shows the architecture: the production path depends only downward, and no modules
import each other in a circle.

    gateway  ->  dialog  ->  providers  ->  audio

A package may import itself and any package to its right, never one to its left, and never the tools
(`loadgen`, `emulators`, `bench`, `tests`), which may import anything of the product. Every import
counts, the ones inside functions too: a lazy import is still a dependency, and two modules that
import each other lazily are still a circle.

The command line (`voicegate`, also `python -m gateway`) is the one entry above all of it: it hands each
command to the part that serves it, the tools included, and nothing imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("gateway", "dialog", "providers", "audio")  # each may import only those after it
TOOLS = ("loadgen", "emulators")
ENTRY = frozenset({"gateway.cli", "gateway.__main__"})


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in LAYERS + TOOLS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports (a `from package import module` names the module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` depends on the module; `from module import name` on the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_production_packages_import_only_downward():
    wrong = []
    for module, targets in _graph().items():
        if module not in ENTRY:
            wrong += [f"{module} -> {t}" for t in sorted(targets & ENTRY)]
        top = module.split(".")[0]
        if top not in LAYERS or module in ENTRY:
            continue
        allowed = set(LAYERS[LAYERS.index(top):])
        wrong += [f"{module} -> {t}" for t in sorted(targets) if t.split(".")[0] not in allowed]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = _graph()
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not circles, "modules importing each other in a circle: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_walker_sees_imports():
    """The checks above would pass on an empty graph: make sure the walk finds real edges."""
    graph = _graph()
    assert "dialog.events" in graph["gateway.session"]
    assert "providers.settings" in graph["providers.deepgram_stt"]
    assert "loadgen.stats" in graph["loadgen.wire_hops"]


def test_test_modules_have_unique_names():
    """pytest imports test modules by their file name (the test folders are not packages), so two
    `test_x.py` in different folders stop the whole run at collection on a clean checkout."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, clashes
