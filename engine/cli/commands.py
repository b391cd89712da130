"""The `ferry` command's commands (typer): every FerryError becomes `error: <message>` and exit
code 1. Imported by engine.cli.app once its signal handlers are in place (this takes seconds)."""

from __future__ import annotations

from typing import Annotated

import typer
from keystoneauth1 import exceptions as ksa_exc
from typer import Abort
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from engine import __version__
from engine.cli.agent import agent
from engine.cli.apply import apply
from engine.cli.discover import discover
from engine.cli.graph import graph
from engine.cli.lab import app as lab_app
from engine.cli.plan import plan
from engine.cli.report import report
from engine.cli.show import show
from engine.cli.spec import validate
from engine.cli.state import app as state_app
from engine.errors import FerryError, InvalidSpecError, one_line
from engine.providers.openstack.retry import unreachable

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
app.command()(agent)


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


def run() -> int:
    """The command `sys.argv` names; its exit code (see engine.cli.app.main)."""
    try:
        code = app(standalone_mode=False, prog_name="ferry")
    except NoArgsIsHelpError as exc:
        exc.show()  # `ferry` alone, or a group without its command: the help
        return exc.exit_code
    except ClickException as exc:
        typer.echo(f"error: {_usage(exc)}", err=True)
        return exc.exit_code
    except Abort:
        typer.echo("error: aborted: nothing was changed", err=True)
        return 1
    except InvalidSpecError as exc:
        for line in exc.lines:
            typer.echo(line, err=True)
        return 1
    except FerryError as exc:
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        return 1
    except ksa_exc.ConnectionError as exc:  # a cloud API down where no step wraps the call
        typer.echo(f"error: {unreachable(exc)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _usage(exc: ClickException) -> str:
    """A usage error in one line, with where to read the command's options."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message
