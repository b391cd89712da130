"""The backing format refresh records per disk (issue 15): the https and datastore_path readers
read flat extents only, so a sparse or SE sparse disk is refused in the plan (planner case
reader-https-sparse-disk); so are the delta disks it runs on and its datastore's type."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from engine.providers.vsphere.inventory import (
    DEVICES,
    backing_format,
    delta_files,
    parse_disk,
    parse_inventory,
)
from engine.providers.vsphere.read import ObjectProps
from engine.providers.vsphere.snapshots import parse_disks

Disk = vim.vm.device.VirtualDisk


@pytest.mark.parametrize(
    ("backing", "expected"),
    [
        (Disk.FlatVer2BackingInfo(), "flat"),
        # a delta link of a snapshot chain (break-it 15 F2: read as "flat")
        (Disk.FlatVer2BackingInfo(parent=Disk.FlatVer2BackingInfo()), "flat_delta"),
        (Disk.SparseVer2BackingInfo(), "sparse"),
        (Disk.SeSparseBackingInfo(), "se_sparse"),
        (Disk.RawDiskMappingVer1BackingInfo(), "rdm"),
        (Disk.LocalPMemBackingInfo(), "pmem"),
    ],
)
def test_the_backing_format_of_a_disk(backing: object, expected: str) -> None:
    assert backing_format(backing) == expected


def test_refresh_records_it() -> None:
    backing = Disk.SeSparseBackingInfo(fileName="[ds1] web01/web01_1.vmdk", diskMode="persistent")
    dev = Disk(key=2001, capacityInBytes=2**30, backing=backing, controllerKey=1000, unitNumber=1)
    disk = parse_disk(dev, {})
    assert disk.backing == "se_sparse" and disk.datastore == "ds1" and disk.rdm is None


def test_refresh_counts_the_delta_disks_a_disk_runs_on() -> None:
    """Break-it 15b N2: the plan's consolidation rule compares a disk's delta disks with the VM's
    snapshots (an orphaned delta below ferry's leftover snapshot: 2 deltas, 1 snapshot)."""
    base = Disk.FlatVer2BackingInfo(fileName="[ds1] db/db.vmdk")
    orphan = Disk.FlatVer2BackingInfo(fileName="[ds1] db/db-000001.vmdk", parent=base)
    ferrys = Disk.FlatVer2BackingInfo(fileName="[ds1] db/db-000002.vmdk", parent=orphan)
    assert delta_files(ferrys) == ("[ds1] db/db-000001.vmdk", "[ds1] db/db.vmdk")
    dev = Disk(key=2000, capacityInBytes=2**30, backing=ferrys, controllerKey=1000)
    assert parse_disk(dev, {}).deltas == 2
    assert parse_disk(Disk(key=2001, capacityInBytes=2**30, backing=base), {}).deltas == 0
    assert parse_disks([dev])[0].parents == delta_files(ferrys)  # what the apply checks


def test_refresh_records_each_disks_datastore_type() -> None:
    """Break-it 15b N4: a disk on vSAN or vVols (summary.type "vsan", "VVOL") has no flat extent
    file; the plan refuses it for the base-extent readers (planner case reader-https-vsan-vvols)."""
    vsan = vim.Datastore("datastore-9")
    backing = Disk.FlatVer2BackingInfo(fileName="[vsanDatastore] 5f3c/web01.vmdk", datastore=vsan)
    dev = Disk(key=2000, capacityInBytes=2**30, backing=backing, controllerKey=1000)
    objects = [
        ObjectProps(vsan, {"name": "vsanDatastore", "summary.type": "vsan"}),
        ObjectProps(vim.VirtualMachine("vm-1"), {"name": "web01", DEVICES: [dev]}),
    ]
    (disk,) = parse_inventory(objects).vms[0].disks
    assert (disk.datastore, disk.datastore_type) == ("vsanDatastore", "vsan")
