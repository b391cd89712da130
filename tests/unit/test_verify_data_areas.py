"""A whole-disk verify through a reader without block status (the https reader): the source is
read only where CBT says it holds data (`digest(data=...)`), hashed as zeros elsewhere, and the
sha256 is the disk's all the same. nbdkit's noextents filter stands for the curl plugin's
missing block status."""

from __future__ import annotations

from pathlib import Path

from engine.dataplane.copy import data_runs, digest, file_digest
from engine.dataplane.nbd import Run
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer

MiB = 1024**2


def test_data_runs_cover_the_wanted_areas_exactly() -> None:
    assert data_runs([(0, 10 * MiB)], [(2 * MiB, MiB), (3 * MiB, MiB), (9 * MiB, 4 * MiB)]) == [
        Run(0, 2 * MiB, False),
        Run(2 * MiB, 2 * MiB, True),
        Run(4 * MiB, 5 * MiB, False),
        Run(9 * MiB, MiB, True),
    ]
    assert data_runs([(MiB, MiB)], []) == [Run(MiB, MiB, False)]
    assert data_runs([(0, MiB), (4 * MiB, MiB)], [(512, 4 * MiB)]) == [
        Run(0, 512, False),
        Run(512, MiB - 512, True),
        Run(4 * MiB, 512, True),
        Run(4 * MiB + 512, MiB - 512, False),
    ]


def test_a_digest_over_the_data_areas_equals_the_whole_disks(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    with disk.open("wb") as f:
        f.truncate(64 * MiB)
        for offset in (MiB, 40 * MiB + 4096):
            f.seek(offset)
            f.write(bytes(range(256)) * 4096)  # 1 MiB of data
    data = [(MiB, MiB), (40 * MiB, 2 * MiB)]
    source = FileDiskSource(disk, filters=("noextents",))
    with NbdkitServer(source) as server:
        assert digest(server.uri, data=data) == file_digest(disk) == digest(server.uri)
        # what lies outside `data` is not read: a data area left out hashes as zeros
        assert digest(server.uri, data=data[:1]) != file_digest(disk)
