"""A saved plan is applied only to disks of the bytes it was made with (break-it 12d item 6: a
saved delta plan applied after a disk grew within its volume's GiB, 2.5 → 2.75 GiB on a 3 GiB
volume, synced a CBT delta across the extend and recorded the new capacity; the full copy a
fresh plan makes for a grown disk never ran). Each disk change of a plan carries the disk's
`capacity` (bytes) the planner saw; the executor refuses the VM when a disk differs by a byte,
grown or shrunk, and nothing is changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SourceChangedError
from engine.executor.apply import Applier
from engine.model.plan import Action, Change
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor.fakes import one_vm_applier

GiB = 1024**3
MiB = 1024**2
PLANNED = 5 * GiB // 2  # 2.5 GiB on a 3 GiB volume


def delta(key: int, capacity: int) -> Change:
    after = {"size_gib": 3, "disk_key": key, "capacity": capacity}
    return Change(f"vm.db01.disk[{key}]", "volume", Action.UPDATE, "delta sync", after, after)


def applier(tmp_path: Path, changes: tuple[Change, ...]) -> Applier:
    return one_vm_applier(tmp_path, "db01", "replicate", changes)


def disk(key: int, capacity: int) -> DiskInfo:
    return DiskInfo(key, capacity, f"[ds] db01/db01_{key}.vmdk", True, "52 aa/4")


def test_the_bytes_the_plan_saw_pass(tmp_path: Path) -> None:
    applier(tmp_path, (delta(2001, PLANNED),))._check_disks("db01", [disk(2001, PLANNED)])


@pytest.mark.parametrize(
    ("now", "said"),
    [
        (PLANNED + GiB // 4, "disk 2001 is 2 GiB \\+ 768 MiB, 2 GiB \\+ 512 MiB"),
        (PLANNED + 4096, "disk 2001 is 2 GiB \\+ 512 MiB \\+ 4 KiB,"),  # one block: still a grow
        (PLANNED - MiB, "disk 2001 is 2 GiB \\+ 511 MiB,"),  # shrunk within its GiB
    ],
    ids=["grown-within-its-gib", "grown-by-4-kib", "shrunk-within-its-gib"],
)
def test_a_disk_of_other_bytes_stops_the_vm(tmp_path: Path, now: int, said: str) -> None:
    a = applier(tmp_path, (delta(2001, PLANNED),))
    with pytest.raises(SourceChangedError, match=said + r".*when the plan was made"):
        a._check_disks("db01", [disk(2001, now)])
