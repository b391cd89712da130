"""The volume's own `ferry_updated_at` stamp (break-it 12n H1): the host step that attaches a
volume clears it before its attach and sets it to Cinder's updated_at right after its own
detach, so a test boot is seen even when the coordinator recorded nothing (it lost the broker
while an agent still held the volume; the agent detached after the apply ended). With no value
in the record, ferry compares against that stamp, a stamp of this state's only. A fake Cinder
(its updated_at moves with each attach and detach, never with a metadata set), a real Applier
on a real SQLite state; the copy itself is a fake."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import ChangedOutsideError, StoppedError
from engine.executor import host
from engine.model.observed import ObservedVolume
from engine.model.plan import Action, Change
from engine.model.state import STAMP_KEY, UPDATED_AT, changed_outside, last_known, own_stamp
from engine.planner.diff import own_stamped
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor import fakes

MiB = 1024**2
DISK = "vm.web01.disk[2000]"
DETACHED = "2026-12-02T11:00:00.000000"  # the agent's detach, after the apply ended
BOOTED = "2026-12-02T11:05:00.000000"  # a test boot's attach and detach since
# an interrupted delta whose coordinator lost the broker: no UPDATED_AT recorded
INTERRUPTED = {"volume_id": "vol-0", "change_id": "52 aa/10", "copy": "delta",
               "copied_bytes": 128 * MiB, "copy_change_id": "52 aa/14"}  # fmt: skip


class _Cinder:
    """One volume: its metadata (merged, as Cinder's POST), attachments and updated_at, which
    moves with each attach and detach (`touch`), not with a metadata set; `log` in order."""

    def __init__(self, updated_at: str, metadata: dict[str, str]) -> None:
        self.updated_at, self.metadata = updated_at, dict(metadata)
        self.servers: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.ticks = 0

    def get_volume(self, _volume_id: str) -> Any:
        attachments = [{"server_id": s} for s in self.servers]
        return SimpleNamespace(
            attachments=attachments, updated_at=self.updated_at, metadata=dict(self.metadata)
        )

    def set_volume_metadata(self, _volume_id: str, **metadata: str) -> None:
        self.metadata.update(metadata)
        self.log.extend(("metadata", f"{k}={v}") for k, v in metadata.items())

    def touch(self, what: str, server: str) -> None:
        self.ticks += 1
        self.updated_at = f"2026-12-02T12:00:{self.ticks:02d}.000000"
        self.servers = [server] if what == "attach" else []
        self.log.append((what, server))


def _host(monkeypatch: pytest.MonkeyPatch, cinder: _Cinder, copy: Any) -> host.Host:
    """A Host on `cinder` whose attach and detach move its updated_at, whose copy is `copy`."""
    monkeypatch.setattr(host.volumes, "attach", lambda _c, s, _v: cinder.touch("attach", s))
    monkeypatch.setattr(host.volumes, "detach", lambda _c, s, _v: cinder.touch("detach", s))
    monkeypatch.setattr(host, "_copy_job", copy)
    sources = SimpleNamespace(source=lambda *_: SimpleNamespace(describe=lambda: "fake"))
    devices = SimpleNamespace(device=lambda *_: Path("/dev/null"))
    return host.Host(SimpleNamespace(block_storage=cinder), sources, devices)  # type: ignore[arg-type]


def _job(unchanged_since: str | None = None) -> host.SyncJob:
    source = {"vm_moref": "vm-1", "instance_uuid": "u", "snapshot_moref": "snap-1", "key": 2000,
              "capacity": 2048 * MiB, "file_name": "[ds] web01.vmdk", "thin": True,
              "change_id": "52 aa/20"}  # fmt: skip
    return host.SyncJob("vol-0", "srv-a", source, unchanged_since=unchanged_since)


def _copied(cinder: _Cinder) -> Any:
    def copy(*_: Any) -> Any:
        cinder.log.append(("copy", ""))
        return host.CopyStats(bytes_read=MiB, bytes_written=MiB)

    return copy


def test_a_sync_clears_the_stamp_before_its_attach_and_stamps_after_its_detach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cinder = _Cinder(DETACHED, {STAMP_KEY: DETACHED})
    host.sync(_job(DETACHED), _host(monkeypatch, cinder, _copied(cinder)), host.Callbacks())
    assert cinder.log == [
        ("metadata", f"{STAMP_KEY}="),
        ("attach", "srv-a"),
        ("copy", ""),
        ("detach", "srv-a"),
        ("metadata", f"{STAMP_KEY}={cinder.updated_at}"),  # the value after the detach
    ]


def test_a_stopped_sync_stamps_after_its_detach_too(monkeypatch: pytest.MonkeyPatch) -> None:
    cinder = _Cinder(DETACHED, {})

    def stopped(*_: Any) -> Any:
        raise StoppedError("stopped at the checkpoint")

    with pytest.raises(StoppedError):
        host.sync(_job(DETACHED), _host(monkeypatch, cinder, stopped), host.Callbacks())
    assert cinder.metadata[STAMP_KEY] == cinder.updated_at
    assert [what for what, _ in cinder.log] == ["metadata", "attach", "detach", "metadata"]


def test_a_sync_cut_off_before_its_detach_leaves_no_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its agent killed with -9 mid-copy (here: its detach fails): the stamp stays cleared, so
    nothing vouches for the volume (unknown, as before: the checkpoint is trusted)."""
    cinder = _Cinder(DETACHED, {STAMP_KEY: DETACHED})
    h = _host(monkeypatch, cinder, _copied(cinder))

    def killed(*_: Any) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(host.volumes, "detach", killed)
    with pytest.raises(RuntimeError):
        host.sync(_job(DETACHED), h, host.Callbacks())
    assert cinder.metadata[STAMP_KEY] == "" and cinder.servers == ["srv-a"]


def test_a_copy_sent_while_our_task_held_the_volume_checks_that_tasks_stamp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent while attached to this host (`unchanged_since` None): once that task detached and
    stamped it, a test boot before this copy's attach is refused, nothing written."""
    cinder = _Cinder(BOOTED, {STAMP_KEY: DETACHED})
    with pytest.raises(ChangedOutsideError, match=f"updated_at {DETACHED} → {BOOTED}"):
        host.sync(_job(None), _host(monkeypatch, cinder, _copied(cinder)), host.Callbacks())
    assert cinder.log == []


def test_a_redelivery_after_its_agent_detached_then_died_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery sent at SENT ran, its agent detached and stamped the volume, then was killed
    before its ack (a lab run of test_agents: the redelivery refused its own volume as changed
    outside ferry). The value equals that stamp: taken, copied; touched after it: refused."""
    sent = "2026-12-02T10:59:00.000000"
    cinder = _Cinder(DETACHED, {STAMP_KEY: DETACHED})
    host.sync(_job(sent), _host(monkeypatch, cinder, _copied(cinder)), host.Callbacks())
    assert ("copy", "") in cinder.log
    touched = _Cinder(BOOTED, {STAMP_KEY: DETACHED})
    with pytest.raises(ChangedOutsideError, match=f"updated_at {sent} → {BOOTED}"):
        host.sync(_job(sent), _host(monkeypatch, touched, _copied(touched)), host.Callbacks())
    assert touched.log == []


def test_the_record_comes_first_then_this_states_stamp() -> None:
    mine = {"ferry_state": "lin-a", STAMP_KEY: DETACHED}
    assert own_stamp(mine, "lin-a") == DETACHED
    assert own_stamp(mine, "lin-b") is None  # an adopted volume's stamp: another state's
    assert own_stamp({"ferry_state": "lin-a", STAMP_KEY: ""}, "lin-a") is None  # cut off
    assert last_known({UPDATED_AT: BOOTED}, DETACHED) == BOOTED
    assert last_known({}, DETACHED) == DETACHED and last_known({}, None) is None
    assert changed_outside(INTERRUPTED, "vol-0", DETACHED, DETACHED) == ""
    assert "changed outside ferry" in changed_outside(INTERRUPTED, "vol-0", BOOTED, DETACHED)
    assert changed_outside(INTERRUPTED, "vol-0", BOOTED) == ""  # nothing known: as before


def _what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: str, lineage: str = "") -> Any:
    """The interrupted delta's next sync, the volume at updated_at `now` stamped DETACHED by
    the state of `lineage` ("": this applier's own)."""
    a = fakes.one_vm_applier(tmp_path, "web01", "replicate")
    metadata = {"ferry_state": lineage or a.lineage, STAMP_KEY: DETACHED}
    a.ctx.conn = SimpleNamespace(block_storage=_Cinder(now, metadata))
    monkeypatch.setattr(
        "engine.executor.volume_steps.changed_areas", lambda *_: [(0, 4 * MiB), (512 * MiB, MiB)]
    )
    change = Change(DISK, "volume", Action.UPDATE, "delta", dict(INTERRUPTED), {})
    disk = DiskInfo(2000, 2048 * MiB, "[ds] web01/web01.vmdk", True, "52 aa/14")
    return a._what_to_copy(change, dict(INTERRUPTED), None, None, disk)


def test_an_untouched_volume_resumes_its_delta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    what = _what(tmp_path, monkeypatch, DETACHED)
    assert (what.kind, what.start_at) == ("delta", 128 * MiB)


def test_a_volume_touched_after_its_agents_detach_is_copied_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    what = _what(tmp_path, monkeypatch, BOOTED)
    assert (what.kind, what.areas, what.start_at, what.dst_is_zero) == ("full", None, 0, False)
    assert f"Cinder updated_at {DETACHED} → {BOOTED}" in what.why


def test_another_states_stamp_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    what = _what(tmp_path, monkeypatch, BOOTED, lineage="another-state")
    assert (what.kind, what.start_at) == ("delta", 128 * MiB)


def test_seen_reads_the_metadata_in_the_same_get() -> None:
    cinder = _Cinder(DETACHED, {STAMP_KEY: DETACHED})
    conn = SimpleNamespace(block_storage=cinder)
    assert volumes.seen(conn, "vol-0") == volumes.Seen([], DETACHED, {STAMP_KEY: DETACHED})


def test_the_planner_keeps_the_stamp_of_this_states_volumes_only() -> None:
    found = ObservedVolume(
        "vol-0", "web01-2000", "available", 2, "u", 2000, "52 aa/10", False, lineage="lin-a",
        updated_at=BOOTED, stamp=DETACHED,
    )  # fmt: skip
    assert own_stamped(found, "lin-a") is found
    assert own_stamped(found, "lin-b").stamp is None  # adopted from another state: not trusted
