"""An interrupted full copy whose disk grew before the resume starts over from 0 (onto the old
bytes, so holes are written): a resume would ask CBT what changed since a changeId taken before
the extend, and CBT cannot be trusted across a disk extend (VMware KB 2090639). The executor
sees the grow itself (the capacity the copy began at, `copy_capacity`) and also follows a plan
that says so (`after.copy: full`, for a record from before copy_capacity)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executor.apply import Applier
from engine.executor.volume_steps import ToCopy
from engine.model.plan import Action, Change
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor.fakes import one_vm_applier


@pytest.fixture(autouse=True)
def unstamped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The volume carries no `ferry_updated_at` stamp (nothing known of it: the checkpoint is
    trusted, as before)."""
    monkeypatch.setattr(
        "engine.providers.openstack.volumes.seen_if_found", lambda _c, _v: volumes.Seen([], None)
    )


GiB = 1024**3
BEGAN = "52 aa/10"
INTERRUPTED = {"volume_id": "v1", "copy": "full", "copied_bytes": GiB, "copy_change_id": BEGAN,
               "copy_capacity": 2 * GiB, "dst_is_zero": True}  # fmt: skip


def applier(tmp_path: Path) -> Applier:
    return one_vm_applier(tmp_path, "web01", "replicate")


def disk(capacity: int) -> DiskInfo:
    return DiskInfo(2000, capacity, "[ds] web01/web01.vmdk", True, BEGAN)


def test_a_grown_disk_starts_the_interrupted_copy_over(tmp_path: Path) -> None:
    what = applier(tmp_path)._resume(dict(INTERRUPTED), None, None, disk(3 * GiB))
    assert (what.kind, what.areas, what.start_at, what.dst_is_zero) == ("full", None, 0, False)
    assert what.rewrite == []
    assert "grew from 2 GiB to 3 GiB since it began" in what.why
    assert "kb.vmware.com/kb/2090639" in what.why


def test_the_same_disk_resumes_at_its_checkpoint(tmp_path: Path) -> None:
    what = applier(tmp_path)._resume(dict(INTERRUPTED), None, None, disk(2 * GiB))
    assert what == ToCopy("full", None, GiB, True, began=BEGAN)


def test_a_plan_that_starts_it_over_is_followed(tmp_path: Path) -> None:
    """A record from before copy_capacity: the planner saw the volume smaller than the disk."""
    before = {k: v for k, v in INTERRUPTED.items() if k != "copy_capacity"}
    after = {"size_gib": 3, "disk_key": 2000, "copy": "full"}
    change = Change("vm.web01.disk[2000]", "volume", Action.CREATE, "starts over", before, after)
    what = applier(tmp_path)._what_to_copy(change, before, None, None, disk(3 * GiB))
    assert (what.kind, what.start_at, what.dst_is_zero, what.rewrite) == ("full", 0, False, [])
