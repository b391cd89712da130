"""How an apply's events are shown: for people (steps as lines; on a terminal, live below them a
status line per VM and a progress bar per disk copy with bytes, throughput and ETA; elsewhere —
a CI log — a plain progress line per copy every `LINE_SECONDS`) or for machines (`--json`: one
JSON object per line)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from engine.addresses import Address
from engine.errors import UserError
from engine.units import duration, human, rate

LINE_SECONDS = float(os.environ.get("FERRY_PROGRESS_SECONDS", "30"))  # non-TTY line interval


@dataclass
class _Copy:
    """A copy's progress as plain lines see it: when it started, when it was last printed."""

    started: float
    printed: float
    done: int = 0
    total: int = 0


class CopyLines:
    """Plain progress lines for copies when there is no terminal to draw bars on: one per copy
    at most every `every` seconds (and at its end), with bytes, rate and ETA in binary units
    (MiB, MiB/s), e.g. `vm.web01.disk[2000]: 512.0 MiB of 1.0 GiB (50%), 45.2 MiB/s, ETA 11 s`."""

    def __init__(
        self,
        out: Callable[[str], None],
        every: float = LINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out, self.every, self.clock = out, every, clock
        self.copies: dict[str, _Copy] = {}

    def copy(self, address: str, done: int, total: int) -> None:
        now = self.clock()
        state = self.copies.setdefault(address, _Copy(now, now))
        state.done, state.total = done, total
        if done >= total or now - state.printed >= self.every:
            state.printed = now
            self.out(self.line(address, state, now))

    @staticmethod
    def line(address: str, state: _Copy, now: float) -> str:
        if not state.total:
            return f"{address}: nothing to read (all holes)"
        share = 100 * state.done / state.total
        head = f"{address}: {human(state.done)} of {human(state.total)} ({share:.0f}%)"
        elapsed = now - state.started
        if elapsed <= 0 or not state.done:
            return head
        per_second = state.done / elapsed
        if state.done >= state.total:
            return f"{head}, {rate(per_second)}, done in {duration(elapsed)}"
        return (
            f"{head}, {rate(per_second)}, ETA {duration((state.total - state.done) / per_second)}"
        )


class RateColumn(ProgressColumn):
    """A bar's transfer rate in MiB/s (rich's TransferSpeedColumn prints decimal MB/s and
    kB/s beside binary sizes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else rate(speed), style="progress.data.speed")


class HumanView:
    """Steps printed as they happen. On a terminal, live below them: per VM a status line
    (changes done of its total, and what it is doing) and per disk copy a bar with bytes,
    throughput and ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.vms = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=12),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            RateColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.vm_tasks: dict[str, Any] = {}
        self.tasks: dict[str, Any] = {}
        self.lines = CopyLines(lambda line: console.print(f"  {escape(line)}"))
        if console.is_terminal:
            self.live = Live(Group(self.vms, self.bars), console=console, refresh_per_second=4)

    def __enter__(self) -> HumanView:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "step":
            self.console.print(f"  {escape(str(record['message']))}")
        if self.live is None:
            if event == "copy":
                self.lines.copy(str(record["address"]), int(record["done"]), int(record["total"]))
            return
        if event == "apply_start":
            for vm in record.get("vms", []):
                self._vm_line(vm)
        elif event == "copy":
            self._bar(str(record["address"]), int(record["done"]), int(record["total"]))
        else:
            self._vm_status(record)

    def _vm_line(self, vm: dict[str, Any]) -> None:
        if not vm.get("changes"):
            return
        label = f"{vm['name']} ({vm.get('mode', '')})"
        self.vm_tasks[str(vm["name"])] = self.vms.add_task(
            escape(label), total=int(vm["changes"]), status="waiting"
        )

    def _vm_status(self, record: dict[str, Any]) -> None:
        """node_start / node_end / node_skipped / step: the VM's line says what it does."""
        vm, status = _vm_of(record), _status_of(record)
        task = self.vm_tasks.get(vm or "")
        if task is None or status is None:
            return
        done = record["event"] == "node_end" and record.get("outcome") == "done"
        self.vms.update(task, advance=1 if done else 0, status=escape(status))

    def _bar(self, address: str, done: int, total: int) -> None:
        """A copy with no data to read (all holes) shows as complete, not as 0 of 1 byte."""
        if address not in self.tasks:
            self.tasks[address] = self.bars.add_task(escape(address), total=max(total, 1))
        self.bars.update(self.tasks[address], completed=done if total else 1, total=max(total, 1))


def _vm_of(record: dict[str, Any]) -> str | None:
    if record.get("vm"):
        return str(record["vm"])
    try:
        address = Address.parse(str(record.get("address", "")))
    except (ValueError, UserError):
        return None
    return address.name if address.kind == "vm" else None


def _status_of(record: dict[str, Any]) -> str | None:
    event, what = record["event"], _part(str(record.get("address", "")))
    if event == "node_start":
        return f"{what}…"
    if event == "node_end":
        failed = record.get("outcome") == "failed" and record.get("error")
        return f"{what} {record.get('outcome')}" + (f": {record['error']}" if failed else "")
    if event == "node_skipped":
        return f"{what} skipped (after {record.get('after')})"
    if event == "step":
        return str(record.get("message", "")).split(": ", 1)[-1]
    return None


def _part(address: str) -> str:
    """ "disk[2000]" for "vm.db01.disk[2000]"; the VM's own node is "vm"."""
    try:
        parsed = Address.parse(address)
    except (ValueError, UserError):
        return address
    if parsed.part is None:
        return parsed.kind
    return parsed.part + (f"[{parsed.index}]" if parsed.index is not None else "")


class JsonView:
    """Every event as one JSON line on stdout (the CI log)."""

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def __call__(self, record: dict[str, Any]) -> None:
        typer.echo(json.dumps(record, ensure_ascii=False, default=str))
