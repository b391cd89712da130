"""The report per conversion host (issue 14): copy and conversion records keep the host that
wrote them, the timeline has one lane group per host, and a per-host total (VMs, data moved,
seconds copying, throughput) counts only data read and written, never holes or zeros."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from engine.model.state import RECORDED_HOST, ResourceRecord, Status
from engine.report import svg
from engine.report.data import UNRECORDED_HOST, Sync, busy, collect, lanes, of_state
from engine.report.render import html, markdown

SVG = "{http://www.w3.org/2000/svg}"
MiB, GiB = 1024**2, 1024**3
H1, H2 = "ferry-conversion-01", "ferry-conversion-02"


def ev(ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **fields}


def copy(
    ts: float, vm: str, host: str | None, seconds: float, **fields: Any
) -> list[dict[str, Any]]:
    """A copy's node_start, synced and node_end events."""
    address = f"vm.{vm}.disk[2000]"
    on = {"host": host} if host else {}
    return [
        ev(ts, "node_start", address=address, kind="volume", vm=vm, **on),
        ev(ts + seconds, "synced", address=address, vm=vm, kind="full", seconds=seconds,
           volume_id=f"v-{vm}", **on, **fields),
        ev(ts + seconds, "node_end", address=address, outcome="done", seconds=seconds),
    ]  # fmt: skip


def start(*names: str) -> dict[str, Any]:
    vms = [{"name": n, "target": n, "mode": "replicate", "concerns": []} for n in names]
    return ev(0, "apply_start", summary={}, vms=vms)


def record(vm: str, host: str) -> ResourceRecord:
    return ResourceRecord(
        f"vm.{vm}.disk[2000]", "volume", Status.READY, {"volume_id": f"v-{vm}", RECORDED_HOST: host}
    )


# win-app01: a 20 GiB sparse disk with 40 MiB of data on a destination not read as zeros: its
# 20 GiB "bytes" are mostly zeros written in 1 s (the old chart's 20480 MiB/s)
SPARSE = {"bytes": 20 * GiB, "read": 40 * MiB, "skipped": 0}
EVENTS = [
    start("web01", "db01", "win-app01"),
    ev(0.1, "node_start", address="vm.web01.snapshot", kind="source_snapshot", vm="web01"),
    ev(0.5, "node_end", address="vm.web01.snapshot", outcome="done", seconds=0.4),
    *copy(1.0, "web01", H1, 4.0, bytes=400 * MiB, read=400 * MiB),  # 1..5 on host 1
    *copy(2.0, "db01", H1, 4.0, bytes=200 * MiB, read=200 * MiB),  # 2..6: overlaps web01
    *copy(1.0, "win-app01", H2, 1.0, **SPARSE),
    ev(6.5, "node_start", address="vm.web01.conversion", kind="conversion", vm="web01", host=H1),
    ev(8.0, "node_end", address="vm.web01.conversion", outcome="done", seconds=1.5),
]  # fmt: skip
RECORDS = {r.address: r for r in (record("web01", H1), record("db01", H1),
                                  record("win-app01", H2))}  # fmt: skip


def test_the_timeline_has_one_lane_group_per_host() -> None:
    bars = lanes(EVENTS)
    slots = {(b.address, b.host, b.lane) for b in bars if b.kind in ("volume", "conversion")}
    assert slots == {
        ("vm.web01.disk[2000]", H1, "slot 1"),
        ("vm.db01.disk[2000]", H1, "slot 2"),  # overlaps web01's copy on the same host
        ("vm.win-app01.disk[2000]", H2, "slot 1"),  # host 2's own first slot
        ("vm.web01.conversion", H1, "slot 1"),
    }
    assert [b.host for b in bars if b.kind == "source_snapshot"] == [""]  # the coordinator's
    assert svg.rows(bars) == [(H1, ""), (H1, "slot 1"), (H1, "slot 2"), (H2, ""),
                              (H2, "slot 1"), ("", "control 1")]  # fmt: skip
    picture = ET.fromstring(svg.timeline(bars))
    headers = [t.text for t in picture.findall(f"{SVG}text") if t.get("class") == "host"]
    assert headers == [H1, H2]
    assert len(picture.findall(f"{SVG}rect")) == 5
    tips = [r.findtext(f"{SVG}title") or "" for r in picture.findall(f"{SVG}rect")]
    assert any(t.startswith(f"vm.win-app01.disk[2000] (volume on {H2}, done)") for t in tips)


def test_per_host_totals_count_data_moved_over_the_seconds_copying() -> None:
    report = collect(RECORDS, [EVENTS])
    one, two = report.hosts
    assert (one.host, one.vms, one.copies, one.moved, one.seconds) == (H1, 2, 2, 600 * MiB, 5.0)
    assert one.throughput == 120 * MiB  # 600 MiB over 1..6 s: the overlap counts once
    assert (two.host, two.vms, two.moved, two.seconds) == (H2, 1, 40 * MiB, 1.0)
    assert two.throughput == 40 * MiB  # data read, not the 20 GiB written: never 20480 MiB/s
    assert busy([(0, 2), (1, 3), (5, 6)]) == 4.0


