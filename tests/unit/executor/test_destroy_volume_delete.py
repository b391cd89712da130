"""A destroy's volume deletes after a cutover killed during its boot, or a copy killed mid-way
(break-it 12h F1, F4). Cinder deletes snapshots asynchronously and refuses to delete a volume
that still has one (400); a volume a killed copy left attached to the conversion host never
becomes `available` by itself. The delete waits for the snapshots ferry deleted, names one taken
outside ferry, and detaches the volume from the host its record names first. A protection
snapshot dropped without a revert while something wrote the volume since taints the volume
record first: a volume that outlives the destroy is never trusted by a later sync. A fake Cinder
(the behaviours above) and a real SQLite state store."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.executor import cutover as cutover_module
from engine.executor.apply import Applier
from engine.model.plan import Action, Change, Plan
from engine.model.state import RECORDED_HOST, ResourceRecord, Status
from engine.providers.openstack import volumes
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

DISK = "vm.web01.disk[2000]"
CONVERSION = "vm.web01.conversion"
SERVER = "vm.web01.server"


class Cinder:
    """Volumes (status, attached server) and snapshots (status, metadata); a deleted snapshot
    stays `deleting` for `lag` listings; a volume with snapshots is not deleted (400)."""

    def __init__(self, lag: int = 1) -> None:
        self.lag = lag
        self.volumes: dict[str, SimpleNamespace] = {}
        self.snapshots_: dict[str, SimpleNamespace] = {}
        self.deleted: list[str] = []
        self.metadata: dict[str, dict[str, str]] = {}

    def volume(self, volume_id: str, server: str = "") -> None:
        status = "in-use" if server else "available"
        self.volumes[volume_id] = SimpleNamespace(id=volume_id, status=status, server=server)

    def snapshot(self, snapshot_id: str, volume_id: str, **metadata: str) -> None:
        self.snapshots_[snapshot_id] = SimpleNamespace(
            id=snapshot_id,
            name=f"name-{snapshot_id}",
            volume_id=volume_id,
            status="available",
            metadata=metadata,
            polls=0,
        )

    def get_volume(self, volume_id: str) -> Any:
        if volume_id not in self.volumes:
            raise os_exc.NotFoundException(f"volume {volume_id}")
        v = self.volumes[volume_id]
        attachments = [{"server_id": v.server}] if v.server else []
        return SimpleNamespace(id=volume_id, status=v.status, attachments=attachments, metadata={})

    def snapshots(self, details: bool = True) -> list[Any]:
        for s in list(self.snapshots_.values()):
            if s.status == "deleting":
                s.polls += 1
                if s.polls > self.lag:
                    del self.snapshots_[s.id]
        return list(self.snapshots_.values())

    def delete_snapshot(self, snapshot_id: str, ignore_missing: bool = True) -> None:
        if snapshot_id in self.snapshots_:
            self.snapshots_[snapshot_id].status = "deleting"

    def delete_volume(self, volume_id: str) -> None:
        if any(s.volume_id == volume_id for s in self.snapshots_.values()):
            raise os_exc.BadRequestException("Invalid volume: must not ... have snapshots")
        self.deleted.append(volume_id)
        del self.volumes[volume_id]

    def set_volume_metadata(self, volume_id: str, **metadata: str) -> None:
        self.metadata.setdefault(volume_id, {}).update(metadata)


class Nova:
    """The conversion host's server; detaching a volume makes it available."""

    def __init__(self, cinder: Cinder) -> None:
        self.cinder = cinder
        self.detached: list[tuple[str, str]] = []

    def find_server(self, name: str, ignore_missing: bool = True) -> Any:
        return SimpleNamespace(id=f"srv-{name}") if name.startswith("conv") else None

    def delete_volume_attachment(self, server_id: str, volume_id: str) -> None:
        self.detached.append((server_id, volume_id))
        self.cinder.volumes[volume_id].server = ""
        self.cinder.volumes[volume_id].status = "available"


@pytest.fixture
def cloud() -> SimpleNamespace:
    cinder = Cinder()
    return SimpleNamespace(block_storage=cinder, compute=Nova(cinder))


