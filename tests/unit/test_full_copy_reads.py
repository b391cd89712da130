"""A full copy onto a volume's older bytes (a tainted disk's re-copy, an interrupted full copy
resumed) through the https reader reads what the plan counts: the areas CBT lists as allocated
beyond the checkpoint, plus a resume's rewrite; the rest of the capacity is zeroed, not read
(break-it 12d item 7b, at 619d8bb: the plan said ~46.9 MiB, the apply read the whole 2 GiB
disk through https inside the cutover's downtime window: onto older bytes the data map was
not used). The plan's side: planner case cutover-tainted-final-sync. nbdkit's noextents filter
stands for the curl plugin's missing block status."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.dataplane.nbdkit import FileDiskSource
from engine.executor import volume_steps as module
from engine.executor.apply import Applier
from engine.executor.host import Callbacks, SyncJob, copy_into
from engine.executor.volume_steps import ToCopy
from engine.providers.vsphere.snapshots import DiskInfo

MiB = 1024**2
SIZE = 64 * MiB
DATA = [(MiB, MiB), (40 * MiB, MiB)]  # CBT's allocated areas (changeId "*")


@pytest.mark.parametrize("what", ["tainted", "resumed"])
def test_onto_older_bytes_the_data_map_is_what_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    monkeypatch.setattr(module, "changed_areas", lambda _vm, _s, _k, _c, since: list(DATA))
    applier: Any = SimpleNamespace(ctx=SimpleNamespace(sources=SimpleNamespace(
        block_status=lambda: False)))  # fmt: skip
    disk_info = DiskInfo(2000, SIZE, "[ds1] web01/web01.vmdk", True, "52 aa-bb/12")
    planned = (
        ToCopy("full", None, 0, False)  # a tainted disk's replace onto its volume
        if what == "tainted"
        else ToCopy("full", None, 8 * MiB, False, rewrite=[(MiB, MiB)], began="52 aa-bb/10")
    )
    copying = Applier._allocated(applier, planned, None, None, disk_info)
    assert copying.data == DATA  # the https reader reads only where the disk holds data

    disk, volume = tmp_path / "disk.raw", tmp_path / "volume.raw"
    with disk.open("wb") as f:
        f.truncate(SIZE)
        for offset, length in DATA:
            f.seek(offset)
            f.write(b"\x01" * length)
    older = bytearray(b"\xff" * SIZE)  # older bytes: every hole must be zeroed
    if what == "resumed":  # copied before the stop, but its rewrite area changed since
        older[: 8 * MiB] = disk.read_bytes()[: 8 * MiB]
        older[MiB : 2 * MiB] = b"\xff" * MiB
    volume.write_bytes(bytes(older))
    job = SyncJob(
        "vol", "host", {"key": 2000, "capacity": SIZE, "file_name": "x", "thin": True,
                        "change_id": "52 aa-bb/12"},
        start_at=copying.start_at, dst_is_zero=False, rewrite=copying.rewrite, data=copying.data,
    )  # fmt: skip
    stats = copy_into(job, FileDiskSource(disk, filters=("noextents",)), volume, Callbacks())
    read = 2 * MiB if what == "tainted" else MiB + MiB  # resumed: the rewrite and 40 MiB's
    assert stats.bytes_read == read  # not the 64 MiB (or 56 MiB beyond the checkpoint)
    assert volume.read_bytes() == disk.read_bytes()
