"""The `ferry` command's commands (typer): every FerryError becomes `error: <message>` and exit
code 1. Imported by engine.cli.app once its signal handlers are in place (this takes seconds)."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from typer import Abort
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from engine import __version__
from engine.errors import FerryError, InvalidSpecError, one_line

_app = typer.Typer(
    name="ferry",
    help="Declarative plan-and-apply migration of VMware vSphere VMs to OpenStack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# name → (module, attribute, whether it is a group of commands), in `ferry --help`'s order. A
# command line naming one imports only that one's module: `ferry plan` does not import the
# agent's Celery nor the lab's tooling (about a third of the CLI's start-up).
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "lab": ("engine.cli.lab", "app", True),
    "state": ("engine.cli.state", "app", True),
    "validate": ("engine.cli.spec", "validate", False),
    "discover": ("engine.cli.discover", "discover", False),
    "plan": ("engine.cli.plan", "plan", False),
    "apply": ("engine.cli.apply", "apply", False),
    "show": ("engine.cli.show", "show", False),
    "graph": ("engine.cli.graph", "graph", False),
    "report": ("engine.cli.report", "report", False),
    "agent": ("engine.cli.agent", "agent", False),
    "version": ("engine.cli.commands", "version", False),
}
_registered: set[str] = set()


def register(names: list[str] | None = None) -> typer.Typer:
    """The application with the commands `names` registered (None: all of them, as `ferry
    --help` lists them); each is imported and registered once. Returns it."""
    for name in COMMANDS if names is None else names:
        if name in _registered:
            continue
        module, attribute, group = COMMANDS[name]
        command = getattr(importlib.import_module(module), attribute)
        if group:
            _app.add_typer(command, name=name)
        else:
            _app.command()(command)
        _registered.add(name)
    return _app


def _named(args: list[str]) -> list[str] | None:
    """The one command a command line names (its first argument), none for `--version`, None
    when it names none of them (`--help`, a mistyped name: every command registered, so help
    and errors list all)."""
    if args[:1] == ["--version"]:
        return []
    return [args[0]] if args[:1] and args[0] in COMMANDS else None


def __getattr__(name: str) -> typer.Typer:
    """`app`: the application with every command (the tests, the CLI's reference docs)."""
    if name == "app":
        return register()
    raise AttributeError(name)


def version() -> None:
    """Print ferry's version."""
    typer.echo(__version__)


def _print_version(given: bool) -> None:
    if given:
        typer.echo(__version__)
        raise typer.Exit()


@_app.callback()
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
        code = register(_named(sys.argv[1:]))(standalone_mode=False, prog_name="ferry")
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
    except Exception as exc:
        if not _cloud_unreachable(exc):
            raise
        typer.echo(f"error: {_unreachable_line(exc)}", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _cloud_unreachable(exc: Exception) -> bool:
    """A cloud API down where no step wraps the call (keystoneauth's ConnectionError); not
    imported for a command that never loaded keystoneauth (its exception cannot be one)."""
    if "keystoneauth1" not in sys.modules:
        return False
    from keystoneauth1 import exceptions as ksa_exc  # noqa: PLC0415 (loaded: see above)

    return isinstance(exc, ksa_exc.ConnectionError)


def _unreachable_line(exc: Exception) -> str:
    from engine.providers.openstack.retry import unreachable  # noqa: PLC0415 (the error path)

    return unreachable(exc)


def _usage(exc: ClickException) -> str:
    """A usage error in one line, with where to read the command's options."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message
