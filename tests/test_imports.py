"""Imports point one way: no import cycle inside a package, no import up a package's layers.

The import graph is read from the source with :mod:`ast` (nothing is imported or run): every
``import`` and ``from ... import`` statement counts, at module level and inside functions
(a deferred import is still an edge: it only hides the cycle until the call), relative imports
resolved against the importing module. ``from pkg import name`` is an edge to ``pkg.name``
where that is a module of the package, else to ``pkg``. Edges to a module's own package
``__init__`` implied by Python's import machinery are not counted: only written imports are.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: the packages checked
PACKAGES = ("schedules", "models", "train")

#: a package's layers, top to bottom: each a list of module-name prefixes relative to the
#: package ("__init__" is the package itself; "torch" covers ``torch`` and ``torch.*``).
#: A module may import from its own layer or below, never from a layer above.
LAYERS: dict[str, list[list[str]]] = {
    "schedules": [
        ["__main__"],
        ["__init__"],
        ["hf"],
        ["optax", "megatron", "torch"],
        ["_facade", "_tools"],
        ["_serialize"],
        ["_combinators"],
        ["_primitives", "_expr"],
        ["_core"],
        ["_numerics", "_validate"],
        ["_ops"],
    ],
    "models": [
        ["__init__"],
        ["api", "hf_checkpoint"],
        ["parts", "decode"],
        ["gpt2", "llama"],
        ["hf_io", "layers"],
        ["common"],
    ],
    # docs/architecture.md draws this table
    "train": [
        ["__main__", "lr_finder", "prepare", "export", "sample", "__init__"],
        ["run.train"],
        ["run.sweep"],
        ["run.ranking", "run.memplan", "run.lr_finder", "run.tracking"],
        ["run.loop"],
        ["run.stop"],
        ["run.setup"],
        ["run.weights"],
        ["run.grid"],
        ["run.checks", "run"],
        ["engine.population", "engine.mesh", "engine.pmap", "engine"],
        ["engine.base"],
        ["engine.step"],
        ["parallel.pipeline"],
        ["parallel.shardings"],
        ["parallel.layout", "parallel.stack", "parallel"],
        ["trackers", "optim", "resume", "config_files"],
        ["checkpoint", "data", "plot"],
        ["corpus"],
        ["sources"],
        ["shards", "tokenizer"],
        ["metrics"],
        ["schedule.hparams"],
        ["schedule.build"],
        ["schedule.plan"],
        ["config"],
        ["schedule.names", "schedule"],
        ["_flag", "_paths", "devices", "allocator"],
    ],
}


def modules(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def import_graph(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (anywhere in its source)."""
    mods = modules(package, root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                # ``import a.b.c`` names the deepest module of the package it reaches
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)) is not None:
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def layer_of(package: str, module: str, layers: list[list[str]]) -> int | None:
    rel = module[len(package) + 1:] if module != package else "__init__"
    for i, prefixes in enumerate(layers):
        if any(rel == p or rel.startswith(p + ".") for p in prefixes):
            return i
    return None


def upward_imports(package: str, graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    out = []
    for mod, targets in sorted(graph.items()):
        here = layer_of(package, mod, layers)
        for t in sorted(targets):
            there = layer_of(package, t, layers)
            if here is not None and there is not None and there < here:
                out.append(f"{mod} (layer {here}) imports {t} (layer {there}, above it)")
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    cycle = find_cycle(import_graph(package))
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("package", sorted(set(PACKAGES) & set(LAYERS)))
def test_layers_point_down(package: str) -> None:
    layers = LAYERS[package]
    graph = import_graph(package)
    unplaced = [m for m in graph if layer_of(package, m, layers) is None]
    assert not unplaced, f"{package}: modules in no layer of LAYERS: {unplaced}"
    bad = upward_imports(package, graph, layers)
    assert not bad, f"{package}: imports pointing up the layers:\n" + "\n".join(bad)


def test_checker_sees_what_it_must() -> None:
    """The checker itself: relative imports resolved, function-level imports counted, a cycle
    and an upward import reported (on a graph built from hand-written sources)."""
    src = {
        "pkg/__init__.py": "from .a import f\n",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def g():\n    from .sub.c import h\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import pkg.a\nfrom .. import a as _a\n",
    }
    with tempfile.TemporaryDirectory() as d:
        for name, text in src.items():
            (Path(d) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(d) / name).write_text(text)
        graph = import_graph("pkg", Path(d))
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    layers = [["__init__"], ["a"], ["b", "sub"]]
    assert upward_imports("pkg", graph, layers) == [
        "pkg.sub.c (layer 2) imports pkg.a (layer 1, above it)"
    ]
