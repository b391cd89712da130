"""How an apply looks on a terminal: step lines, and live below them one status line per VM
(changes done of its total and what it is doing) and a bar per disk copy."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from engine.cli.console import make_console
from engine.cli.progress import CopyLines, HumanView


def events() -> list[dict[str, Any]]:
    return [
        {
            "event": "apply_start",
            "vms": [
                {"name": "db01", "mode": "cutover", "changes": 3},
                {"name": "web01", "mode": "replicate", "changes": 0},  # nothing to do: no line
            ],
        },
        {"event": "node_start", "address": "vm.db01.snapshot"},
        {"event": "step", "vm": "db01", "message": "vm.db01: snapshot snapshot-7 taken"},
        {"event": "node_end", "address": "vm.db01.snapshot", "outcome": "done"},
        {"event": "node_start", "address": "vm.db01.disk[2000]"},
        {"event": "copy", "address": "vm.db01.disk[2000]", "done": 512 << 20, "total": 1 << 30},
        {"event": "node_end", "address": "vm.db01.disk[2000]", "outcome": "done"},
        {"event": "node_start", "address": "vm.db01.disk[2001]"},
        {"event": "copy", "address": "vm.db01.disk[2002]", "done": 0, "total": 0},  # all holes
        {"event": "node_end", "address": "vm.db01.disk[2001]", "outcome": "failed", "error": "EIO"},
    ]


def render(terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, color_system=None)
    with HumanView(console) as view:
        for record in events():
            view(record)
    return out.getvalue()


def test_a_terminal_shows_a_status_line_per_vm_and_a_bar_per_copy() -> None:
    shown = render(terminal=True)
    assert "vm.db01: snapshot snapshot-7 taken" in shown
    final = shown.rsplit("snapshot-7 taken", 1)[-1]  # the live area's last frame
    assert "db01 (cutover)" in final and "2/3" in final and "disk[2001] failed: EIO" in final
    assert "web01" not in final
    assert "vm.db01.disk[2000]" in final and "0.5/1.0 GiB" in final
    assert "1/1 bytes" in final.split("vm.db01.disk[2002]", 1)[1].splitlines()[0]
    assert "disk[2001] failed: EIO" in final and "vm.db01.disk[2001]" not in final


def test_a_log_gets_the_step_lines_and_plain_copy_lines() -> None:
    shown = render(terminal=False)
    assert shown == (
        "  vm.db01: snapshot snapshot-7 taken\n"
        "  vm.db01.disk[2002]: nothing to read (all holes)\n"  # a copy's end is always said
    )


def test_no_terminal_plain_progress_lines_and_no_wrapping() -> None:
    """In a CI log (no terminal): a copy prints a plain line every interval and at its end, in
    MiB and MiB/s, and no line is hard-wrapped at 80 columns (issue 13, item 5)."""
    clock = iter([0.0, 10.0, 31.0, 35.0, 40.0])
    out: list[str] = []
    lines = CopyLines(out.append, every=30, clock=lambda: next(clock))
    for done in (0, 100 << 20, 300 << 20, 400 << 20, 1 << 30):
        lines.copy("vm.db01.disk[2000]", done, 1 << 30)
    assert out == [
        "vm.db01.disk[2000]: 300.0 MiB of 1.0 GiB (29%), 9.7 MiB/s, ETA 1 min 15 s",
        "vm.db01.disk[2000]: 1.0 GiB of 1.0 GiB (100%), 25.6 MiB/s, done in 40.0 s",
    ]
    buffer = io.StringIO()
    console = make_console()
    console.file = buffer
    assert not console.is_terminal
    HumanView(console)({"event": "step", "message": "x" * 150 + " end"})
    assert buffer.getvalue() == "  " + "x" * 150 + " end\n"
