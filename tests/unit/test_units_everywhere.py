"""One unit system in every human line (issue 13 items 5, 6): sizes through units.human (B, KiB,
MiB, GiB), rates through units.rate (MiB/s). This walks the engine's f-strings and fails on a
size printed as a raw byte count ('{n} bytes'), decimal units (MB, GB), or a rate made by hand
('{human(x)}/s')."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rich.progress import Progress

from engine.cli.progress import RateColumn

ENGINE = Path(__file__).parents[2] / "engine"
WRONG = [
    (re.compile(r"\{[^{}]*\} bytes\b"), "a raw byte count: use units.human"),
    (re.compile(r"\b(?:KB|MB|GB|TB)\b"), "decimal units: use units.human (KiB, MiB, GiB)"),
    (re.compile(r"human\([^{}]*\)\}/s"), "a hand-made rate: use units.rate (MiB/s)"),
]


def _fstrings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    return [(n.lineno, ast.unparse(n)) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)]


def offences() -> list[str]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        for line, text in _fstrings(path):
            found += [
                f"{path.relative_to(ENGINE.parent)}:{line}: {why}: {text}"
                for pattern, why in WRONG
                if pattern.search(text)
            ]
    return found


def test_every_human_size_and_rate_goes_through_units() -> None:
    assert offences() == []


def test_a_copy_bar_shows_its_rate_in_mib_per_second() -> None:
    """rich's TransferSpeedColumn printed decimal '47.2 MB/s' beside binary sizes."""
    bars = Progress(RateColumn())
    task = bars.add_task("copy", total=100 * 2**20)
    bars.tasks[task].finished_speed = 45 * 2**20
    assert str(RateColumn().render(bars.tasks[task])) == "45.0 MiB/s"
