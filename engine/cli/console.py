"""The consoles ferry prints through: on a terminal, rich with colour and wrapping at its width;
elsewhere (CI logs, pipes, files) plain lines that are never hard-wrapped, and no colour (rich
also honours `NO_COLOR` and `FORCE_COLOR`)."""

from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = False) -> Console:
    """A console for ferry's human output; `soft_wrap` (no wrapping) when not on a terminal."""
    console = Console(highlight=False, stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console
