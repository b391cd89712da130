"""The apply's event log: JSON lines to a file and to every sink; a torn last line (a killed
apply) is skipped when read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.executor.events import Events, log_path, read


def test_events_go_to_the_file_and_the_sinks_and_read_back(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    path = log_path(tmp_path / "logs")
    events = Events(path, (seen.append,))
    events.emit("node_start", address="vm.web01.disk[2000]")
    events.emit("copy", address="vm.web01.disk[2000]", done=5, total=10)
    events.close()
    with path.open("a") as torn:
        torn.write('{"ts": 1, "event": "no')  # killed mid-write
    got = read(path)
    assert got == seen
    assert [e["event"] for e in got] == ["node_start", "copy"]
    assert all(isinstance(e["ts"], float) for e in got)
