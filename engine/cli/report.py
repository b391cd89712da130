"""`ferry report`: a migration report from the state and the apply event logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.errors import UserError
from engine.executor.events import read
from engine.planner.refresh import read_state
from engine.report.data import collect
from engine.report.render import html, markdown
from engine.statestore import default_path


def report(
    html_file: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    md_file: Annotated[Path | None, typer.Option("--md", help="Write a Markdown report.")] = None,
    state: Annotated[Path | None, typer.Option("--state", help="State file.")] = None,
) -> None:
    """Per VM its disks, syncs, digests, conversion and measured downtime; a timeline of the last
    apply and the throughput of every sync."""
    path = state or default_path()
    if not path.exists():
        raise UserError(f"no state at {path}: nothing has been applied yet")
    logs = sorted((path.parent / "logs").glob("apply-*.jsonl"))
    data = collect(read_state(path).resources, [read(log) for log in logs])
    if html_file is None and md_file is None:
        html_file = path.parent / "report.html"
    if html_file is not None:
        html_file.write_text(html(data))
        typer.echo(f"report: {html_file}")
    if md_file is not None:
        text, files = markdown(data, md_file.with_suffix(""))
        for svg_path, svg_text in files.items():
            svg_path.write_text(svg_text)
        md_file.write_text(text)
        typer.echo(f"report: {md_file}")
