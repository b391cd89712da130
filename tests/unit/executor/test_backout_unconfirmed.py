"""A VM set back to replicate after a cutover killed during its boot (break-it 12f F2): the
back-out's server delete and conversion delete (the graph's order). The server was never
confirmed, so the source is production: the server goes, each volume goes back to its
protection snapshot even without a conversion (the unconfirmed guest may have written it; the
next delta would keep those writes), the source is powered back on. What the server delete
records survives a kill before the conversion delete. A real SQLite state store; the cloud and
vSphere calls recorded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import FerryError
from engine.executor import cutover as module
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

SERVER = "vm.web01.server"
CONVERSION = "vm.web01.conversion"
DISK = "vm.web01.disk[2000]"
C = "52 aa/10"
PROTECTED = {
    "tool": None,  # convert: false: only the guest that booted wrote the volume
    "protection": {"vol-0": "snap-0"},
    "protected_change_ids": {"vol-0": C},
    "powered_off_at": 1796075717.0,
}


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The cloud calls the back-out makes, recorded; find_server answers `found`."""
    seen = SimpleNamespace(
        deleted=[], reverted=[], snapshots_deleted=[], detached=[], found=None, gone=set()
    )  # gone: the volume and snapshot ids deleted outside ferry
    seen.metadata = []  # (volume id, metadata) written
    seen.newer = {}  # snapshot id: the ids of its volume's snapshots taken after it
    seen.updated = {}  # volume id: its Cinder updated_at now (none: Cinder gives none)
    compute, volumes = module.compute, module.volumes
    monkeypatch.setattr(compute, "delete_server", lambda _c, i: seen.deleted.append(i))
    monkeypatch.setattr(compute, "find_server", lambda _c, _u: seen.found)
    monkeypatch.setattr(compute, "revert", lambda _c, v, s: seen.reverted.append((v, s)) or True)
    monkeypatch.setattr(compute, "delete_snapshot", lambda _c, s: seen.snapshots_deleted.append(s))
    monkeypatch.setattr(volumes, "detach", lambda _c, h, v: seen.detached.append((h, v)))
    monkeypatch.setattr(volumes, "exists", lambda _c, v: v not in seen.gone)
    monkeypatch.setattr(volumes, "updated_at", lambda _c, v: seen.updated.get(v))
    monkeypatch.setattr(compute, "snapshot_exists", lambda _c, s: s not in seen.gone)
    monkeypatch.setattr(compute, "newer_snapshots", lambda _c, _v, s: seen.newer.get(s, []))
    monkeypatch.setattr(volumes, "set_metadata", lambda _c, v, m: seen.metadata.append((v, m)))
    return seen


def recorded(store: SqliteStateStore, server: dict[str, Any]) -> None:
    store.write(
        [
            ResourceRecord(
                DISK, "volume", Status.READY, {"volume_id": "vol-0", "change_id": "52 aa/10"}
            ),
            ResourceRecord(CONVERSION, "conversion", Status.READY, dict(PROTECTED)),
            ResourceRecord(SERVER, "server", Status.IN_PROGRESS, {"name": "web01", **server}),
        ],
        [],
    )


def backout(store: SqliteStateStore, said: list[str], before: dict[str, Any] | None) -> Cutover:
    """The back-out's executor; `before`: the server delete's (None: the plan has none, as
    after a kill past it: the record is gone)."""
    changes = [
        Change(SERVER, "server", Action.DELETE, "back to replicate", before, None),
        Change(CONVERSION, "conversion", Action.DELETE, "back to replicate", dict(PROTECTED), None),
    ][0 if before is not None else 1 :]
    ctx = fakes.context(store, said)
    host = lambda _name: ("conv-1", "host-server")  # noqa: E731
    return Cutover(fakes.fake_applier(ctx, changes, host_for=host))


