"""docs/production.md's error table says what the code prints today (issue 13 items 7 and 3 of
the session's brief): every class of engine/errors.py has a row, and each row's example line,
once its prefix ('error: ', 'failed: ADDRESS: ', 'stopped: ADDRESS: ', 'ADDRESS: ') is taken off,
is a message the engine builds for that class: it matches one of the class's message templates
(the f-strings passed to `Class(...)`, their placeholders as wildcards). No template spans lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from engine import errors

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "production.md"
PREFIX = re.compile(r"^(?:error: |(?:failed|stopped): \S+: |vm\.\S+: )")
CELL = re.compile(r"``\s?(.+?)\s?``|`([^`]+)`")


def rows() -> dict[str, str]:
    """The table's rows: class name → its example line (the third column's code span)."""
    text = DOC.read_text()
    table = text[text.index("| class | what it means | as printed, e.g. |") :].split("\n\n")[0]
    out = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        found = CELL.search(cells[2])
        assert found is not None, line
        out[cells[0].strip("`")] = found.group(1) or found.group(2)
    return out


def _pattern(node: ast.expr) -> str | None:
    """An f-string or string literal as a regex: placeholders match anything."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if not isinstance(node, ast.JoinedStr):
        return None
    return "".join(
        re.escape(v.value) if isinstance(v, ast.Constant) else ".+?" for v in node.values
    )


def templates() -> dict[str, list[str]]:
    """Class name → the message templates the engine builds it with."""
    names = {c.__name__ for c in vars(errors).values() if isinstance(c, type)}
    out: dict[str, list[str]] = {}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in names
                and node.args
                and (pattern := _pattern(node.args[0])) is not None
            ):
                out.setdefault(node.func.id, []).append(pattern)
    return out


TEMPLATES = templates()
ROWS = rows()


def test_every_error_class_has_a_row() -> None:
    classes = {
        c.__name__
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.FerryError)
    }
    shown = set(ROWS) | {"FerryError", "InvalidSpecError", "NoStateError"}
    assert classes - shown == set()


@pytest.mark.parametrize("name", [n for n in ROWS if n != "spec errors"])
def test_each_rows_example_is_a_message_of_its_class(name: str) -> None:
    message = PREFIX.sub("", ROWS[name])
    assert message != ROWS[name], f"{name}: no 'error: ' / 'failed: ADDRESS: ' prefix"
    assert any(re.fullmatch(t, message) for t in TEMPLATES[name]), (name, message)


def test_no_message_spans_lines() -> None:
    multi = [t for ts in TEMPLATES.values() for t in ts if "\\\n" in t or "\n" in t]
    assert multi == []


def test_a_quoted_tools_output_is_joined_on_one_line() -> None:
    assert errors.one_line("go build failed:\n  ./a.go:3: x\n\n  ./a.go:4: y\n") == (
        "go build failed: | ./a.go:3: x | ./a.go:4: y"
    )
