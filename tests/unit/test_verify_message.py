"""A failed verify says something true and useful: a device that reads nothing (the lab's
`--device-lossy` hands the copy /dev/null) says where it ends against the disk's size, never the
sha256 of nothing (break-it 12d item 7d: "differs from the source at offset 0 (0 B): sha256 …
e3b0c44298fc…"); a device that differs inside says where, with both sha256s."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.dataplane.blkhash import bytes_digest
from engine.dataplane.nbdkit import FileDiskSource
from engine.errors import StoppedError, VerifyError
from engine.executor.host import SyncJob, verify_copy
from engine.model.state import VERIFIED_WHOLE

MiB = 1024**2
SIZE = 8 * MiB
DISK = {"key": 2000, "capacity": SIZE, "file_name": "[ds] d.vmdk", "thin": True,
        "change_id": "52 1/1"}  # fmt: skip


def _verify(tmp_path: Path, device: Path) -> str:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x01" * SIZE)
    job = SyncJob("vol-1", "host", DISK, verify=VERIFIED_WHOLE)
    with pytest.raises(VerifyError) as failed:
        verify_copy(job, FileDiskSource(disk), device, job.disk(), threading.Event())
    return str(failed.value)


def test_a_device_that_reads_nothing_says_where_it_ends(tmp_path: Path) -> None:
    said = _verify(tmp_path, Path("/dev/null"))
    assert said == (
        "verify: disk 2000 (volume vol-1) differs from the source at offset 0: the volume's "
        "device ends at 0 B of the disk's 8.0 MiB: nothing past its end was kept"
    )
    assert "e3b0c44298fc" not in said  # sha256 of nothing


def test_a_device_that_differs_inside_says_where_with_both_digests(tmp_path: Path) -> None:
    device = tmp_path / "volume.raw"
    device.write_bytes(b"\x01" * 3 * MiB + b"\x02" + b"\x01" * (SIZE - 3 * MiB - 1))
    said = _verify(tmp_path, device)
    assert said.startswith(
        "verify: disk 2000 (volume vol-1) differs from the source at offset 3145728 (3.0 MiB): "
        "sha256 hash list over the whole disk "
    ), said


def test_a_device_that_cannot_be_read_fails_the_verify_with_its_own_error(tmp_path: Path) -> None:
    """The source and the device are read at once (a verify lasts the longer of the two): a
    device read that fails stops the source's read and its error is the one raised."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x01" * SIZE)
    job = SyncJob("vol-1", "host", DISK, verify=VERIFIED_WHOLE)
    with pytest.raises(IsADirectoryError):
        verify_copy(job, FileDiskSource(disk), tmp_path, job.disk(), threading.Event())


def test_a_stop_ends_both_reads_of_a_verify(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x01" * SIZE)
    stop = threading.Event()
    stop.set()
    job = SyncJob("vol-1", "host", DISK, verify=VERIFIED_WHOLE)
    before = threading.active_count()
    with pytest.raises(StoppedError, match="stopped while verifying"):
        verify_copy(job, FileDiskSource(disk), disk, job.disk(), stop)
    assert threading.active_count() == before  # the device's reader ended with the verify


def test_equal_sides_verify_to_their_sha256(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\x01" * SIZE)
    device = tmp_path / "volume.raw"
    device.write_bytes(b"\x01" * SIZE)
    job = SyncJob("vol-1", "host", DISK, verify=VERIFIED_WHOLE)
    got = verify_copy(job, FileDiskSource(disk), device, job.disk(), threading.Event())
    assert got == bytes_digest(b"\x01" * SIZE)