def test_the_unconfirmed_server_goes_the_volumes_revert_and_the_source_goes_back_on(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    power, said = _back_out(store, monkeypatch)
    assert cloud.deleted == ["srv-1"]
    assert cloud.detached == [("host-server", "vol-0")]
    assert cloud.reverted == [("vol-0", "snap-0")]  # convert: false, reverted all the same
    assert cloud.snapshots_deleted == ["snap-0"]
    assert power.powered_on == ["ref-web01"]
    assert set(store.read().resources) == {DISK}
    assert (
        "vm.web01: volume vol-0 back to its protection snapshot (undoing what the "
        "unconfirmed server may have written)" in said
    )
    on = next(
        i
        for i, line in enumerate(said)
        if line.startswith("vm.web01: source powered back on (ferry powered it")
    )
    assert on < len(said) - 1  # production first, then the volumes (break-it 12g F1)


def test_a_kill_between_the_server_and_the_conversion_delete_still_reverts(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server delete records `server_ran` on the conversion record: the next apply (no
    server record left, a new executor) still reverts instead of keeping the guest's writes
    under the next delta."""
    recorded(store, {"server_id": "srv-1"})
    power = fakes.Power(state="poweredOff").install(monkeypatch)
    first = backout(store, [], {"server_id": "srv-1"})
    first.server(first.a.changes[SERVER])  # killed here
    assert store.read().resources[CONVERSION].attributes["server_ran"] is True
    again = backout(store, [], None)  # the next plan: no server record, no server change
    again.conversion(again.a.changes[CONVERSION])
    assert cloud.reverted == [("vol-0", "snap-0")]
    assert power.powered_on == ["ref-web01"]


def test_a_server_the_record_never_named_is_found_by_instance_uuid_and_deleted(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded(store, {})  # killed before the cloud answered the create
    fakes.Power(state="poweredOff").install(monkeypatch)
    cloud.found = SimpleNamespace(id="srv-9")
    said: list[str] = []
    cutover = backout(store, said, {})
    cutover.server(cutover.a.changes[SERVER])
    assert cloud.deleted == ["srv-9"]
    assert "vm.web01.server: server srv-9 deleted (never confirmed)" in said


def test_a_sync_with_a_server_record_in_progress_reverts_without_a_conversion(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """A cutover run again after its killed boot's server was deleted by hand (convert:
    false): the final delta's sync releases the protection; the guest that booted may have
    written the volume, so it is reverted first (before: dropped, the delta went on top)."""
    recorded(store, {"server_id": "srv-1"})
    cutover = backout(store, [], {"server_id": "srv-1"})
    cutover.release_protection("web01", "vol-0")
    assert cloud.reverted == [("vol-0", "snap-0")]
    # break-it 12h M2: should this apply fail later, the next plan knows the volume is back at
    # its last sync (no full copy for what the server wrote: model.state.reverted_since)
    assert store.read().resources[CONVERSION].attributes["reverted"] == ["vol-0"]


def test_a_sync_after_a_failed_cutover_without_conversion_does_not_revert(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """No conversion, no server: the volume is as the last sync left it, nothing to undo."""
    recorded(store, {})
    store.write([], [SERVER])
    cutover = backout(store, [], {})
    cutover.release_protection("web01", "vol-0")
    assert cloud.reverted == []
    assert cloud.snapshots_deleted == ["snap-0"]


@pytest.mark.parametrize("now", ["2026-12-02T04:00:00.000000", "2026-12-02T05:00:00.000000"])
def test_a_protected_volume_changed_outside_ferry_is_reverted(
    store: SqliteStateStore, cloud: SimpleNamespace, now: str
) -> None:
    """Break-it 12l F2's kind under a protection snapshot: no conversion, no server of ferry's,
    but something else attached and wrote the volume since ferry last did (its Cinder
    updated_at moved: a test boot): the release reverts it to its last sync, which undoes
    those writes, rather than deleting the snapshot and letting a delta go on top of them.
    Unmoved: nothing to undo, as before."""
    recorded(store, {})
    store.write([], [SERVER])
    attrs = {
        "volume_id": "vol-0",
        "change_id": C,
        "volume_updated_at": "2026-12-02T04:00:00.000000",
    }
    store.write([ResourceRecord(DISK, "volume", Status.READY, attrs)], [])
    cloud.updated = {"vol-0": now}
    said: list[str] = []
    cutover = backout(store, said, {})
    assert cutover.reverts("web01", "vol-0")
    cutover.release_protection("web01", "vol-0")
    moved = now != attrs["volume_updated_at"]
    assert cloud.reverted == ([("vol-0", "snap-0")] if moved else [])
    assert cloud.snapshots_deleted == ["snap-0"]
    if moved:
        assert any("undoing what was written outside ferry" in line for line in said), said


@pytest.mark.parametrize("gone", ["snap-0", "vol-0"])
def test_a_protection_snapshot_or_volume_gone_still_ends_the_back_out(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    """Break-it 12g F1, F4: the protection snapshot (or the volume with it) deleted outside
    ferry: the source goes back on first, the record goes, nothing raises; a volume that needed
    the revert is recorded tainted (the next plan copies it in full) and, as this plan syncs it
    no more, the step fails saying so (12h M1: it said "copied in full", exit 0). Before: the
    conversion's delete failed on the gone snapshot or volume at every apply, the source
    stayed off."""
    cloud.gone = {gone}
    failed: list[str] = []
    power, said = _back_out(store, monkeypatch, failed)
    assert power.powered_on == ["ref-web01"] and cloud.reverted == []
    left = store.read().resources
    assert set(left) == {DISK}
    if gone == "snap-0":
        assert left[DISK].status is Status.TAINTED
        assert "snap-0 is gone and what the unconfirmed server wrote stays" in str(
            left[DISK].attributes["tainted"]
        )
        assert any("cannot go back to its protection snapshot snap-0" in line for line in said)
        assert failed == [
            "vm.web01.conversion: volume(s) vol-0 keep writes their gone protection snapshots "
            "cannot undo and this plan syncs them no more: marked tainted, the next plan "
            "copies them in full"
        ]
    else:
        assert left[DISK].status is Status.READY and failed == []


def test_a_sync_whose_protection_snapshot_is_gone_is_told_to_copy_in_full(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """Break-it 12g F2: a cutover run again after its killed boot, the protection snapshot
    deleted outside ferry: release_protection says the volume needs a full copy (the caller's
    delta becomes one) instead of failing the revert at every apply after the power-off."""
    recorded(store, {"server_id": "srv-1"})
    cloud.gone = {"snap-0"}
    cutover = backout(store, [], {"server_id": "srv-1"})
    assert cutover.release_protection("web01", "vol-0") is True
    assert cloud.reverted == [] and cloud.snapshots_deleted == ["snap-0"]


def test_a_destroy_deletes_protection_without_reverting_the_volumes_it_deletes(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """Break-it 12g F1 (destroy): a volume the plan deletes is never reverted first; the
    unconfirmed server wrote it, so its record is tainted (12h F1: should the delete fail, no
    later sync trusts it) and its metadata stops naming a changeId."""
    recorded(store, {"server_id": "srv-1"})
    said: list[str] = []
    cutover = backout(store, said, {"server_id": "srv-1"})
    assert cutover.release_protection("web01", "vol-0", deleting=True) is False
    assert cloud.reverted == [] and cloud.snapshots_deleted == ["snap-0"]
    assert store.read().resources[DISK].status is Status.TAINTED
    assert cloud.metadata == [("vol-0", {"ferry_change_id": ""})]
    assert said == [
        "vm.web01: volume vol-0 protection snapshot deleted without a revert (the volume is "
        "deleted next): what the unconfirmed server wrote stays in it, so it is marked tainted "
        "first (copied in full should it stay)"
    ]  # 12h M5: before, "(no conversion had changed it)"


def test_a_snapshot_taken_since_outside_ferry_taints_instead_of_a_refused_revert(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12h F2 A: a backup tool's Cinder snapshot of the volume after the protection
    snapshot: Cinder refuses the revert ("not the latest one"); before, the back-out failed on
    it at every apply, the guest's bytes stayed. Now: no revert tried, the source back on, the
    record tainted (the next plan copies it in full), the back-out ends."""
    cloud.newer = {"snap-0": ["snap-backup"]}
    failed: list[str] = []
    power, said = _back_out(store, monkeypatch, failed)
    assert len(failed) == 1 and "volume(s) vol-0 keep writes" in failed[0]
    assert power.powered_on == ["ref-web01"] and cloud.reverted == []
    assert cloud.snapshots_deleted == ["snap-0"]  # ferry's own only
    left = store.read().resources
    assert set(left) == {DISK} and left[DISK].status is Status.TAINTED
    assert "snap-0 is not its newest (snapshot(s) snap-backup of the volume taken since" in str(
        left[DISK].attributes["tainted"]
    )
    assert any("Cinder reverts a volume only to its newest snapshot" in line for line in said)


def test_a_revert_cinder_refuses_as_not_the_latest_is_told_to_copy_in_full(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12h F2 B: the snapshot taken between the listing and the revert (Cinder's
    400): the cutover's sync copies the volume in full instead of failing after the
    power-off at every apply."""
    recorded(store, {"server_id": "srv-1"})

    monkeypatch.setattr(module.compute, "revert", lambda _c, _v, _s: False)  # Cinder's 400
    cutover = backout(store, [], {"server_id": "srv-1"})
    assert cutover.release_protection("web01", "vol-0") is True
    assert store.read().resources[DISK].status is Status.TAINTED


def _back_out(
    store: Any, monkeypatch: pytest.MonkeyPatch, failed: list[str] | None = None
) -> tuple[Any, list[str]]:
    """The back-out of web01 (server srv-1 recorded, never confirmed), each change run in the
    plan's order, the source powered off; (the power fake, the lines said). `failed`: where
    the FerryErrors of the steps go (None: a step that raises fails the test)."""
    recorded(store, {"server_id": "srv-1"})
    power = fakes.Power(state="poweredOff").install(monkeypatch)
    said: list[str] = []
    cutover = backout(store, said, {"server_id": "srv-1"})
    for change in cutover.a.changes.values():
        try:
            getattr(cutover, change.kind)(change)
        except FerryError as exc:
            if failed is None:
                raise
            failed.append(str(exc))
    return power, said


def test_a_back_out_whose_plan_syncs_the_unrevertable_volume_ends_without_an_error(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same gone snapshot, the plan with a delta sync of the volume after the conversion's
    delete (the source changed): the record is tainted, the step ends, and the sync (its own
    test: test_resume_delta) copies the volume in full."""
    recorded(store, {"server_id": "srv-1"})
    fakes.Power(state="poweredOff").install(monkeypatch)
    cloud.gone = {"snap-0"}
    cutover = backout(store, [], {"server_id": "srv-1"})
    sync = Change(DISK, "volume", Action.UPDATE, "delta", {"volume_id": "vol-0"}, {})
    cutover.a.changes[DISK] = sync
    cutover.conversion(cutover.a.changes[CONVERSION])
    assert store.read().resources[DISK].status is Status.TAINTED


@pytest.mark.parametrize("manager", ["other-lineage", ""])
def test_a_forgotten_conversion_of_a_vm_another_state_took_over_touches_nothing(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, manager: str
) -> None:
    """Break-it 16d: the old state's --destroy of a VM another ferry state adopted (its volumes'
    ferry_state names that state) planned `- conversion delete`, which powers the source back on
    (the old state's server record never confirmed) beside the other state's server and deletes
    the protection snapshots of its volumes. Now the plan forgets the record and the forget,
    finding the volumes managed by another state, only drops it. A volume still this state's
    (no other manager): the forget undoes the conversion as before."""
    recorded(store, {"server_id": "srv-1"})
    store.write([], [SERVER])
    power = fakes.Power(state="poweredOff").install(monkeypatch)
    monkeypatch.setattr(module.volumes, "managed_by", lambda _c, _v: manager)
    said: list[str] = []
    forget = Change(CONVERSION, "conversion", Action.FORGET, "taken over", dict(PROTECTED), None)
    ctx = fakes.context(store, said)
    cutover = Cutover(
        fakes.fake_applier(ctx, [forget], host_for=lambda _n: ("conv-1", "host-server"))
    )
    cutover.conversion(forget)
    assert CONVERSION not in store.read().resources
    if manager:
        assert power.powered_on == [] and cloud.snapshots_deleted == [] and cloud.reverted == []
        assert any("ferry state other-lineage manages the VM's volumes now" in s for s in said)
    else:
        assert power.powered_on == ["ref-web01"] and cloud.snapshots_deleted == ["snap-0"]
