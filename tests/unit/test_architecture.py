"""The planner and the model stay pure: no SDK, provider, data-plane or lab import, directly or
through any engine module they import (planner/refresh.py is the planner's one I/O module)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).parents[2] / "engine"
FORBIDDEN = (
    "pyVmomi",
    "pyVim",
    "openstack",
    "nbd",
    "engine.providers",
    "engine.dataplane",
    "engine.lab",
    "engine.statestore",
    "engine.planner.refresh",
    "engine.cli",
)
PURE = sorted(
    p
    for p in [*(ENGINE / "planner").glob("*.py"), *(ENGINE / "model").glob("*.py")]
    if p.name != "refresh.py"
)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts) / "__init__.py"):
        if (ENGINE.parent / candidate).exists():
            return ENGINE.parent / candidate
    return None


def closure(path: Path) -> set[str]:
    seen: set[str] = set()
    todo = [path]
    visited: set[Path] = set()
    while todo:
        current = todo.pop()
        if current in visited:
            continue
        visited.add(current)
        for name in imports(current):
            seen.add(name)
            target = module_file(name) if name.startswith("engine") else None
            if target is not None:
                todo.append(target)
    return seen


@pytest.mark.parametrize("path", PURE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_modules_import_no_sdk(path: Path) -> None:
    bad = sorted(
        n for n in closure(path) if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)
    )
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_can_fail() -> None:
    assert any(n.startswith("pyVmomi") for n in closure(ENGINE / "planner" / "refresh.py"))
