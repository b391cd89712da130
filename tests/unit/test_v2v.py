"""The libvirt XML virt-v2v-in-place reads: every disk in order on its bus, every MAC."""

from __future__ import annotations

import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.conversion import v2v
from engine.conversion.v2v import (
    Guest,
    GuestDisk,
    _last_error,
    _run,
    bus_of,
    check_windows_drivers,
    domain_xml,
    virtio_win,
)
from engine.errors import ConversionError, StoppedError


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


def _started(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the tool did not start"
        time.sleep(0.02)
    return int(pidfile.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("ignores_term", [False, True])
def test_a_stopped_conversion_tool_is_ended_and_says_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ignores_term: bool
) -> None:
    """Ctrl-C during virt-v2v: the tool runs in a session of its own (the terminal's SIGINT
    reaches ferry only), ferry's stop ends it (SIGTERM, SIGKILL when ignored) and raises
    StoppedError at once instead of waiting out a conversion of minutes."""
    monkeypatch.setattr(v2v, "STOP_GRACE", 0.5)
    pidfile, cancel, raised = tmp_path / "pid", threading.Event(), []
    trap = "trap '' TERM; " if ignores_term else ""
    script = f"echo $$ > {pidfile}; {trap}while :; do sleep 0.1; done"

    def run() -> None:
        with (tmp_path / "log").open("w") as out:
            try:
                _run(["sh", "-c", script], dict(os.environ), out, 60, cancel)
            except StoppedError as exc:
                raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    pid = _started(pidfile)
    assert os.getsid(pid) == pid != os.getsid(0), "the tool shares ferry's session"
    began = time.monotonic()
    cancel.set()
    thread.join(timeout=10)
    assert not thread.is_alive() and raised, "the stop did not end the tool"
    assert time.monotonic() - began < 3
    assert _gone(pid)


def test_a_conversion_tool_past_its_timeout_is_killed(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as out, pytest.raises(ConversionError, match="within 1 s"):
        _run(["sleep", "30"], dict(os.environ), out, 1.0)


def test_the_guest_of_a_conversion_change_keeps_disk_order_buses_and_sizing() -> None:
    after = {
        "disks": [{"key": 2000, "controller_key": 1000}, {"key": 3000, "controller_key": 15000}],
        "macs": ["00:50:56:8f:01:00"],
        "firmware": "efi",
        "memory_mb": 2048,
        "vcpus": 2,
    }
    paths = [Path("/dev/vdb"), Path("/dev/vdc")]
    guest = v2v.guest_of("web01", paths, after)
    assert guest == Guest(
        "web01",
        (GuestDisk(paths[0], "scsi"), GuestDisk(paths[1], "sata")),
        ("00:50:56:8f:01:00",),
        "efi",
        2048,
        2,
    )
    bare = v2v.guest_of("old", paths[:1], {"disks": [{"controller_key": 200}]})
    assert (bare.macs, bare.firmware, bare.memory_mb, bare.vcpus) == ((), None, 1024, 1)
    with pytest.raises(ValueError):  # a device missing for a disk is never silently dropped
        v2v.guest_of("web01", paths[:1], after)
