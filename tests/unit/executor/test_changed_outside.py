"""A replica volume touched outside ferry (break-it 12l F2: a "test boot"), as the executor sees
it: each step that writes or reads a volume leaves its Cinder updated_at in the record, so only
what something else did moves it. A real Applier on a real SQLite state; the host's compare and
Cinder's updated_at are fakes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import ChangedOutsideError, OpenStackError, StoppedError
from engine.executor import host, volume_steps
from engine.model.plan import Action, Change
from engine.model.state import UPDATED_AT, ResourceRecord, Status
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor import fakes

DISK = "vm.web01.disk[2000]"
SYNCED = "2026-12-02T04:00:00.000000"  # after ferry's last sync
ATTRS = {"volume_id": "vol-0", "change_id": "52 aa/10", UPDATED_AT: SYNCED}


def applier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamps: list[str], attached: bool = False
) -> Any:
    """web01's verify step; Cinder answers the `stamps` in turn (the last one for ever), and
    the volume is settled, attached to conv-a's server when `attached` (else detached)."""
    change = Change(DISK, "volume", Action.VERIFY, "verify", dict(ATTRS), dict(ATTRS))
    a = fakes.one_vm_applier(tmp_path, "web01", "replicate", (change,))
    a.ctx.store.write([ResourceRecord(DISK, "volume", Status.READY, dict(ATTRS))], [])
    answers = list(stamps)

    def stamp(_conn: Any, _volume: str) -> str:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def seen(conn: Any, volume: str) -> volumes.Seen:  # one GET: attachments and updated_at
        return volumes.Seen(["srv-a"] if attached else [], stamp(conn, volume))

    monkeypatch.setattr(volume_steps.volumes, "updated_at", stamp)
    monkeypatch.setattr(volume_steps.volumes, "seen", seen)
    monkeypatch.setattr(volume_steps.volumes, "settle", lambda _c, _v, _t: "")
    monkeypatch.setattr(a, "_vm", lambda _n: SimpleNamespace(_moId="vm-1"))
    monkeypatch.setattr(a, "host_for", lambda _n: ("conv-a", "srv-a"))
    monkeypatch.setattr(a, "data_areas", lambda *_: None)

    def stopped(*_: Any) -> Any:
        raise StoppedError("stopped")

    monkeypatch.setattr(a, "on_host", lambda: SimpleNamespace(compare=stopped))
    return a


def compare(a: Any) -> None:
    disk = DiskInfo(2000, 2 * 1024**3, "[ds] web01/web01.vmdk", True, "52 aa/10")
    with pytest.raises(StoppedError):
        a._compare(
            a.changes[DISK], volume_steps.Address.parse(DISK), dict(ATTRS), SimpleNamespace(
                _moId="snap-1"), disk
        )  # fmt: skip


def test_a_compare_stopped_keeps_ferry_s_own_attach_out_of_the_next_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `--verify` compare stopped (Ctrl-C) after its host attached and detached the volume:
    the record takes the updated_at after that detach, so the next plan does not copy the
    volume in full for ferry's own attach."""
    a = applier(tmp_path, monkeypatch, [SYNCED, "2026-12-02T05:00:00.000000"])
    compare(a)
    assert a.ctx.store.read().resources[DISK].attributes[UPDATED_AT] == "2026-12-02T05:00:00.000000"


def test_a_compare_stopped_on_a_volume_touched_before_keeps_it_untrusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Touched outside ferry before the compare began: the stop records nothing new, the next
    plan still copies the volume in full."""
    a = applier(tmp_path, monkeypatch, ["2026-12-02T04:30:00.000000", "2026-12-02T05:00:00.000000"])
    compare(a)
    assert a.ctx.store.read().resources[DISK].attributes[UPDATED_AT] == SYNCED


def test_an_adopted_volume_keeps_its_updated_at_so_a_later_touch_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12m F1: an adoption recorded no updated_at, so a test boot after it was never
    seen (build-old: "No changes" with a foreign server's bytes in the replica)."""
    after = {"volume_id": "vol-0", "change_id": "52 aa/10", "disk_key": 2000}
    change = Change(DISK, "volume", Action.READ, "adopt", None, after)
    a = fakes.one_vm_applier(tmp_path, "web01", "replicate", (change,))
    monkeypatch.setattr(volume_steps.volumes, "managed_by", lambda _c, _v: "")
    monkeypatch.setattr(volume_steps.volumes, "set_metadata", lambda *_: None)
    monkeypatch.setattr(volume_steps.volumes, "updated_at", lambda _c, _v: SYNCED)
    a._adopt(change, volume_steps.Address.parse(DISK))
    assert a.ctx.store.read().resources[DISK].attributes[UPDATED_AT] == SYNCED


