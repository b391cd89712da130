"""The `ferry` command's entry (the console script's `main`): the signals that end a command are
handled from its first moment (engine.cli.interrupt), then the commands are imported
(engine.cli.commands: typer, openstacksdk, pyVmomi, which take seconds; a Ctrl-C there printed
a traceback, and a SIGTERM killed `ferry plan` by the default disposition).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from engine.cli.interrupt import (
    STOPPED,
    Interrupt,
    check,
    ending_on,
    forget_unhandled_mark,
    say_interrupted,
)

# the commands that change nothing before their walk: SIGTERM and SIGHUP end them as Ctrl-C
# does (a destroy is `plan --destroy`, then apply); every other keeps their default
ENDED_AS_CTRL_C = ("plan", "apply")


def main() -> None:
    """Run the command; every error ends as one line on stderr and an exit code: 1 for a
    FerryError (`error: <message>`; an invalid spec prints one `file:line:col: error: ...` line
    per problem), 2 for a command-line usage error, 130 for Ctrl-C outside an apply's walk (and
    for SIGTERM and SIGHUP in plan and apply, from their start to their exit)."""
    # Warnings of ferry and its libraries (retries, re-logins) go to stderr, one line each.
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    # keystoneauth's "Failed to discover available identity versions ... Attempting to parse
    # version from URL" precedes every log-in failure (and many successes): noise to a user
    logging.getLogger("keystoneauth.identity").setLevel(logging.ERROR)
    # Celery's "RPC result consumer: connection lost, attempting to reconnect..." (with a
    # traceback) while RabbitMQ restarts under a coordinator: ferry's own line says what it
    # means, or nothing is lost (break-it 12n L3)
    logging.getLogger("celery.backends.rpc").setLevel(logging.ERROR)
    ending = _ended_as_ctrl_c(sys.argv[1:])
    code = _run(ending)
    if ending:  # the command has ended: a signal now would only cut its exit short (-15)
        for signum in (signal.SIGINT, *ending):
            signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def _ended_as_ctrl_c(args: list[str]) -> tuple[int, ...]:
    """SIGTERM and SIGHUP for a command of ENDED_AS_CTRL_C (its name is the first argument:
    ferry's own options end the command line), else none. The commands install them too
    (engine.cli.interrupt.ending_on); this covers the seconds before they are imported."""
    return (signal.SIGTERM, signal.SIGHUP) if args[:1] and args[0] in ENDED_AS_CTRL_C else ()


def _run(ending: tuple[int, ...] = ()) -> int:
    """The command, Ctrl-C (and the `ending` signals) ending it outside an apply's steps (which
    stop at a checkpoint by their own handler): it unwinds, says so in one line, exit 130; a
    second signal while it does is ignored (it would cut the unwinding short with a
    traceback)."""
    Interrupt.seen = ""
    try:
        with ending_on(signal.SIGINT, *ending):
            try:
                from engine.cli import commands  # noqa: PLC0415 (seconds: after the handlers)

                check()
                code = commands.run()
            except KeyboardInterrupt:
                code = STOPPED
                Interrupt.seen = Interrupt.seen or "Ctrl-C"
            except Exception as error:
                if not (Interrupt.seen and _from_interrupt(error)):
                    raise
                code = STOPPED  # wrapped by the code it landed in (a class's __set_name__)
    except KeyboardInterrupt:  # one came while the handlers were being installed
        code = STOPPED
        Interrupt.seen = Interrupt.seen or "Ctrl-C"
    if Interrupt.seen and code == STOPPED:
        say_interrupted(Interrupt.seen)
    if code == STOPPED:
        forget_unhandled_mark()  # handled: exit 130, not CPython's -2
    return code


def _from_interrupt(error: BaseException) -> bool:
    """The error was raised by a KeyboardInterrupt (its cause or context chain holds one): Python
    wraps one that lands in a class's `__set_name__` (dataclasses' fields, while ferry imports
    its commands) as `RuntimeError: Error calling __set_name__ ...`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def __getattr__(name: str) -> Any:
    """`app` (the typer application) and the other names of engine.cli.commands, imported on
    first use (tests, the CLI docs)."""
    if name.startswith("__"):
        raise AttributeError(name)
    from engine.cli import commands  # noqa: PLC0415

    return getattr(commands, name)
