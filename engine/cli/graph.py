"""`ferry graph PLANFILE --format dot|mermaid`: a saved plan's action graph."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from engine.planner import planfile
from engine.planner.graphviz import to_dot, to_mermaid


class Format(StrEnum):
    DOT = "dot"
    MERMAID = "mermaid"


def graph(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved with `ferry plan --out`.")],
    fmt: Annotated[Format, typer.Option("--format", help="dot or mermaid.")] = Format.DOT,
) -> None:
    """Print the plan's action graph (an edge u → v: u runs before v)."""
    plan = planfile.load(plan_file).plan
    typer.echo(to_dot(plan) if fmt is Format.DOT else to_mermaid(plan), nl=False)
