"""A copy stopped while it rewrites a resume's changed areas (below its checkpoint) says the
checkpoint the next apply really resumes from, the one its record keeps (break-it 12d item 7c:
"stopped at 0 B of 4.0 GiB; resumes from there" while the record kept 160 MiB)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.dataplane.nbdkit import FileDiskSource
from engine.errors import StoppedError
from engine.executor.host import Callbacks, SyncJob, copy_into

MiB = 1024**2
SIZE = 64 * MiB


def test_a_stop_in_the_rewrite_names_the_checkpoint_it_resumes_from(tmp_path: Path) -> None:
    disk, out = tmp_path / "disk.raw", tmp_path / "volume.raw"
    for f in (disk, out):
        with f.open("wb") as handle:
            handle.truncate(SIZE)
    job = SyncJob(
        "vol", "host", {"key": 2001, "capacity": SIZE, "file_name": "[ds] d.vmdk", "thin": True,
                        "change_id": "52 1/3"},
        start_at=40 * MiB, rewrite=[(0, 4 * MiB), (8 * MiB, MiB)], dst_is_zero=False,
    )  # fmt: skip
    stop = threading.Event()
    stop.set()  # Ctrl-C before the first request: the rewrite stops at its first offset, 0
    with pytest.raises(StoppedError) as stopped:
        copy_into(job, FileDiskSource(disk), out, Callbacks(cancel=stop))
    assert str(stopped.value) == (
        "stopped while rewriting the 5.0 MiB changed below the checkpoint; resumes from the "
        "checkpoint at 40.0 MiB of 64.0 MiB, rewriting those areas first"
    )
