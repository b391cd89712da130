"""Signals that end a ferry command outside an apply's walk (the walk stops at checkpoints by its
own handlers: engine.cli.apply._stop_on_signals). Ctrl-C (SIGINT) for every command; SIGTERM
(systemd stopping a unit, `kill`) and SIGHUP (a closed terminal, a dropped SSH session) for plan
and apply (a destroy is a plan and an apply), which change nothing before their walk: the
command unwinds (the state's lock and the sessions are released), says `error: interrupted
(<signal>): nothing was changed` and exits 130, as an apply stopped by any of them does. A
second signal while it unwinds is ignored. Break-it 12f F7: SIGTERM or SIGHUP between the printed
plan and the walk (vCenter log-in, cloud, state lock, checks) killed `ferry apply` by the
default disposition (exit -15 / -1, no line).

Other commands keep the default SIGTERM and SIGHUP: `ferry agent` (a Celery worker, stopped by
SIGTERM), `ferry lab` and its servers (stopped by pid).

Kept light (no third-party import): `ferry` installs SIGINT's handler before it imports the
commands (typer, openstacksdk, pyVmomi: seconds).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

STOPPED = 130  # the exit code of an interrupted command, as for a shell's Ctrl-C


class Interrupt:
    """The handler the signals of `ending_on` raise KeyboardInterrupt with, and which one came."""

    seen = ""  # what ended the command ('Ctrl-C', 'SIGTERM', 'SIGHUP'); "" none yet
    handled: tuple[int, ...] = ()  # the signals handled now (ignored once one came)

    @classmethod
    def handle(cls, signum: int, _frame: FrameType | None) -> None:
        cls.seen = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        for handled in cls.handled:
            signal.signal(handled, signal.SIG_IGN)
        raise KeyboardInterrupt


@contextmanager
def ending_on(*signums: int) -> Iterator[None]:
    """Within the block, each of `signums` ends the command as Ctrl-C does (Interrupt.handle:
    KeyboardInterrupt). After it, their previous handlers are back, unless one came: then they
    stay ignored while the command exits (a second one would cut the unwinding short)."""
    Interrupt.handled += signums  # first: one coming while they are installed ignores the rest
    previous = {s: signal.signal(s, Interrupt.handle) for s in signums}
    try:
        yield
    finally:
        left = list(Interrupt.handled)  # an enclosing block may handle the same ones
        for signum in signums:
            left.remove(signum)
        Interrupt.handled = tuple(left)
        if not Interrupt.seen:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def check() -> None:
    """Raise KeyboardInterrupt again when a signal came (Interrupt.seen) whose KeyboardInterrupt
    something swallowed (a library's bare `except:` while it was imported, or in a retry
    loop): the command ends at the next check instead of going on with its signals ignored
    (break-it 12h M6: a SIGTERM 0.3 s into `ferry plan` not honoured). Called where nothing
    is changed yet: after the commands' import, before a plan is shown, before the walk."""
    if Interrupt.seen:
        raise KeyboardInterrupt


def interrupted_line(seen: str) -> str:
    """What an interrupted command says: `error: interrupted (Ctrl-C): nothing was changed`."""
    return f"error: interrupted ({seen}): nothing was changed"


def say_interrupted(seen: str) -> None:
    """The line on stderr (fd 2, unbuffered); nothing when the terminal is gone (SIGHUP)."""
    with suppress(OSError):
        sys.stderr.flush()
    with suppress(OSError):
        os.write(2, (interrupted_line(seen) + "\n").encode())


def forget_unhandled_mark() -> None:
    """Clear CPython's "KeyboardInterrupt unhandled" mark once ferry has handled the signal.
    CPython 3.11 sets it (`_Py_UnhandledKeyboardInterrupt`, which makes the interpreter kill
    itself with SIGINT at exit: exit -2 instead of 130) whenever a KeyboardInterrupt leaves
    code run by `exec()` of a string, even when a caller catches it; dataclasses and
    namedtuple build their methods that way, so a signal landing while ferry imports its
    commands ended 8% of the time as -2 (Lib/dataclasses.py `_create_fn`; Python/pythonrun.c
    `run_eval_code_obj`). Nothing when the interpreter has no such mark."""
    with suppress(ValueError, AttributeError):
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
