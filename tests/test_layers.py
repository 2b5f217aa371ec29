"""The house's layering (DESIGN.md "Layout"), checked on the source: imports run one way.

Layers, lowest first: 0 common (``birdclef.common``, and the package root) ←
1 runtime (``birdclef.runtime``: torch-free) ← 2 stage packages (everything
else) ← 3 report (``birdclef.report``) ← workflow scripts. A module may import
its own layer or a lower one, never a higher one; the module graph has no loop;
imports are at module level (a function-local import hides an edge), except the
few listed in `LOCAL_IMPORTS` with their reason. Every runtime module imports
with torch, timm, librosa, sklearn and snakemake blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import birdclef

PACKAGE = Path(birdclef.__file__).resolve().parent
SRC = PACKAGE.parent
ROOT = SRC.parent
BLOCKED = ("torch", "timm", "librosa", "sklearn", "snakemake", "torchaudio", "nncf", "silero_vad")
# (module, imported top-level name): why the import is inside a function.
LOCAL_IMPORTS = {
    # predict.py is also the bundle's script: it sets the BLAS thread variables before numpy
    # loads and puts the bundled package first on sys.path before importing birdclef.
    ("birdclef.runtime.predict", "time"): "stdlib, after the sys.path setup",
    ("birdclef.runtime.predict", "birdclef"): "the bundled package, after use_bundled_package()",
    # importing silero_vad sets torch to one thread for the whole process: only when VAD runs.
    ("birdclef.vad.model", "silero_vad"): "import side effect (torch threads)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "common":
        return 0
    return {"runtime": 1, "report": 3}.get(parts[1], 2)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported birdclef module or top-level name, line, at module level) of one source file."""
    tree = ast.parse(path.read_text())
    top = set()
    pending = list(tree.body)  # module level, including `try: import x / except ImportError:` blocks
    while pending:
        node = pending.pop()
        top.add(id(node))
        if isinstance(node, (ast.Try, ast.If)):
            pending += node.body + node.orelse + [s for h in getattr(node, "handlers", []) for s in h.body]
    known = modules()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, path.name == "__init__.py", node)
            # `from birdclef.x import y` names the module birdclef.x.y when that is a module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            found.append((name, node.lineno, id(node) in top))
    return found


def test_imports_run_one_way_and_have_no_loop():
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    upward = []
    for name, path in known.items():
        for target, line, _ in imports(name, path):
            if target.split(".")[0] != "birdclef" or target == name:
                continue
            # the nearest known module (birdclef.x.y where y is a name in birdclef.x)
            while target not in known:
                target = target.rpartition(".")[0]
            graph[name].add(target)
            if layer(target) > layer(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} (layer {layer(target)} > {layer(name)})")
    assert not upward, "\n".join(upward)

    loops, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its own modules is not a loop unless a module imports it back
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_imports_are_at_module_level():
    hidden = []
    for name, path in modules().items():
        for target, line, at_top in imports(name, path):
            head = target.split(".")[0]
            if not at_top and (name, head) not in LOCAL_IMPORTS:
                hidden.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert not hidden, "\n".join(hidden)


def test_runtime_imports_without_torch_sklearn_or_snakemake():
    runtime = [name for name in modules() if layer(name) <= 1]
    assert "birdclef.runtime.inference" in runtime and "birdclef.runtime.predict" in runtime
    code = (
        "import sys, importlib\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None\n"
        f"for module in {runtime!r}:\n"
        "    if module == 'birdclef.common.metrics':\n"
        "        continue  # sklearn's roc_auc_score: scoring is not part of inference\n"
        "    importlib.import_module(module)\n"
        f"loaded = sorted(n for n in sys.modules if n.split('.')[0] in {BLOCKED!r} and sys.modules[n])\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_runtime_does_not_import_the_metric():
    """The Kaggle bundle needs no sklearn: no runtime module imports birdclef.common.metrics."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for name, path in modules().items()
        if layer(name) == 1
        for target, line, _ in imports(name, path)
        if target.startswith("birdclef.common.metrics")
    ]
    assert not offenders, offenders
