"""The executor's check that a VM's disks are those its plan was made for (a saved plan applied
after the source changed): grown, added and removed disks stop the VM; a --target of one disk
does not count the VM's other disks as added."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SourceChangedError
from engine.executor.apply import Applier
from engine.model.plan import Action, Change
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor.fakes import one_vm_applier

GiB = 1024**3


def volume(key: int, size_gib: int) -> Change:
    after = {"size_gib": size_gib, "disk_key": key}
    return Change(f"vm.web01.disk[{key}]", "volume", Action.UPDATE, "delta", after, after)


def disk(key: int, capacity: int) -> DiskInfo:
    return DiskInfo(key, capacity, f"[ds] web01/web01_{key}.vmdk", True, "52 aa/1")


def applier(tmp_path: Path, changes: tuple[Change, ...], targets: tuple[str, ...] = ()) -> Applier:
    return one_vm_applier(tmp_path, "web01", "cutover", changes, targets)


def test_the_disks_the_plan_was_made_for_pass(tmp_path: Path) -> None:
    a = applier(tmp_path, (volume(2000, 2), volume(2001, 1)))
    a._check_disks("web01", [disk(2000, 2 * GiB), disk(2001, GiB // 2)])


@pytest.mark.parametrize(
    ("found", "said"),
    [
        ([disk(2000, 3 * GiB), disk(2001, GiB)], "disk 2000 is 3 GiB, the plan's volume 2 GiB"),
        ([disk(2000, 2 * GiB), disk(2001, GiB), disk(2002, GiB)], "disk 2002 was added"),
        ([disk(2000, 2 * GiB)], "disk 2001 was removed"),
    ],
)
def test_a_changed_source_stops_the_vm(tmp_path: Path, found: list[DiskInfo], said: str) -> None:
    a = applier(tmp_path, (volume(2000, 2), volume(2001, 1)))
    with pytest.raises(SourceChangedError, match=said):
        a._check_disks("web01", found)


def test_a_target_of_one_disk_does_not_see_the_others_as_added(tmp_path: Path) -> None:
    a = applier(tmp_path, (volume(2000, 2),), targets=("vm.web01.disk[2000]",))
    a._check_disks("web01", [disk(2000, 2 * GiB), disk(2001, GiB)])
    with pytest.raises(SourceChangedError, match=r"disk 2000 is 2\.5 GiB"):
        a._check_disks("web01", [disk(2000, 5 * GiB // 2), disk(2001, GiB)])