def delete_step(store: SqliteStateStore, conn: Any, attrs: dict[str, Any]) -> Applier:
    step = Change(DISK, "volume", Action.DELETE, "--destroy", attrs, None)
    store.write([ResourceRecord(DISK, "volume", Status.READY, attrs)], [])
    ctx: Any = SimpleNamespace(store=store, conn=conn, log_names={}, snapshots={})
    applier = Applier(Plan("d", store.read().lineage, 1, (), (step,), ()), ctx)
    applier._repair_attachments = lambda _c: None  # type: ignore[method-assign]
    applier.check_owned = lambda *_: None  # type: ignore[method-assign]
    return applier


def test_a_volume_delete_waits_for_the_snapshots_ferry_deleted(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """12h F1: the protection snapshot was just deleted (still `deleting`): before, the volume
    delete failed at once with Cinder's 400."""
    cloud.block_storage.volume("vol-0")
    cloud.block_storage.snapshot("snap-0", "vol-0", ferry_protects="vol-0")
    cloud.block_storage.delete_snapshot("snap-0")
    applier = delete_step(store, cloud, {"volume_id": "vol-0"})
    applier._volume(applier.plan.changes[0])
    assert cloud.block_storage.deleted == ["vol-0"]
    assert DISK not in store.read().resources


def test_a_leftover_protection_snapshot_of_ferrys_is_deleted_before_the_volume(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    cloud.block_storage.volume("vol-0")
    cloud.block_storage.snapshot("snap-9", "vol-0", ferry_protects="vol-0")  # no record names it
    applier = delete_step(store, cloud, {"volume_id": "vol-0"})
    applier._volume(applier.plan.changes[0])
    assert cloud.block_storage.deleted == ["vol-0"] and not cloud.block_storage.snapshots_


def test_a_snapshot_taken_outside_ferry_is_named_and_nothing_is_deleted(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    cloud.block_storage.volume("vol-0")
    cloud.block_storage.snapshot("snap-b", "vol-0")  # someone's backup
    applier = delete_step(store, cloud, {"volume_id": "vol-0"})
    with pytest.raises(OpenStackError, match=r"snapshot\(s\) taken outside ferry: snap-b"):
        applier._volume(applier.plan.changes[0])
    assert cloud.block_storage.deleted == [] and DISK in store.read().resources
    assert cloud.block_storage.snapshots_["snap-b"].status == "available"


def test_a_snapshot_still_deleting_at_the_timeout_says_so(cloud: SimpleNamespace) -> None:
    cloud.block_storage.lag = 10**6
    cloud.block_storage.volume("vol-0")
    cloud.block_storage.snapshot("snap-0", "vol-0", ferry_protects="vol-0")
    cloud.block_storage.delete_snapshot("snap-0")
    with pytest.raises(OpenStackError, match=r"still being deleted after 0 s.*snap-0 deleting"):
        volumes.wait_snapshots_gone(cloud, "vol-0", timeout=0.0)


def test_a_volume_a_killed_copy_left_attached_is_detached_from_its_host_then_deleted(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """12h F4: before, the destroy waited 300 s for `available`, then failed at every apply."""
    cloud.block_storage.volume("vol-0", server="srv-conv-1")
    said: list[str] = []
    applier = delete_step(store, cloud, {"volume_id": "vol-0", RECORDED_HOST: "conv-1"})
    applier.ctx.say = lambda _vm, line: said.append(line)
    applier._volume(applier.plan.changes[0])
    assert cloud.compute.detached == [("srv-conv-1", "vol-0")]
    assert cloud.block_storage.deleted == ["vol-0"]
    assert said == [
        f"{DISK}: volume vol-0 detached from conversion host conv-1 (a copy interrupted there "
        "left it attached), to be deleted"
    ]


def test_a_volume_attached_to_a_server_not_ferrys_is_never_detached(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.block_storage.volume("vol-0", server="srv-someone")
    applier = delete_step(store, cloud, {"volume_id": "vol-0", RECORDED_HOST: "conv-1"})
    monkeypatch.setattr(volumes, "wait_volume", _refused)
    with pytest.raises(OpenStackError, match="still in-use"):
        applier._volume(applier.plan.changes[0])
    assert cloud.compute.detached == [] and cloud.block_storage.deleted == []


def _refused(_conn: Any, volume_id: str, status: str, timeout: float = 0.0) -> Any:
    raise OpenStackError(f"volume {volume_id} still in-use after 300 s (waiting for {status})")


# -- the protection snapshots a destroy drops without a revert ------------------------------


def destroyed(store: SqliteStateStore, cloud: SimpleNamespace, server: bool) -> Any:
    """web01 after a cutover killed in its boot (`server`: the unconfirmed server's record in
    progress; else a failed cutover with convert: false, nothing wrote the volume); the
    destroy's conversion delete, the plan deleting vol-0."""
    cloud.block_storage.volume("vol-0")
    cloud.block_storage.snapshot("snap-0", "vol-0", ferry_protects="vol-0")
    conversion = {
        "tool": None,
        "protection": {"vol-0": "snap-0"},
        "protected_change_ids": {"vol-0": "52 aa/10"},
    }
    disk = {"volume_id": "vol-0", "change_id": "52 aa/10"}
    records = [
        ResourceRecord(DISK, "volume", Status.READY, disk),
        ResourceRecord(CONVERSION, "conversion", Status.READY, conversion),
    ]
    if server:
        records.append(ResourceRecord(SERVER, "server", Status.IN_PROGRESS, {"server_id": "s"}))
    store.write(records, [])
    changes = [
        Change(CONVERSION, "conversion", Action.DELETE, "--destroy", conversion, None),
        Change(DISK, "volume", Action.DELETE, "--destroy", disk, None),
    ]
    ctx = fakes.context(store, conn=cloud)
    return cutover_module.Cutover(fakes.fake_applier(ctx, changes))


def test_the_destroy_taints_a_written_volume_before_its_protection_snapshot_goes(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12h F1: the volume delete failed afterwards, the volume records stayed READY, back to
    replicate delta-synced over the unconfirmed guest's bytes ("No changes" once off). A kill
    right at the snapshot delete (here: it fails) leaves the record tainted already."""
    cutover = destroyed(store, cloud, server=True)
    seen: list[Status] = []

    def delete_snapshot(_conn: Any, _snapshot_id: str) -> None:
        seen.append(store.read().resources[DISK].status)
        raise OpenStackError("killed")

    monkeypatch.setattr(cutover_module.compute, "delete_snapshot", delete_snapshot)
    with pytest.raises(OpenStackError, match="killed"):
        cutover.release_protection("web01", "vol-0", deleting=True)
    assert seen == [Status.TAINTED]
    record = store.read().resources[DISK]
    assert "snap-0 was deleted, never reverted to" in record.attributes["tainted"]
    assert "what the unconfirmed server wrote stays in it" in record.attributes["tainted"]
    assert cloud.block_storage.metadata["vol-0"] == {"ferry_change_id": ""}
    assert store.read().resources[CONVERSION].attributes["protection"] == {"vol-0": "snap-0"}


def test_nothing_wrote_the_volume_nothing_is_tainted(
    store: SqliteStateStore, cloud: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    cutover = destroyed(store, cloud, server=False)
    monkeypatch.setattr(cutover_module.compute, "delete_snapshot", lambda _c, _s: None)
    cutover.release_protection("web01", "vol-0", deleting=True)
    assert store.read().resources[DISK].status is Status.READY


def test_the_destroy_ends_with_the_volume_deleted_after_its_snapshot(
    store: SqliteStateStore, cloud: SimpleNamespace
) -> None:
    """The whole kind end to end on the fake Cinder: the conversion delete (snapshot
    `deleting`), then the volume delete waits and succeeds."""
    cutover = destroyed(store, cloud, server=True)
    cutover.release_protection("web01", "vol-0", deleting=True)
    assert cloud.block_storage.snapshots_["snap-0"].status == "deleting"
    applier = delete_step(store, cloud, dict(store.read().resources[DISK].attributes))
    applier._volume(applier.plan.changes[0])
    assert cloud.block_storage.deleted == ["vol-0"] and DISK not in store.read().resources
