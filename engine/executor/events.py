"""The apply's event stream: one JSON object per line, written to `state/logs/apply-<time>.jsonl`
(what `ferry report` draws its timeline from) and, with `apply --json`, to stdout for CI logs.

Events (every one has `ts`, seconds since the epoch, and `event`):
  apply_start {state (its identity), plan: summary, vms}
  node_start {address, kind, action, vm, host (copies and conversions: the conversion host)}
  step {vm, message}                   node_end {address, outcome: done|failed, error?, seconds}
  copy {address, done, total}          node_skipped {address, after}
  synced {address, vm, kind: full|delta, bytes (read + zeroed), read, skipped (holes left
          alone), seconds (the copy's), step_seconds (the step's wall time), sha256, verified,
          host (the conversion host that wrote it)}
  copy_stopped {address, read, written, zeroed, skipped (bytes the stopped copy moved until the
          stop), checkpoint (bytes: where the next apply resumes)}
  copy_written {address}               (its bytes are written and verified: its slots go to the
          next copy while it detaches and records)
  replaced {vm, placed (the host the plan placed it on, gone), host (where it goes; null: no host
          can take it: its snapshot step fails with the reason, its disks are skipped), reason}
  state_not_written {message, addresses (records the state did not take: its connection lost
          and not made again in time, or its lock taken by another ferry meanwhile)}
  apply_end {ok, done, failed, skipped, bytes_read, bytes_zeroed, bytes_skipped, seconds}
Messages never hold a secret: they are built from addresses, ids and sizes only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

Sink = Callable[[dict[str, Any]], None]


class Events:
    def __init__(self, path: Path | None, sinks: tuple[Sink, ...] = ()) -> None:
        self.path = path
        self.sinks = sinks
        self.lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a")

    def emit(self, event: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self.lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            for sink in self.sinks:
                sink(record)

    def close(self) -> None:
        with self.lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read(path: Path) -> list[dict[str, Any]]:
    """The events of one apply log (a torn last line from a killed apply is ignored)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def log_path(log_dir: Path) -> Path:
    return log_dir / f"apply-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}.jsonl"
