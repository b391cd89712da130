"""`ferry validate`: schema and semantic checks of a spec, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.diagnostics import Severity, has_errors
from engine.spec.validate import validate_file


def validate(
    spec: Annotated[Path, typer.Argument(help="Migration spec (YAML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Check a spec against the schema and ferry's rules; exit 1 when it has errors."""
    loaded = validate_file(spec)
    failed = has_errors(loaded.diagnostics)
    if as_json:
        report = {"valid": not failed, "diagnostics": [d.to_json() for d in loaded.diagnostics]}
        typer.echo(json.dumps(report, indent=2))
    else:
        for diagnostic in loaded.diagnostics:
            typer.echo(diagnostic.render(), err=diagnostic.severity is Severity.ERROR)
        errors = sum(d.severity is Severity.ERROR for d in loaded.diagnostics)
        typer.echo(f"{spec}: {errors} error(s)" if failed else f"{spec}: valid", err=failed)
    if failed:
        raise typer.Exit(1)
