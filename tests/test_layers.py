"""The house rules of the package's structure: no import loops, no import from a lower layer up, and study
and search files read without torch, fvcore, ptflops or Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
# Lowest first: a module may import its own layer or any layer below it, never one above.
LAYERS = [("workbench", "workbench.errors", "workbench.fileio", "workbench.table", "workbench.machine",
           "workbench.yamlfile"),
          ("workbench.arch",), ("workbench.deploy",), ("workbench.counting",), ("workbench.training",),
          ("workbench.engine",), ("workbench.study", "workbench.search"), ("workbench.dashboard",), ("workbench.cli",)]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (i, name)
    assert best is not None, module
    return best[0]


def imports() -> dict[str, set[str]]:
    """module -> the workbench modules it imports, at the top or inside functions alike."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
                # `from pkg import mod` imports the module mod; `from mod import name` imports mod.
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("workbench")]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
        graph[name] = found
    return graph


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{m} -> {t}" for m, targets in imports().items() for t in targets if layer(t) > layer(m)]
    assert not upward, upward


def test_no_import_loops():
    graph = imports()
    # A package's __init__ importing nothing of its own children is what makes `pkg.child -> pkg` legal.
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not loops, loops


def test_no_package_file_over_600_lines_and_no_function_over_80():
    # Short files with one concept each, short functions a reader can hold: the house rules' size limits.
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 600:
            long_files.append(f"{path.name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_files and not long_functions, long_files + long_functions


def test_reading_study_and_space_files_imports_no_torch_fvcore_ptflops_or_ray():
    """timm too: a study naming timm models (baselines) and a space over one (mobilenetv3) are read without it."""
    code = ("import sys\n"
            "from workbench.study.files import load_study\n"
            "from workbench.search.space import load_space\n"
            "for name in ('table2', 'table5', 'table6', 'table7', 'baselines'):\n"
            "    load_study(name)\n"
            "load_space('mobilevit')\n"
            "load_space('mobilenetv3')\n"
            "heavy = sorted(m for m in ('torch', 'fvcore', 'ptflops', 'ray', 'optuna', 'timm') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
