"""The import graph of ``mmapp/``: no circle, no import from a lower layer to a higher one, no
import between the sibling packages ``models/``, ``data/`` and ``metrics/``, and no file over 350
lines. Imports are read with ``ast`` (those inside functions count too), so nothing is imported.

Layers, lowest first (docs/architecture.md draws them):

0. foundation: errors, atomic, config, run_config, vocab, words, inputs, images, grid_cells, vqa_normalize,
   distributed, plotting, memory
1. components: ``models/``, ``data/``, ``metrics/`` (siblings: none imports another)
2. training parts and model files: losses, engine, ood, checkpoint, ``speed/``
3. runs and model use: ``tasks/``, trainer, inference, decode_split, model_card
4. front ends: ``app/``, http_api, ``commands/``, cli, ``__main__``
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmapp"
MAX_LINES = 350

LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "atomic", "config", "run_config", "vocab", "words", "inputs", "images", "grid_cells", "vqa_normalize",
                     "distributed", "plotting", "memory"], 0),
    **dict.fromkeys(["models", "data", "metrics"], 1),
    **dict.fromkeys(["losses", "engine", "ood", "checkpoint", "speed"], 2),
    **dict.fromkeys(["tasks", "trainer", "inference", "decode_split", "model_card"], 3),
    **dict.fromkeys(["app", "http_api", "commands", "cli", "__main__"], 4),
}
SIBLINGS = {"models", "data", "metrics"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The ``mmapp`` modules ``path`` imports (``from mmapp.x import y`` counts as ``mmapp.x.y`` when
    that is a module, else as ``mmapp.x``), anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs or {base})
    return {m for m in found if m in known and m != name}


def top(module: str) -> str:
    """``mmapp.data.fields`` -> ``data``: the layer key of a module."""
    return module.split(".")[1] if "." in module else "__init__"


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(path, known) for name, path in found.items()}


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (circle := visit(start)):
            return circle
    return None


def test_every_module_has_a_layer() -> None:
    missing = sorted({top(m) for m in modules()} - set(LAYERS) - {"__init__"})
    assert not missing, f"give these a layer in LAYERS (and docs/architecture.md): {missing}"


def test_no_import_circle() -> None:
    edges = graph()
    # Importing mmapp.a.b runs mmapp/a/__init__.py first: a package's own __init__ is not an edge.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    assert find_circle(edges) is None, " -> ".join(find_circle(edges) or [])


def test_no_import_goes_up_a_layer_or_across_siblings() -> None:
    wrong = []
    for module, targets in graph().items():
        if top(module) == "__init__":
            continue
        for target in targets:
            if top(target) == "__init__":
                continue
            here, there = LAYERS[top(module)], LAYERS[top(target)]
            if there > here or (top(module) in SIBLINGS and top(target) in SIBLINGS and top(module) != top(target)):
                wrong.append(f"{module} (layer {here}) imports {target} (layer {there})")
    assert not wrong, "\n".join(wrong)


def test_no_file_is_over_the_line_limit() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("edges, circle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_the_circle_finder_finds_circles(edges, circle) -> None:
    assert find_circle(edges) == circle


def test_imports_inside_functions_and_relative_imports_count(tmp_path, monkeypatch) -> None:
    package = tmp_path / "mmapp"
    (package / "data").mkdir(parents=True)
    for name in ("__init__.py", "data/__init__.py", "data/x.py", "errors.py"):
        (package / name).write_text("")
    source = package / "data" / "y.py"
    source.write_text("def f():\n    from mmapp.metrics import grounding\n    from . import x\n    from ..errors import E\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    known = {"mmapp", "mmapp.data", "mmapp.data.x", "mmapp.errors", "mmapp.metrics.grounding"}
    assert imports_of(source, known) == {"mmapp.data.x", "mmapp.errors", "mmapp.metrics.grounding"}
