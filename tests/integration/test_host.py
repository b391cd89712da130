"""The host-bound sync (engine.executor.host) with real nbdkit and files: its job and result
are plain JSON, and a resumed copy with a rewrite ends equal to the newer source even where the
interrupted copy wrote beyond its checkpoint (writes in flight) bytes that have changed since."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.copy import CopyOptions, copy, file_digest
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer
from engine.executor.host import (
    VERIFIED_WHOLE,
    Callbacks,
    Host,
    SyncJob,
    SyncResult,
    _copy_job,
    source_of,
    sync,
)
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo

MiB = 1024**2
SIZE = 64 * MiB


def test_a_sync_job_and_its_result_are_plain_json() -> None:
    disk = DiskInfo(
        2000, 2 * 1024**3, "[ds] vm/vm-000001.vmdk", True, "52 aa/7", ("[ds] vm/vm.vmdk",)
    )
    job = SyncJob(
        "vol-1",
        "host-1",
        source_of("vm-42", "4215-uuid", "snapshot-9", disk),
        areas=[(0, MiB), (4 * MiB, 512)],
        start_at=MiB,
        dst_is_zero=True,
        verify="changed areas",
        rewrite=[(8 * MiB, 4096)],
    )
    again = SyncJob.from_json(json.loads(json.dumps(job.to_json())))
    assert again == job and again.disk() == disk
    result = SyncResult(10, 10, 2, 3, 1, 0.5, "ab", "whole disk")
    assert SyncResult(**json.loads(json.dumps(result.to_json()))) == result


def test_a_resume_with_its_rewrite_ends_equal_to_the_newer_source(tmp_path: Path) -> None:
    rng = random.Random(21)
    old = bytearray(rng.randbytes(SIZE))
    old[40 * MiB : 48 * MiB] = bytes(8 * MiB)  # a zero run in the first snapshot
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    src.write_bytes(old)
    dst.write_bytes(b"")
    dst.open("r+b").truncate(SIZE)
    mark = 16 * MiB
    with NbdkitServer(FileDiskSource(src)) as server:  # the interrupted copy, writes in flight
        copy(server.uri, dst, [(0, mark), (30 * MiB, 4 * MiB)], CopyOptions(dst_is_zero=True))
    new = bytearray(old)
    new[MiB : 2 * MiB] = rng.randbytes(MiB)  # below the checkpoint
    new[30 * MiB : 34 * MiB] = bytes(4 * MiB)  # zeroed where writes in flight had landed
    new[44 * MiB : 45 * MiB] = rng.randbytes(MiB)  # beyond
    src.write_bytes(new)
    changed = [(MiB, MiB), (30 * MiB, 4 * MiB), (44 * MiB, MiB)]
    disk = DiskInfo(2000, SIZE, "[ds] d.vmdk", True, "52 aa/8")
    job = SyncJob("vol", "host", source_of("vm", "u", "s", disk), None, mark, True, "", changed)
    rewritten: list[bool] = []
    stats = _copy_job(
        job, FileDiskSource(src), dst, Callbacks(rewritten=lambda: rewritten.append(True))
    )
    assert rewritten == [True]
    assert file_digest(dst) == file_digest(src)
    assert stats.bytes_read <= SIZE - mark + 6 * MiB


def test_a_sync_says_its_bytes_are_written_before_it_detaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: the copy's slot goes back when its bytes are written: `written` comes after the
    copy and its verify, before the detach (real nbdkit, a file as the device)."""
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    src.write_bytes(random.Random(3).randbytes(4 * MiB))
    dst.write_bytes(bytes(4 * MiB))
    seen: list[str] = []
    monkeypatch.setattr(volumes, "attach", lambda _c, _h, v: seen.append(f"attach {v}"))
    monkeypatch.setattr(volumes, "detach", lambda _c, _h, v: seen.append(f"detach {v}"))
    monkeypatch.setattr(
        volumes, "seen", lambda _c, v: seen.append(f"check {v}") or volumes.Seen([], None)
    )
    monkeypatch.setattr(volumes, "unstamp", lambda _c, v: seen.append(f"unstamp {v}"))
    monkeypatch.setattr(volumes, "stamp", lambda _c, v: seen.append(f"stamp {v}"))

    class Seams:
        def source(self, *_args: Any) -> FileDiskSource:
            return FileDiskSource(src)

        def device(self, *_args: Any) -> Path:
            return dst

    disk = DiskInfo(2000, 4 * MiB, "[ds] d.vmdk", True, "52 aa/9")
    job = SyncJob("vol", "host", source_of("vm", "u", "s", disk), verify=VERIFIED_WHOLE)
    calls = Callbacks(
        progress=lambda done, total: seen.append("progress") if done == total else None,
        written=lambda: seen.append("written"),
    )
    result = sync(job, Host(None, Seams(), Seams()), calls)  # type: ignore[arg-type]
    assert result.sha256 == file_digest(src) and file_digest(dst) == file_digest(src)
    assert [s for s in seen if s != "progress"] == [
        "check vol",
        "unstamp vol",
        "attach vol",
        "written",
        "detach vol",
        "stamp vol",
    ]
