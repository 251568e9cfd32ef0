"""The layer order of the README's "How the package is laid out": each layer imports only the layers
below it (function-level imports included), the import graph has no cycle, only ``cortex.training``
imports Lightning, and ``import cortex`` does not load torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cortex

SRC = Path(cortex.__file__).resolve().parent
README = Path(__file__).resolve().parents[1] / "README.md"

# lowest first; a module belongs to the layer of its area (the first name below ``cortex``)
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_atomic", "_validate", "_version", "_extras", "_cache", "_fit", "configs", "resources"),
    ("hub", "generation"),
    ("data", "corruption"),
    ("models", "_autoregister", ""),  # "": the package root, cortex/__init__.py
    ("tasks",),
    ("design", "training", "lenses"),  # DESIGN.md: train, design, read models; none imports another
    ("routing", "steering", "retrieval", "anomaly"),
    ("cli",),
]
LAYER_OF = {area: i for i, areas in enumerate(LAYERS) for area in areas}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = ["cortex", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every cortex module ``name`` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                found.add(target)
    return found


def _area(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_area_has_a_layer(graph):
    assert {_area(m) for m in graph} - set(LAYER_OF) == set()


def test_each_layer_imports_only_the_layers_below_it(graph):
    upward = sorted(f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
                    if LAYER_OF[_area(src)] < LAYER_OF[_area(dst)])
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules_or_areas(graph):
    assert _cycles(graph) == []
    areas: dict[str, set[str]] = {}
    for src, targets in graph.items():
        areas.setdefault(_area(src), set()).update(_area(t) for t in targets if _area(t) != _area(src))
    assert _cycles(areas) == []


def test_the_check_sees_function_level_and_relative_imports_and_finds_cycles(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("import os\n\ndef f():\n    from cortex.models import b\n    from . import c\n")
    modules = {"cortex.hub.a": source, "cortex.models.b": Path(), "cortex.hub.c": Path(), "cortex.models": Path()}
    assert _imports("cortex.hub.a", source, modules) == {"cortex.models.b", "cortex.hub.c"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_readme_lists_the_same_layer_order():
    text = README.read_text()
    block = text[text.index("## How the package is laid out"):]
    block = block[block.index("```") + 3:]
    lines = [ln for ln in block[: block.index("```")].splitlines() if ln.strip()]
    names = [set(re.findall(r"([a-z_]+)/", ln.split("  ")[0] + " " + ln)) for ln in reversed(lines)]
    for layer, (areas, listed) in enumerate(zip(LAYERS, names)):
        folders = {a for a in areas if a and (SRC / a).is_dir()}
        assert folders <= listed, f"README line {layer} (from the bottom) should name {sorted(folders)}"


def _loaded_after(statement: str, modules: list[str]) -> dict[str, bool]:
    code = f"import sys\n{statement}\nprint([m in sys.modules for m in {modules!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(zip(modules, eval(out.strip().splitlines()[-1])))


@pytest.mark.parametrize("package", ["cortex.models", "cortex.data", "cortex.tasks", "cortex.corruption",
                                     "cortex.hub", "cortex.design"])
def test_only_training_imports_lightning(package):
    assert _loaded_after(f"import {package}", ["lightning"]) == {"lightning": False}


def test_training_does_import_lightning_and_cortex_alone_stays_light():
    assert _loaded_after("import cortex.training.datamodules", ["lightning"]) == {"lightning": True}
    assert _loaded_after("import cortex", ["torch", "transformers"]) == {"torch": False, "transformers": False}