def test_the_report_shows_hosts_their_totals_and_what_throughput_counts(tmp_path: Path) -> None:
    report = collect(RECORDS, [EVENTS])
    page = html(report)
    assert "<h2>Conversion hosts</h2>" in page
    assert "Holes skipped and zeros written are not data and count for nothing" in page
    assert f"<td>{H2}</td><td>1</td><td>1</td><td>40.0 MiB</td><td>1.0 s</td>" \
           "<td>40.0 MiB/s</td>" in page  # fmt: skip
    assert "20480" not in page and "20.0 GiB/s" not in page
    text, files = markdown(report, tmp_path / "r")
    assert f"| {H1} | 2 | 2 | 600.0 MiB | 5.0 s | 120.0 MiB/s |" in text
    assert f"| win-app01 | replicate | replicating | 1 | 40.0 MiB | — | — | — | {H2} |" in text
    timeline = next(body for path, body in files.items() if path.name.endswith("timeline.svg"))
    assert H1 in timeline and H2 in timeline


def test_syncs_without_data_read_or_host_recorded() -> None:
    """An event from before `read` was kept is no throughput (its bytes count zeros written);
    a sync with no host recorded is totalled apart, last."""
    legacy = Sync("vm.web01.disk[2000]", "full", 20 * GiB, 1.0, 1.0)
    assert legacy.throughput == 0.0
    assert "no copy measured yet" in svg.throughput([legacy])
    events = [start("web01", "db01"), *copy(1.0, "web01", None, 2.0, bytes=GiB, read=GiB),
              *copy(1.0, "db01", H1, 2.0, bytes=GiB, read=GiB),
              *copy(9.0, "db01", H1, 2.0, bytes=GiB)]  # fmt: skip
    report = collect({}, [events])
    assert [(t.host, t.copies, t.moved) for t in report.hosts] == [
        (H1, 1, GiB),  # the legacy copy (no read) is not counted
        (UNRECORDED_HOST, 1, GiB),
    ]


def test_a_report_reads_only_its_own_states_apply_logs() -> None:
    """PostgreSQL states share one log_dir (./state/logs): the report of one counted another
    state's copies in its host totals (lab: ferry-conversion-01 '2 VMs, 9 copies' for 1 VM and 2
    copies). apply_start names its state; a log naming another state is left out, an older log
    naming none is kept."""
    mine = [ev(0, "apply_start", state="postgresql://lab/ferry?schema=a", summary={}, vms=[]),
            *copy(1.0, "web01", H1, 1.0, bytes=MiB, read=MiB)]  # fmt: skip
    other = [ev(0, "apply_start", state="postgresql://lab/ferry?schema=b", summary={}, vms=[]),
             *copy(1.0, "db01", H1, 1.0, bytes=MiB, read=MiB)]  # fmt: skip
    older = [ev(0, "apply_start", summary={}, vms=[]),
             *copy(1.0, "win-app01", H2, 1.0, bytes=MiB, read=MiB)]  # fmt: skip
    kept = of_state([mine, other, older], "postgresql://lab/ferry?schema=a")
    assert kept == [mine, older]
    assert [(t.host, t.vms) for t in collect({}, kept).hosts] == [(H1, 1), (H2, 1)]


def test_a_re_placement_is_said_in_the_vm_notes(tmp_path: Path) -> None:
    """The apply's `replaced` events (issue 14: a VM whose conversion host is gone goes to
    another, or fails naming each host's reason): the report says each, with its time, in the
    VM's notes (before: not read, the report showed the new host with no word of the move)."""
    events = [
        start("web01", "db01"),
        ev(3600.0, "replaced", vm="web01", placed=H1, host=H2, reason="2 volume(s) fit"),
        ev(3601.0, "replaced", vm="db01", placed=H1, host=None, reason=f"{H2}: no agent"),
        *copy(3602.0, "web01", H2, 1.0, bytes=MiB, read=MiB),
    ]
    records = {r.address: r for r in (record("web01", H2), record("db01", H1))}
    report = collect(records, [events])
    by = {vm.name: vm for vm in report.vms}
    moved = f"01:00:00 UTC: re-placed from conversion host {H1} to {H2}: 2 volume(s) fit"
    assert by["web01"].replacements == [moved]
    assert by["db01"].replacements == [
        f"01:00:01 UTC: not re-placed from conversion host {H1}: {H2}: no agent"
    ]
    text, _ = markdown(report, tmp_path / "r")
    assert f"- {moved}" in text
    assert moved in html(report)
