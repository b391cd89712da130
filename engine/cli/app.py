"""The `ferry` command: every FerryError becomes `error: <message>` and exit code 1."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from engine import __version__
from engine.cli.apply import apply
from engine.cli.discover import discover
from engine.cli.graph import graph
from engine.cli.lab import app as lab_app
from engine.cli.plan import plan
from engine.cli.report import report
from engine.cli.show import show
from engine.cli.spec import validate
from engine.cli.state import app as state_app
from engine.errors import FerryError

app = typer.Typer(
    name="ferry",
    help="Declarative plan-and-apply migration of VMware vSphere VMs to OpenStack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lab_app, name="lab")
app.add_typer(state_app, name="state")
app.command()(validate)
app.command()(discover)
app.command()(plan)
app.command()(apply)
app.command()(show)
app.command()(graph)
app.command()(report)


@app.command()
def version() -> None:
    """Print ferry's version."""
    typer.echo(__version__)


def _print_version(given: bool) -> None:
    if given:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print ferry's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Declarative plan-and-apply migration of VMware vSphere VMs to OpenStack."""


def main() -> None:
    # Warnings of ferry and its libraries (retries, re-logins) go to stderr, one line each.
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    try:
        app()
    except FerryError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
