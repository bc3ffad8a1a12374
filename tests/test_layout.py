"""The import graph is a DAG: the core never imports envs, planners or workflows (the application layer wires them)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_neither_envs_nor_planners():
    offenders = {str(p.relative_to(ROOT)): imported_packages(p) & {"envs", "planners", "workflows"}
                 for p in (ROOT / "gndesign").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_envs_do_not_import_planners_and_planners_do_not_import_envs():
    for pkg, banned in (("envs", "planners"), ("planners", "envs")):
        for p in (ROOT / pkg).rglob("*.py"):
            assert banned not in imported_packages(p), p


def test_the_checker_sees_imports_inside_functions():
    # The CLI imports envs lazily, inside its commands: the checker must find those too.
    assert "envs" in imported_packages(ROOT / "workflows" / "cli.py")
