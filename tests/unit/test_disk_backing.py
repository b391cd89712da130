"""The backing format refresh records per disk (issue 15): the https and datastore_path readers
read flat extents only, so a sparse or SE sparse disk is refused in the plan (planner case
reader-https-sparse-disk)."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from engine.providers.vsphere.inventory import backing_format, parse_disk

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
