"""`ferry report`: a migration report from the state and the apply event logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.cli.plan import StateOption, load_spec, state_location
from engine.errors import UserError
from engine.executor.events import read
from engine.planner.refresh import read_state
from engine.report.data import Report, collect, of_state
from engine.report.render import html, markdown
from engine.statestore import StateLocation


def report(
    html_file: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    md_file: Annotated[Path | None, typer.Option("--md", help="Write a Markdown report.")] = None,
    state: StateOption = None,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="Read the state's location from this spec's state block."),
    ] = None,
) -> None:
    """Per VM its disks, syncs, digests, conversion and downtime; the last apply's timeline.

    Also the throughput of every sync, and every apply's outcome."""
    location = state_location(dict(load_spec(spec).data) if spec else None, state)
    data = report_data(location)
    default = html_file is None and md_file is None
    if default:
        html_file = location.report_dir / "report.html"
    if html_file is not None:
        html_file.write_text(html(data))
        said = " (the default place; --html FILE or --md FILE to choose)" if default else ""
        typer.echo(f"report: {html_file}{said}")
    if md_file is not None:
        text, files = markdown(data, md_file.with_suffix(""))
        for svg_path, svg_text in files.items():
            svg_path.write_text(svg_text)
        md_file.write_text(text)
        typer.echo(f"report: {md_file}")


def report_data(location: StateLocation) -> Report:
    """The report's data from the state at `location` and its apply event logs.

    Raises UserError when nothing has been applied there yet."""
    recorded = read_state(location)
    if not recorded.lineage:
        raise UserError(f"no state in {location.display}: nothing has been applied yet")
    logs = sorted(location.log_dir.glob("apply-*.jsonl"))
    return collect(recorded.resources, of_state([read(log) for log in logs], location.identity))


def write_html(location: StateLocation) -> Path:
    """Write the HTML report where `ferry report` puts it by default; returns its path.

    Raises UserError when nothing has been applied there yet."""
    path = location.report_dir / "report.html"
    path.write_text(html(report_data(location)))
    return path
