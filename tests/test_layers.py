"""The folder tree is the architecture: lower layers never import higher ones, the driver side
and the analysis never import torch, and there is no import cycle.

Layers, lowest first (see CONTRIBUTING.md):
    core -> datasets -> analysis -> driver | worker -> report -> commands -> cli
``driver`` and ``worker`` are siblings that never import each other: the driver starts the
worker as a subprocess. The one exception is ``driver/preflight.py``, which probes this
machine's devices through ``worker/hardware.py``, lazily (inside a function).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "harness"
RANK = {
    "core": 0,
    "datasets": 1,
    "analysis": 2,
    "driver": 3,
    "worker": 3,
    "report": 4,
    "commands": 5,
    "cli": 6,
}
TORCH_FREE = ("core", "datasets", "analysis", "driver", "report")
HEAVY = ("torch", "deepspeed")
# (importer, imported) edges allowed against the rules, each with its reason.
ALLOWED = {
    ("harness.driver.preflight", "harness.worker.hardware"): "probes the local devices, lazily",
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    # Statements inside `if TYPE_CHECKING:` / try at module level still count as module level.
    for n in tree.body:
        if isinstance(n, ast.If | ast.Try):
            top |= {id(c) for c in ast.walk(n)}
    me = module_name(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # the project imports absolutely; a relative import is named as such
                out.append((f"relative import in {me}: {'.' * node.level}{base}", id(node) in top))
                continue
            for a in node.names:
                # `from harness.core import flops` imports the module harness.core.flops
                candidate = f"{base}.{a.name}"
                is_module = (PKG.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    PKG.parent / Path(*candidate.split("."))
                ).is_dir()
                out.append((candidate if is_module else base, id(node) in top))
    return out


FILES = sorted(p for p in PKG.rglob("*.py"))


def test_imports_are_absolute():
    rel = [t for p in FILES for t, _ in imports(p) if t.startswith("relative import")]
    assert rel == [], rel


def test_every_module_is_in_a_layer():
    stray = [module_name(p) for p in FILES if layer_of(module_name(p)) is None and p.name != "__init__.py"]
    assert stray == [], f"modules outside the layer folders: {stray}"


def test_lower_layers_never_import_higher_ones():
    bad = []
    for path in FILES:
        me = module_name(path)
        mine = layer_of(me)
        if mine is None:
            continue
        for target, _ in imports(path):
            theirs = layer_of(target) if target.startswith("harness.") else None
            if theirs is None or theirs == mine or (me, target) in ALLOWED:
                continue
            if RANK[theirs] >= RANK[mine]:
                bad.append(f"{me} ({mine}) imports {target} ({theirs})")
    assert bad == [], "layer violations:\n" + "\n".join(bad)


def test_worker_never_imports_analysis_and_report_never_drives():
    bad = []
    for path in FILES:
        me = module_name(path)
        for target, _ in imports(path):
            if layer_of(me) == "worker" and layer_of(target) in ("analysis", "driver", "report"):
                bad.append(f"{me} imports {target}")
            if layer_of(me) == "report" and layer_of(target) in ("driver", "worker"):
                bad.append(f"{me} imports {target}")
    assert bad == [], "\n".join(bad)


def test_torch_free_layers_never_import_torch():
    bad = []
    for path in FILES:
        me = module_name(path)
        if layer_of(me) not in TORCH_FREE:
            continue
        for target, _ in imports(path):
            if target.split(".")[0] in HEAVY:
                bad.append(f"{me} imports {target}")
    assert bad == [], "torch in a torch-free layer:\n" + "\n".join(bad)


def test_no_import_cycles():
    """Module-level imports only: a lazy import inside a function cannot deadlock module loading."""
    graph: dict[str, set[str]] = {module_name(p): set() for p in FILES}
    for path in FILES:
        me = module_name(path)
        for target, top in imports(path):
            if top and target in graph and target != me:
                graph[me].add(target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # A package importing its own submodules (re-exports) is not a cycle between layers.
            if len(comp) > 1 and not all(c.startswith(min(comp, key=len)) for c in comp):
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", TORCH_FREE)
def test_importing_a_torch_free_layer_loads_no_torch(layer):
    """What the static check cannot see: importing every module of the layer leaves torch unloaded."""
    mods = [module_name(p) for p in FILES if layer_of(module_name(p)) == layer]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"print(sorted(k for k in {HEAVY!r} if k in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"importing harness.{layer} loaded {out.stdout.strip()}"
