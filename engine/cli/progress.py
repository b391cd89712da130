"""How an apply's events are shown: for people (steps as lines; on a terminal, a progress bar per
disk copy with bytes, throughput and ETA) or for machines (`--json`: one JSON object per line)."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class HumanView:
    """Steps printed as they happen; copies as live bars when the console is a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars: Progress | None = None
        self.tasks: dict[str, Any] = {}
        if console.is_terminal:
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> HumanView:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def __call__(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "step":
            self.console.print(f"  {escape(str(record['message']))}")
        elif event == "copy" and self.bars is not None:
            self._bar(str(record["address"]), int(record["done"]), int(record["total"]))

    def _bar(self, address: str, done: int, total: int) -> None:
        assert self.bars is not None
        if address not in self.tasks:
            self.tasks[address] = self.bars.add_task(escape(address), total=max(total, 1))
        self.bars.update(self.tasks[address], completed=done, total=max(total, 1))


class JsonView:
    """Every event as one JSON line on stdout (the CI log)."""

    def __enter__(self) -> JsonView:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def __call__(self, record: dict[str, Any]) -> None:
        typer.echo(json.dumps(record, ensure_ascii=False, default=str))
