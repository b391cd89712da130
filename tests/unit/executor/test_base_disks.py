"""The snapshot step refuses a VM read from its base extent whose disk runs on a delta disk that
no snapshot owns (vSphere's "consolidation needed", the plan's rule consolidation_needed),
whatever the plan saw: before ferry's snapshot and any power-off, and again on the disks ferry's
snapshot froze (break-it 15b N2: an orphaned delta below ferry's leftover snapshot, or a backup
that failed between `plan --out` and apply, had the https reader read db-000001-delta.vmdk as
the disk). The vddk reader reads through the chain and is not concerned. Fakes for vCenter's
answers, real pyVmomi device objects (pure unit test)."""

from __future__ import annotations

from dataclasses import replace as with_fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from engine.errors import SourceChangedError
from engine.executor import source_steps as module
from engine.executor.apply import Applier
from engine.model.observed import SYNC_SNAPSHOT_DESCRIPTION
from engine.model.plan import Action, Change
from tests.unit.executor.fakes import one_vm_applier

Disk = vim.vm.device.VirtualDisk
BASE = Disk.FlatVer2BackingInfo(fileName="[ds1] db01/db01.vmdk", diskMode="persistent")
ORPHAN = Disk.FlatVer2BackingInfo(
    fileName="[ds1] db01/db01-000001.vmdk", diskMode="persistent", parent=BASE
)
GiB = 1024**3
SNAPSHOT = Change("vm.db01.snapshot", "source_snapshot", Action.CREATE, "", None, {})
VOLUME = Change(
    "vm.db01.disk[2000]", "volume", Action.UPDATE, "", None, {"size_gib": 2, "capacity": 2 * GiB}
)
CUTOVER = with_fields(SNAPSHOT, after={"power_off": {"policy": "graceful", "timeout": 30}})
OURS = SimpleNamespace(_moId="snapshot-2")


def device(backing: Any) -> Any:
    return Disk(key=2000, capacityInBytes=2 * GiB, backing=backing, controllerKey=1000)


def applier(tmp_path: Path, reader: str, change: Change, live: Any, frozen: Any) -> Any:
    """A real Applier of db01's snapshot step read by `reader`, vCenter answering `live` (the
    disk's backing before the snapshot) and `frozen` (the one ferry's snapshot froze). What it
    did: `.taken` (snapshots created), `.powered_off`."""
    real: Any = one_vm_applier(tmp_path, "db01", "replicate", (change, VOLUME))
    real.plan = with_fields(real.plan, vms=(with_fields(real.plan.vms[0], reader=reader),))
    real.taken, real.powered_off = [], []

    def fetch(_si: Any, _vm: Any, path: str) -> Any:
        if path == "config.hardware.device":
            return [device(live)]
        ours = SimpleNamespace(name="ferry-db01", description=SYNC_SNAPSHOT_DESCRIPTION)
        ours.snapshot, ours.state, ours.childSnapshotList = OURS, "poweredOn", []
        return SimpleNamespace(rootSnapshotList=[ours] if real.taken else [])

    def create(*_args: Any) -> Any:
        real.taken.append(OURS)
        return OURS

    real._vm = lambda _name: "vm-ref"
    real.cutover = SimpleNamespace(
        go_ahead=lambda *_a: None,
        ready_destination=lambda *_a: None,
        power_off_source=lambda *a: real.powered_off.append(a),
    )
    real.ready_volumes = lambda _name: None
    real._probe_reader = lambda *_a: None
    module_fakes = {
        "fetch_property": fetch,
        "create_snapshot": create,
        "snapshot_disks": lambda *_a: module.parse_disks([device(frozen)]),
    }
    return real, module_fakes


@pytest.mark.parametrize("change", [SNAPSHOT, CUTOVER], ids=["replicate", "cutover"])
def test_a_delta_no_snapshot_owns_stops_before_the_snapshot_and_the_power_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Change
) -> None:
    real, fakes = applier(tmp_path, "https", change, ORPHAN, ORPHAN)
    for name, fake in fakes.items():
        monkeypatch.setattr(module, name, fake)
    with pytest.raises(SourceChangedError) as raised:
        Applier._snapshot(real, change)
    assert str(raised.value) == (
        "vm.db01: disk 2000 runs on [ds1] db01/db01-000001.vmdk, a delta disk over [ds1] "
        "db01/db01.vmdk, which no snapshot owns (vSphere: consolidation needed): the https "
        "reader would read a delta file as the disk; consolidate the VM's disks (vSphere "
        "client: Snapshots > Consolidate), or read this VM with source.reader: vddk (a linked "
        "clone's disks run on another VM's base disk, which no consolidation removes: vddk, or "
        "make it a full clone), then run `ferry plan` again"
    )
    assert real.taken == [] and real.powered_off == []  # nothing touched, nothing read


def test_the_disk_ferrys_snapshot_froze_is_checked_before_any_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup that failed between the first check and ferry's snapshot left its delta: the
    disk ferry's snapshot froze runs on it. The step fails once the snapshot is taken (it stays
    recorded for the cleanup to remove), before any copy reads the delta file."""
    real, fakes = applier(tmp_path, "datastore_path", SNAPSHOT, BASE, ORPHAN)
    for name, fake in fakes.items():
        monkeypatch.setattr(module, name, fake)
    with pytest.raises(SourceChangedError, match=r"disk 2000 runs on \[ds1\] db01/db01-000001"):
        Applier._snapshot(real, SNAPSHOT)
    assert real.ctx.snapshots["db01"][0] is OURS  # the cleanup removes it


@pytest.mark.parametrize(
    ("reader", "live", "frozen"),
    [("vddk", ORPHAN, ORPHAN), ("https", BASE, BASE)],
    ids=["vddk-reads-the-chain", "https-base-disk"],
)
def test_the_vddk_reader_and_a_base_disk_are_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str, live: Any, frozen: Any
) -> None:
    real, fakes = applier(tmp_path, reader, SNAPSHOT, live, frozen)
    for name, fake in fakes.items():
        monkeypatch.setattr(module, name, fake)
    Applier._snapshot(real, SNAPSHOT)
    assert real.taken == [OURS]