@pytest.mark.parametrize("copied", [0, 182 * 1024**2])
def test_a_saved_cutover_resuming_a_copy_of_a_touched_volume_is_refused_before_the_power_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copied: int
) -> None:
    """Break-it 12m F5: a saved cutover whose final sync resumes an interrupted full copy (the
    plan counts only the rest) was not refused when the volume was touched after the plan: the
    source went off, then the copy started over from 0. A copy from 0 (nothing written yet)
    was counted whole by the plan: not refused."""
    before = {"volume_id": "vol-0", "copy": "full", "copied_bytes": copied, UPDATED_AT: SYNCED}
    change = Change(DISK, "volume", Action.CREATE, "resume", dict(before), {"size_gib": 2})
    a = fakes.one_vm_applier(tmp_path, "web01", "cutover", (change,))
    a.ctx.store.write([ResourceRecord(DISK, "volume", Status.IN_PROGRESS, dict(before))], [])
    monkeypatch.setattr(
        volume_steps.volumes, "updated_at", lambda _c, _v: "2026-12-02T05:44:29.000000"
    )
    record = a.ctx.store.read().resources[DISK]
    if copied:
        with pytest.raises(OpenStackError, match="the source was not powered off"):
            a._unplanned_full_copy(change, record)
    else:
        a._unplanned_full_copy(change, record)


