"""The report from recorded state and apply events: sync history, measured downtime, lanes that
never overlap, and SVG/HTML/Markdown that parse."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from engine.model.state import ResourceRecord, Status
from engine.report import svg
from engine.report.data import collect, lanes
from engine.report.render import html, markdown

SVG = "{http://www.w3.org/2000/svg}"


def ev(ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **fields}


EVENTS = [
    ev(0, "apply_start", summary={}, vms=[{"name": "web01", "target": "web01", "mode": "cutover",
                                           "concerns": ["warning: VMware Tools not running"]}]),
    ev(0.1, "node_start", address="vm.web01.snapshot", kind="source_snapshot"),
    ev(0.2, "source_off", vm="web01", how="graceful"),
    ev(1.0, "node_end", address="vm.web01.snapshot", outcome="done", seconds=0.9),
    ev(1.1, "node_start", address="vm.web01.disk[2000]", kind="volume"),
    ev(1.1, "node_start", address="vm.web01.disk[2001]", kind="volume"),
    ev(1.2, "node_start", address="vm.web01.port[0]", kind="port"),
    ev(1.5, "node_end", address="vm.web01.port[0]", outcome="done", seconds=0.3),
    ev(3.0, "synced", address="vm.web01.disk[2000]", vm="web01", kind="delta", bytes=3 << 20,
       read=3 << 20, seconds=1.5, sha256="ab" * 32, verified="changed areas"),
    ev(3.0, "node_end", address="vm.web01.disk[2000]", outcome="done", seconds=1.9),
    ev(4.0, "node_end", address="vm.web01.disk[2001]", outcome="done", seconds=2.9),
    ev(4.1, "node_start", address="vm.web01.conversion", kind="conversion"),
    ev(9.0, "node_end", address="vm.web01.conversion", outcome="done", seconds=4.9),
    ev(9.1, "node_start", address="vm.web01.server", kind="server"),
    ev(15.2, "node_end", address="vm.web01.server", outcome="done", seconds=6.1),
]  # fmt: skip
RECORDS = {
    "vm.web01.disk[2000]": ResourceRecord(
        "vm.web01.disk[2000]", "volume", Status.READY,
        {"volume_id": "v1", "size_gib": 2, "converted": True,
         "last_sync": {"kind": "delta", "bytes": 3 << 20, "seconds": 1.5}},
    ),
    "vm.web01.server": ResourceRecord(
        "vm.web01.server", "server", Status.READY, {"server_id": "srv-1"}
    ),
    "vm.web01.conversion": ResourceRecord(
        "vm.web01.conversion", "conversion", Status.READY, {"seconds": 4.9}
    ),
}  # fmt: skip


def test_collect_measures_downtime_and_keeps_the_sync_history() -> None:
    report = collect(RECORDS, [EVENTS])
    (vm,) = report.vms
    assert vm.downtime_seconds == 15.0  # source off at 0.2 → server ACTIVE at 15.2
    assert vm.conversion_seconds == 4.9
    assert [(s.kind, s.bytes) for s in vm.syncs] == [("delta", 3 << 20)]
    assert vm.concerns == ["warning: VMware Tools not running"]
    assert vm.server == {"status": "ready", "server_id": "srv-1"}


def test_lanes_never_overlap_and_slots_hold_copies_and_conversions() -> None:
    bars = lanes(EVENTS)
    assert {b.lane for b in bars if b.kind in ("volume", "conversion")} == {"slot 1", "slot 2"}
    for lane in {b.lane for b in bars}:
        on = sorted((b.start, b.end) for b in bars if b.lane == lane)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(on))
    killed = lanes([*EVENTS, ev(16, "node_start", address="vm.db01.server", kind="server")])
    assert any(b.outcome == "killed" for b in killed)


def test_pictures_and_documents_parse(tmp_path: Path) -> None:
    report = collect(RECORDS, [EVENTS])
    timeline = ET.fromstring(svg.timeline(report.timeline))
    assert len(timeline.findall(f"{SVG}rect")) == 6
    chart = ET.fromstring(svg.throughput(report.vms[0].syncs))
    assert len(chart.findall(f"{SVG}rect")) == 1
    page = html(report)
    assert (
        page.count("<svg") == 2
        and "srv-1" in page
        and "changed areas only (not a disk digest): " + "ab" * 32 in page
    )
    text, files = markdown(report, tmp_path / "report")
    assert "| web01 | cutover |" in text and len(files) == 2
    assert all(ET.fromstring(content) is not None for content in files.values())
    empty = collect({}, [])
    assert "no apply has run yet" in svg.timeline(empty.timeline)
