"""The libvirt XML virt-v2v-in-place reads: every disk in order on its bus, every MAC."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.conversion.v2v import (
    Guest,
    GuestDisk,
    _last_error,
    bus_of,
    check_windows_drivers,
    domain_xml,
    virtio_win,
)
from engine.errors import ConversionError


@pytest.mark.parametrize(
    ("key", "bus"), [(200, "ide"), (201, "ide"), (1000, "scsi"), (1003, "scsi"), (15000, "sata")]
)
def test_bus_of_a_vsphere_controller_key(key: int, bus: str) -> None:
    assert bus_of(key) == bus


def test_domain_xml_lists_disks_in_order_with_their_bus_and_the_macs(tmp_path: Path) -> None:
    paths = [tmp_path / n for n in ("boot's disk", "data", "old")]
    guest = Guest(
        name="web<01>",
        disks=(
            GuestDisk(paths[0], "scsi"),
            GuestDisk(paths[1], "scsi"),
            GuestDisk(paths[2], "ide"),
        ),
        macs=("00:50:56:8f:01:00", "00:50:56:8f:01:01"),
        firmware="efi",
        memory_mb=4096,
        vcpus=2,
    )
    root = ET.fromstring(domain_xml(guest))
    assert root.findtext("name") == "web<01>"
    assert root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]
    disks = root.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [str(p) for p in paths]  # type: ignore[union-attr]
    assert [(d.find("target").get("dev"), d.find("target").get("bus")) for d in disks] == [  # type: ignore[union-attr]
        ("sda", "scsi"),
        ("sdb", "scsi"),
        ("hda", "ide"),
    ]
    macs = [i.find("mac").get("address") for i in root.findall("devices/interface")]  # type: ignore[union-attr]
    assert macs == list(guest.macs)


def test_more_disks_than_device_letters_is_refused(tmp_path: Path) -> None:
    guest = Guest("big", tuple(GuestDisk(tmp_path / str(i), "scsi") for i in range(27)), ())
    with pytest.raises(ConversionError, match="more than 26 disks"):
        domain_xml(guest)


def test_the_error_line_of_a_failed_conversion_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "vm.log"
    log.write_text(
        "[   1.0] Opening the source\n"
        "virt-v2v-in-place: error: inspection could not detect the source guest\n"
        "If reporting bugs, run virt-v2v-in-place with debugging enabled\n"
    )
    assert _last_error(log) == (
        "virt-v2v-in-place: error: inspection could not detect the source guest"
    )


def test_virtio_win_is_found_with_its_version_and_an_old_one_is_refused(tmp_path: Path) -> None:
    iso = tmp_path / "virtio-win-0.1.229.iso"
    iso.write_bytes(b"")
    assert virtio_win({"VIRTIO_WIN": str(iso)}) == (iso, (0, 1, 229))
    with pytest.raises(ConversionError, match=r"0\.1\.229: Windows conversions need 0\.1\.240"):
        check_windows_drivers({"VIRTIO_WIN": str(iso)})
    newer = tmp_path / "virtio-win-0.1.262.iso"
    newer.write_bytes(b"")
    check_windows_drivers({"VIRTIO_WIN": str(newer)})
    with pytest.raises(ConversionError, match="needs virtio-win on the conversion host"):
        check_windows_drivers({"VIRTIO_WIN": str(tmp_path / "absent.iso")})