def test_a_volume_touched_while_its_copy_waited_for_its_host_is_not_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break-it 12m F7: the coordinator checks the volume, then the job may wait in an agent's
    queue; a test boot meanwhile would be absorbed by the delta. The host checks again right
    before its attach: nothing attached, nothing written (ChangedOutsideError)."""
    job = host.SyncJob("vol-0", "srv-a", {}, unchanged_since=SYNCED)
    assert host.SyncJob.from_json(job.to_json()).unchanged_since == SYNCED  # across the broker
    attached: list[str] = []
    stamps = [SYNCED]
    reads: list[str] = []

    def seen(_conn: Any, volume: str) -> volumes.Seen:
        reads.append(volume)
        return volumes.Seen(attached, stamps[-1])

    monkeypatch.setattr(host.volumes, "seen", seen)
    host.unchanged(None, job)
    assert reads == ["vol-0"]  # one GET: its attachments and updated_at
    stamps.append("2026-12-02T05:00:00.000000")
    with pytest.raises(ChangedOutsideError, match="nothing written; plan again"):
        host.unchanged(None, job)
    host.unchanged(None, host.SyncJob("vol-0", "srv-a", {}))  # an older coordinator's: unchecked
    attached.append("srv-a")  # a redelivered job: its first delivery attached it here
    host.unchanged(None, job)


def test_a_compare_failed_with_its_volume_still_attached_stamps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """break-it 14c F2: the host went silent (its agent killed -9), the volume stays attached
    to it: no updated_at is recorded then (ferry's own detach later moves it), as after a kill
    -9: the next plan trusts the volume, it is not taken for touched outside ferry."""
    a = applier(tmp_path, monkeypatch, [SYNCED, "2026-12-02T05:00:00.000000"], attached=True)
    compare(a)
    assert UPDATED_AT not in a.ctx.store.read().resources[DISK].attributes


def test_a_copy_failed_with_its_volume_still_attached_keeps_its_checkpoint_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a copy: the agent went silent mid-copy, the volume is still attached to its
    host: the in-progress record gets no updated_at, so the re-placed copy resumes from its
    checkpoint after ferry detaches the volume from that host (before: the stamp taken while
    attached, that detach moved it, the copy started over from 0)."""
    a = applier(tmp_path, monkeypatch, ["2026-12-02T05:00:00.000000"], attached=True)
    attrs = {"volume_id": "vol-0", "copy": "full", "copied_bytes": 1024**3}
    a.ctx.store.write([ResourceRecord(DISK, "volume", Status.IN_PROGRESS, dict(attrs))], [])

    def silent(*_: Any) -> Any:
        raise RuntimeError("agent ferry-conversion-03 went silent for 20 s mid-copy")

    monkeypatch.setattr(a, "_callbacks", lambda *_: None)
    monkeypatch.setattr(a, "_run_sync", silent)
    disk = DiskInfo(2000, 2 * 1024**3, "[ds] web01/web01.vmdk", True, "52 aa/10")
    job = SimpleNamespace(volume_id="vol-0")
    with pytest.raises(RuntimeError):
        a._copy(DISK, dict(attrs), disk, job, "conv-a")
    record = a.ctx.store.read().resources[DISK]
    assert UPDATED_AT not in record.attributes
    assert record.attributes["copied_bytes"] == 1024**3


def test_a_compare_waits_first_for_a_volume_cinder_is_detaching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """break-it 14c F1: the step waits (bounded) for a volume an interrupted apply's host is
    still detaching before its host attaches it, and says so in the VM's log."""
    a = applier(tmp_path, monkeypatch, [SYNCED])
    waited: list[tuple[str, float]] = []

    def settle(_c: Any, volume_id: str, timeout: float) -> str:
        waited.append((volume_id, timeout))
        return "detaching"

    monkeypatch.setattr(volume_steps.volumes, "settle", settle)
    said: list[str] = []
    monkeypatch.setattr(a.ctx, "say", lambda _vm, line: said.append(line))
    compare(a)
    assert waited == [("vol-0", volume_steps.SETTLE_SECONDS)]
    assert any("was 'detaching'" in line and "waited for it to settle" in line for line in said)


class _Cinder:
    """block_storage with one volume (or none: gone), counting its GETs."""

    def __init__(self, volume: Any) -> None:
        self.volume, self.gets = volume, 0

    def get_volume(self, volume_id: str) -> Any:
        self.gets += 1
        if self.volume is None:
            raise os_exc.NotFoundException(f"Volume {volume_id} could not be found.")
        return self.volume


def test_a_copy_reads_its_volumes_attachments_and_updated_at_in_one_get(
    tmp_path: Path,
) -> None:
    """Per copy, the check as it is sent (`_as_sent`), the host's before its attach
    (`host.unchanged`) and the stamp after a stop (`_stamped`) each GET the volume once, not
    once for its attachments and once for its updated_at."""
    attached = SimpleNamespace(attachments=[{"server_id": "srv-a"}], updated_at=SYNCED)
    cinder = _Cinder(attached)
    conn = SimpleNamespace(block_storage=cinder)
    assert volumes.seen(conn, "vol-0") == volumes.Seen(["srv-a"], SYNCED) and cinder.gets == 1
    cinder.volume = SimpleNamespace(attachments=[], updated_at=SYNCED)
    a = fakes.one_vm_applier(tmp_path, "web01", "replicate", ())
    a.ctx.conn = conn
    assert a._as_sent("vol-0", "srv-a") == SYNCED and cinder.gets == 2
    cinder.volume = attached
    assert a._as_sent("vol-0", "srv-a") is None and cinder.gets == 3  # held by a task of ours
    host.unchanged(conn, host.SyncJob("vol-0", "srv-b", {}, unchanged_since=SYNCED))
    assert cinder.gets == 4
    a._stamped(DISK, dict(ATTRS), "vol-0", Status.IN_PROGRESS)  # attached: nothing recorded
    assert cinder.gets == 5 and DISK not in a.ctx.store.read().resources
    cinder.volume = None  # gone: one line, as the two reads said it before
    with pytest.raises(OpenStackError, match="reading vol-0: "):
        volumes.seen(conn, "vol-0")
