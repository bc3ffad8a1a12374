"""The import graph is a DAG, module by module, and packages import only down the layers.

Layers (see README, Architecture): ``workflows`` (the application and the command line) may import
``planners``, ``envs`` and ``gndesign``; ``planners`` and ``envs`` only the core ``gndesign``; the
core nothing of ours but itself. ``scripts`` use ``workflows``, never the command line. Every
import counts, also inside functions, and so do string entry points (``"envs.gym_envs:Env"``)
and ``importlib.import_module("...")``: a string is an import that happens later.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gndesign", "envs", "planners", "workflows")
ALLOWED = {
    "gndesign": {"gndesign"},
    "envs": {"envs", "gndesign"},
    "planners": {"planners", "gndesign"},
    "workflows": {"workflows", "planners", "envs", "gndesign"},
}
ENTRY_POINT = re.compile(r"^((?:" + "|".join(PACKAGES) + r")(?:\.\w+)*):[\w.]+$")
MAX_LINES = 520  # "about 500": one job per module


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` (a module or ``module.attribute``) lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules that ``module`` imports: every import statement at any depth, relative
    ones resolved, ``from pkg import sub`` as ``pkg.sub`` when that is a module, string entry
    points and ``importlib.import_module`` calls."""
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] or [base]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = ENTRY_POINT.match(node.value)
            if m:
                targets = [m.group(1)]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [node.args[0].value]
        for t in targets:
            resolved = _resolve(t, known)
            if resolved and resolved != module:
                found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = all_modules()
    known = set(mods)
    return {m: imports_of(p.read_text(), m, p.name == "__init__.py", known) for m, p in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_packages_import_only_down_the_layers():
    bad = {m: sorted(t for t in targets if t.split(".")[0] not in ALLOWED[m.split(".")[0]])
           for m, targets in import_graph().items()}
    assert {m: t for m, t in bad.items() if t} == {}


def test_scripts_use_workflows_not_the_command_line():
    known = set(all_modules())
    for p in sorted((ROOT / "scripts").rglob("*.py")):
        used = imports_of(p.read_text(), p.stem, False, known)
        assert not {m for m in used if m.endswith(".cli")}, p


def test_no_module_holds_many_jobs_by_size():
    long = {m: n for m, p in all_modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checker_sees_every_kind_of_import():
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "envs", "envs.gym_envs", "pkg.sub", "pkg.sub.e"}
    source = '''
import pkg.a
def later():
    from pkg import b
    import importlib
    importlib.import_module("pkg.c")
REGISTRY = {"id": "envs.gym_envs:LearnedGymEnv"}
from . import d
from .sub.e import thing
'''
    assert imports_of(source, "pkg.mod", False, known) == {"pkg.a", "pkg.b", "pkg.c", "envs.gym_envs", "pkg.d",
                                                         "pkg.sub.e"}


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
