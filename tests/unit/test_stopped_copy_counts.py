"""A stopped apply reports the bytes its copies really moved (break-it pass 12b, item 8: after a
Ctrl-C past a 280 MiB checkpoint, apply_end's bytes_read, the summary line and the report said
0): the counts travel on StoppedError.moved, from an agent too, and the report's applies table
shows each apply's data read, a stopped or killed one's up to its stop."""

from __future__ import annotations

from engine.dataplane.copy import CopyStats
from engine.errors import StoppedError
from engine.executor.remote import _error
from engine.report.data import Report, run
from engine.report.render import RUN_HEAD, run_rows

MiB = 1024**2


def test_a_stop_carries_what_the_copy_moved_from_an_agent_too() -> None:
    moved = CopyStats(bytes_read=280 * MiB, bytes_written=280 * MiB, bytes_skipped=MiB).moved()
    error = _error({"type": "StoppedError", "message": "stopped at 280.0 MiB", "moved": moved}, "h")
    assert isinstance(error, StoppedError) and str(error) == "stopped at 280.0 MiB"
    back = CopyStats.of_stop(error)
    assert (back.bytes_read, back.bytes_written, back.bytes_skipped) == (280 * MiB,) * 2 + (MiB,)
    assert CopyStats.of_stop(StoppedError("stopped before an agent took the copy")) == CopyStats()


def _events(end: bool) -> list[dict[str, object]]:
    events: list[dict[str, object]] = [
        {"ts": 100.0, "event": "apply_start", "state": "s"},
        {"ts": 101.0, "event": "synced", "address": "vm.a.disk[2000]", "read": 20 * MiB},
        {"ts": 102.0, "event": "copy_stopped", "address": "vm.a.disk[2001]", "read": 280 * MiB},
        {"ts": 102.5, "event": "stopping"},
    ]
    if end:
        events.append(
            {"ts": 103.0, "event": "apply_end", "done": 1, "failed": 1, "skipped": 0,
             "bytes_read": 300 * MiB, "seconds": 3.0}
        )  # fmt: skip
    return events


def test_the_report_shows_each_applys_data_read_a_stopped_ones_included() -> None:
    stopped, killed = run(_events(end=True)), run(_events(end=False))
    assert (stopped.outcome, stopped.read) == ("stopped", 300 * MiB)
    assert (killed.outcome, killed.read) == ("killed", 300 * MiB)
    rows = run_rows(Report([], [], 2, [stopped, killed]))
    column = RUN_HEAD.index("data read")
    assert [r[column] for r in rows] == ["300.0 MiB", "300.0 MiB"]
