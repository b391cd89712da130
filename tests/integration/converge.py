"""What "converged" means after any failure and re-run: one volume per disk (each recorded),
each byte-equal to the source disk; for a cutover one ACTIVE server and one port per source
MAC; no protection snapshot left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.addresses import Address
from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import LabVM
from engine.lab.lab import Lab
from engine.statestore import StateLocation, StateStore
from engine.statestore.sqlite import SqliteStateStore


def records(state: Path | StateLocation) -> dict[str, Any]:
    """The state's records (a SQLite file, or any location: PostgreSQL)."""
    store: StateStore = (
        SqliteStateStore(state) if isinstance(state, Path) else state.open(create=False)
    )
    try:
        return {a: dict(r.attributes) for a, r in store.read().resources.items()}
    finally:
        store.close()


def volume_file(lab: Lab, volume_id: str) -> Path:
    return lab.openstack_root / "cinder" / "volumes" / f"volume-{volume_id}"


def assert_converged(lab: Lab, state: Path | StateLocation, vm: LabVM, *, server: bool) -> None:
    conn = lab.openstack("ferry-lab")
    found = records(state)
    address = Address("vm", vm.name)
    ours = [
        v
        for v in conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get("ferry_vm") == vm.instance_uuid
    ]
    assert sorted(v.id for v in ours) == sorted(
        found[str(address.child("disk", d.key))]["volume_id"] for d in vm.disks
    ), "one volume per disk, each the recorded one"
    for disk in vm.disks:
        attrs = found[str(address.child("disk", disk.key))]
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        assert file_digest(volume_file(lab, attrs["volume_id"]), disk.capacity) == file_digest(live)
    assert list(conn.block_storage.snapshots()) == []
    if not server:
        return
    servers = [
        s for s in conn.compute.servers() if (s.metadata or {}).get("ferry_vm") == vm.instance_uuid
    ]
    assert len(servers) == 1 and servers[0].status == "ACTIVE"
    macs = [
        p.mac_address for p in conn.network.ports() if p.mac_address in {n.mac for n in vm.nics}
    ]
    assert sorted(macs) == sorted(n.mac for n in vm.nics), "one port per NIC, none twice"


RUNNING_DELTA = "the VM is running and its changeId moves only at stun points"


def assert_nothing_left(plan: dict[str, Any]) -> None:
    """A plan (JSON) after a converged apply: nothing left but what a running VM in replicate
    mode always plans (its snapshot and a delta per volume whose size is unknown until
    measured, since its changeId moves only at stun points)."""
    for change in plan["changes"]:
        if change["action"] == "no-op":
            continue
        running_delta = change["action"] == "update" and RUNNING_DELTA in change["reason"]
        snapshot = change["kind"] == "source_snapshot" and change["action"] == "create"
        assert running_delta or snapshot, change


def data_after(path: Path, mark: int) -> int:
    """Bytes of data the file holds at or beyond `mark`."""
    return sum(
        max(0, offset + length - max(offset, mark))
        for offset, length in lab_disks.data_extents(path)
    )
