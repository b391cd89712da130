"""The report says what happened (issue 13 item 6): a VM with convert: false is not 'converted',
a deleted volume's syncs are not a disk's history, a digest over changed areas is labelled as
such, axis labels never repeat, failed and killed applies and half-done cutovers show as such, and
throughput is data moved per second (holes skipped are not a transfer)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from engine.model.state import ResourceRecord, Status
from engine.report import svg
from engine.report.data import Sync, collect
from engine.report.render import html, markdown

SVG = "{http://www.w3.org/2000/svg}"
MiB, GiB = 1024**2, 1024**3


def ev(ts: float, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **fields}


def start(ts: float, mode: str = "cutover") -> dict[str, Any]:
    return ev(ts, "apply_start", summary={}, vms=[{"name": "web01", "target": "web01",
                                                   "mode": mode, "concerns": []}])  # fmt: skip


def synced(ts: float, volume_id: str | None, **more: Any) -> dict[str, Any]:
    fields = {
        "address": "vm.web01.disk[2000]",
        "vm": "web01",
        "kind": "full",
        "bytes": 2 * GiB,
        "seconds": 2.0,
        **({"volume_id": volume_id} if volume_id else {}),
        **more,
    }
    return ev(ts, "synced", **fields)  # fmt: skip


def end(ts: float, **counts: Any) -> dict[str, Any]:
    return ev(ts, "apply_end", **{"ok": True, "done": 3, "failed": 0, "skipped": 0,
                                  "seconds": 5.0, **counts})  # fmt: skip


def disk(volume_id: str = "v2", **attrs: Any) -> ResourceRecord:
    return ResourceRecord(
        "vm.web01.disk[2000]", "volume", Status.READY, {"volume_id": volume_id, **attrs}
    )


def conversion(tool: str | None, status: Status = Status.READY) -> ResourceRecord:
    return ResourceRecord("vm.web01.conversion", "conversion", status, {"tool": tool})


SERVER = ResourceRecord("vm.web01.server", "server", Status.READY, {"server_id": "srv-1"})


def test_a_vm_not_converted_is_not_shown_as_converted(tmp_path: Path) -> None:
    served = disk(converted=True)  # a server booted from it: never synced again
    records = {served.address: served, "vm.web01.conversion": conversion(None),
               SERVER.address: SERVER}  # fmt: skip
    report = collect(records, [[start(0)]])
    assert "<td>no (convert: false)</td>" in html(report)
    text, _ = markdown(report, tmp_path / "r")
    assert "| no (convert: false) |" in text and "| yes" not in text
    done = collect(
        {served.address: served, "vm.web01.conversion": conversion("virt-v2v-in-place")},
        [[start(0)]],
    )
    assert "<td>yes (virt-v2v-in-place)</td>" in html(done)
    converted = ResourceRecord(  # converted at epoch 7, no server yet; then synced at epoch 8
        "vm.web01.conversion", "conversion", Status.READY,
        {"tool": "virt-v2v-in-place", "epochs": {"2000": 7}},
    )  # fmt: skip
    for epoch, shown in ((7, "yes (virt-v2v-in-place)"), (8, "no")):
        volume = disk(epoch=epoch)
        page = html(collect({volume.address: volume, converted.address: converted}, []))
        assert f"<td>{shown}</td>" in page, epoch


def test_syncs_of_a_deleted_volume_are_not_the_disks_history() -> None:
    old = [start(0, "replicate"), synced(1, None)]  # events from before volume_id was kept
    destroy = [start(10, "replicate"),
               ev(11, "node_start", address="vm.web01.disk[2000]", kind="volume",
                  action="delete")]  # fmt: skip
    again = [start(20, "replicate"), synced(21, "v2", bytes=GiB, read=GiB),
             synced(22, "v1", bytes=3 * GiB)]  # fmt: skip
    report = collect({"vm.web01.disk[2000]": disk("v2")}, [old, destroy, again])
    page = html(report)
    row = page[page.index("<td>vm.web01.disk[2000]</td>") :].split("</tr>")[0]
    assert "full 1.0 GiB" in row and "2.0 GiB" not in row and "3.0 GiB" not in row
    assert "sync of a volume deleted since: vm.web01.disk[2000]: full 2.0 GiB" in page
    assert "vm.web01.disk[2000] (volume v1): full 3.0 GiB" in page


def test_a_digest_over_changed_areas_is_not_shown_as_a_disk_digest() -> None:
    areas = disk(last_sync={"kind": "delta", "sha256": "ab" * 32, "verified": "changed areas"})
    page = html(collect({areas.address: areas}, []))
    assert f"<td>changed areas only (not a disk digest): {'ab' * 32}</td>" in page
    whole = disk(last_sync={"kind": "full", "sha256": "cd" * 32, "verified": "whole disk"})
    assert f"<td>whole disk: {'cd' * 32}</td>" in html(collect({whole.address: whole}, []))


@pytest.mark.parametrize("span", [0.3, 0.5, 2.0, 3.0, 7.0, 15.2, 59.0, 130.0, 600.0, 7300.0])
def test_timeline_axis_labels_never_repeat(span: float) -> None:
    events = [ev(0, "node_start", address="vm.web01.server", kind="server"),
              ev(span, "node_end", address="vm.web01.server", outcome="done")]  # fmt: skip
    picture = ET.fromstring(svg.timeline(collect({}, [events]).timeline))
    labels = [t.text for t in picture.iter(f"{SVG}text") if t.get("class") == "tick"]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


def test_failed_and_killed_applies_and_a_half_done_cutover_are_shown(tmp_path: Path) -> None:
    failed = [start(0), ev(1, "node_start", address="vm.web01.conversion", kind="conversion"),
              ev(9, "node_end", address="vm.web01.conversion", outcome="failed",
                 error="virt-v2v-in-place failed: no root device"),
              end(10, ok=False, done=4, failed=1, skipped=1)]  # fmt: skip
    killed = [start(100), ev(101, "node_start", address="vm.web01.conversion", kind="conversion")]
    records = {"vm.web01.disk[2000]": disk(), "vm.web01.conversion": conversion("virt-v2v-in-place",
                                                             Status.IN_PROGRESS)}  # fmt: skip
    report = collect(records, [failed, killed])
    assert [r.outcome for r in report.runs] == ["failed", "killed"]
    text, _ = markdown(report, tmp_path / "r")
    assert "| 1 | 1970-01-01 00:00:00 UTC | 5.0 s | failed | 4 done, 1 failed, 1 skipped | " \
           "0 B | vm.web01.conversion: virt-v2v-in-place failed: no root device |" \
           in text  # fmt: skip
    assert "| 2 | 1970-01-01 00:01:40 UTC | — | killed (no end recorded) | 0 done, 0 failed, " \
           "0 skipped | 0 B | vm.web01.conversion: running when the apply ended unrecorded " \
           "(killed) |" in text  # fmt: skip
    assert "| web01 | cutover | cutover not finished |" in text
    assert "- cutover not finished: the conversion did not complete" in text
    ok = collect({"vm.web01.disk[2000]": disk(), SERVER.address: SERVER}, [[start(0), end(5)]])
    assert "| web01 | cutover | cut over |" in markdown(ok, tmp_path / "r")[0]


def test_a_sparse_full_copy_shows_data_moved_per_second_and_holes_apart() -> None:
    sparse = Sync("vm.web01.disk[2000]", "full", 20 * GiB, 0.2, 0.0, read=42 * MiB,
                  skipped=20 * GiB - 42 * MiB, step_seconds=16.0)  # fmt: skip
    picture = svg.throughput([sparse])
    assert "210.0 MiB/s" in picture and "20480" not in picture and "102400" not in picture
    assert "42.0 MiB moved in 0.2 s, 20.0 GiB of holes skipped" in picture
    report = collect({"vm.web01.disk[2000]": disk("v1")},
                     [[start(0, "replicate"), synced(1, "v1", bytes=20 * GiB, read=42 * MiB,
                                                     skipped=20 * GiB - 42 * MiB,
                                                     step_seconds=16.0)]])  # fmt: skip
    page = html(report)
    assert "full 42.0 MiB in 16.0 s (20.0 GiB of holes skipped)" in page
    assert "<td>42.0 MiB</td>" in page  # the summary's data moved
