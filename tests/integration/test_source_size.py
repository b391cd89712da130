"""A source shorter than its disk fails the copy and the verify (issue 15): copy() and digest()
read only what lies inside the NBD export, so a reader pointed at a wrong file (vcsim's empty
web01_0-flat.vmdk, read by the https reader's guessed extent name) "copied" a 2 GiB disk as
'0 B read' with the apply's exit 0. Real nbdkit (file plugin), no lab; < 1 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.dataplane.nbdkit import FileDiskSource
from engine.errors import DataplaneError
from engine.executor.host import Callbacks, SyncJob, _copy_job, _verify
from engine.model.state import VERIFIED_WHOLE

MiB = 1024**2


def test_a_source_shorter_than_the_disk_is_refused(tmp_path: Path) -> None:
    src, device = tmp_path / "extent.raw", tmp_path / "volume.raw"
    src.write_bytes(b"\x5a" * MiB)  # 1 MiB served for a 4 MiB disk
    device.write_bytes(b"\0" * 4 * MiB)
    disk = {"key": 2000, "capacity": 4 * MiB, "file_name": "[ds] a/a.vmdk", "thin": True}
    disk |= {"change_id": None, "vm_moref": "vm-1", "instance_uuid": "u", "snapshot_moref": "s"}
    job = SyncJob("vol", "host", disk, verify=VERIFIED_WHOLE)
    with pytest.raises(DataplaneError, match=r"disk 2000's file .* holds 1\.0 MiB .* less than"):
        _copy_job(job, FileDiskSource(src), device, Callbacks())
    assert device.read_bytes() == b"\0" * 4 * MiB  # nothing copied
    with pytest.raises(DataplaneError, match=r"less than the disk's 4\.0 MiB"):
        _verify(job, FileDiskSource(src), device, job.disk(), Callbacks().cancel)
