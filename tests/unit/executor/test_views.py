"""How an apply looks on a terminal: step lines, and live below them one status line per VM
(changes done of its total and what it is doing) and a bar per disk copy."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from engine.cli.progress import HumanView


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


def test_a_log_gets_the_step_lines_only() -> None:
    shown = render(terminal=False)
    assert shown == "  vm.db01: snapshot snapshot-7 taken\n"
