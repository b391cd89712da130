"""The report's downtime runs from the first time ferry powered the source off, across applies,
and a source ferry left powered off with no server says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.model.state import ResourceRecord, Status
from engine.report.data import collect
from engine.report.render import html, markdown


def ev(ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **fields}


FIRST = [  # stopped after the power-off (on_failure: leave_off)
    ev(10.0, "node_start", address="vm.web01.snapshot", kind="source_snapshot"),
    ev(40.0, "source_off", vm="web01", how="graceful", since=40.0),
    ev(41.0, "node_end", address="vm.web01.snapshot", outcome="done", seconds=31.0),
    ev(42.0, "source_left_off", vm="web01", since=40.0),
]
SECOND = [
    ev(100.0, "node_start", address="vm.web01.snapshot", kind="source_snapshot"),
    ev(100.5, "source_off", vm="web01", how="already", since=40.0),
    ev(101.0, "node_end", address="vm.web01.snapshot", outcome="done", seconds=1.0),
    ev(130.0, "node_start", address="vm.web01.server", kind="server"),
    ev(138.0, "node_end", address="vm.web01.server", outcome="done", seconds=8.0),
]
DISK = ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, {"volume_id": "v1"})


def test_downtime_runs_from_the_first_power_off_across_applies() -> None:
    (vm,) = collect({DISK.address: DISK}, [FIRST, SECOND]).vms
    assert vm.downtime_seconds == 98.0  # 40 → 138, not 100.5 → 138


def test_the_server_record_measures_the_downtime_from_the_first_power_off() -> None:
    server = ResourceRecord(
        "vm.web01.server", "server", Status.READY, {"server_id": "s", "at": 150.0,
                                                     "source_off_at": 40.0},
    )  # fmt: skip
    (vm,) = collect({DISK.address: DISK, server.address: server}, [SECOND]).vms
    assert vm.downtime_seconds == 110.0
    assert vm.source_off_since is None


def test_a_source_left_off_with_no_server_is_reported(tmp_path: Path) -> None:
    conversion = ResourceRecord(
        "vm.web01.conversion", "conversion", Status.IN_PROGRESS,
        {"source_power": "poweredOn", "powered_off": "graceful", "powered_off_at": 40.0},
    )  # fmt: skip
    report = collect({DISK.address: DISK, conversion.address: conversion}, [FIRST])
    said = "source powered off by ferry at 1970-01-01 00:00:40 UTC, no server yet"
    text, _ = markdown(report, tmp_path / "report")
    assert said in text and "off, no server yet" in text
    assert said in html(report)


def test_each_failed_attempts_time_off_is_reported_beside_the_downtime(tmp_path: Path) -> None:
    """Break-it 12o M3: web01 powered off three times (two attempts failed and powered it back
    on); the report showed only the last attempt's downtime."""
    failed = [
        ev(10.0, "source_off", vm="web01", how="graceful", since=10.0),
        ev(31.0, "source_on", vm="web01"),
        ev(50.0, "source_off", vm="web01", how="graceful", since=50.0),
        ev(74.0, "source_on", vm="web01"),
    ]
    last = [
        ev(100.0, "source_off", vm="web01", how="graceful", since=100.0),
        ev(130.0, "node_start", address="vm.web01.server", kind="server"),
        ev(149.8, "node_end", address="vm.web01.server", outcome="done", seconds=19.8),
    ]
    report = collect({DISK.address: DISK}, [failed, last])
    (vm,) = report.vms
    assert (vm.downtime_seconds, vm.outages) == (49.8, [21.0, 24.0])
    text, _ = markdown(report, tmp_path / "report")
    assert "49.8 s (+ 21.0 s, 24.0 s off in failed attempts)" in text, text
