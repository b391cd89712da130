"""The seams' production halves that run without a cloud: the datastore-path disk source (a
disk's datastore path maps to its flat extent under the mount, a missing one is a clear error)
and the by-id device lookup (each name a KVM guest gives an attached volume, waited for; one
that never appears is a clear error)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.errors import DataplaneError
from engine.executor.seams import ByIdDevices, DatastorePathSources, VddkSources, flat_extent
from engine.providers.vsphere.session import VCenterTarget


def test_a_disk_maps_to_its_flat_extent(tmp_path: Path) -> None:
    extent = tmp_path / "nfs-ds1" / "web 01" / "web 01_1-flat.vmdk"
    extent.parent.mkdir(parents=True)
    extent.write_bytes(b"\0" * 512)
    assert flat_extent(tmp_path, "[nfs-ds1] web 01/web 01_1-flat.vmdk") == extent


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("web01/web01.vmdk", "not a datastore path"),
        ("[nfs-ds2] web01/web01-flat.vmdk", "is the datastore 'nfs-ds2' mounted"),
    ],
)
def test_clear_errors(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(DataplaneError, match=message):
        flat_extent(tmp_path, name)


VOLUME = "4f1fb573-0570-4c65-96ca-0f33b550324b"


@pytest.mark.parametrize(
    "link",
    [
        f"virtio-{VOLUME[:20]}",  # virtio-blk: the serial is the id's first 20 characters
        f"scsi-0QEMU_QEMU_HARDDISK_{VOLUME}",  # virtio-scsi: the whole id
        f"scsi-SQEMU_QEMU_HARDDISK_{VOLUME}",
        f"scsi-0QEMU_QEMU_HARDDISK_{VOLUME[:20]}",  # virtio-scsi on older QEMU
    ],
)
def test_an_attached_volume_is_found_by_id_when_its_link_appears(tmp_path: Path, link: str) -> None:
    device = tmp_path / "vdb"
    device.write_bytes(b"")
    threading.Timer(0.5, lambda: (tmp_path / link).symlink_to(device)).start()
    began = time.monotonic()
    assert ByIdDevices(tmp_path, timeout=10).device(None, VOLUME, "conv") == device
    assert 0.4 < time.monotonic() - began < 5


def test_a_volume_that_never_appears_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "virtio-0000000000000000000").symlink_to(tmp_path)  # another volume's link
    with pytest.raises(DataplaneError, match=f"volume {VOLUME} did not appear in .* within 1 s"):
        ByIdDevices(tmp_path, timeout=1).device(None, VOLUME, "conv-host-id")


def test_vddk_that_cannot_load_is_a_clear_error_before_anything(tmp_path: Path) -> None:
    """Real nbdkit: without its vddk plugin (Debian's nbdkit has none) or without VDDK in
    libdir, the check fails with what to do."""
    target = VCenterTarget("vc.example", 443, "admin", "not-used", thumbprint="AA:BB")
    with pytest.raises(DataplaneError, match=r"cannot read disks through VDDK from .*vddk"):
        VddkSources(target, tmp_path / "vddk").check()


def test_a_datastore_mount_that_is_not_there_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataplaneError, match="is not a directory on this host"):
        DatastorePathSources(tmp_path / "nfs").check()
    (tmp_path / "nfs").mkdir()
    DatastorePathSources(tmp_path / "nfs").check()
