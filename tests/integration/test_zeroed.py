"""Zeros only where proven (issue 12 item 7): a new volume is assumed to read as zeros — its
holes left unwritten — only when its volume type has no encryption and the spec does not say
`zeroed: false`. The lab's volume type `localds-0-dirty` hands out volumes that hold a pattern
where nothing was written (like LUKS or some array backends); copied onto it, the source's
holes and zero runs must be written as zeros."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.lab.openstack.bootstrap import DIRTY_VOLUME_TYPE
from engine.providers.openstack import volumes
from tests.integration.cli import ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_fault_drills import spec_for

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2


def test_the_dirty_volume_type_hands_out_volumes_that_do_not_read_as_zeros(lab: Lab) -> None:
    conn = lab.openstack("ferry-lab")
    volume = volumes.create_volume(conn, "probe", 1, DIRTY_VOLUME_TYPE, {}, wait=True)
    with volume_file(lab, volume.id).open("rb") as f:
        assert f.read(4096) != bytes(4096), "the lab's dirty volume type reads as zeros"


def test_holes_are_zeroed_on_a_volume_type_not_zeroed(lab: Lab, tmp_path: Path) -> None:
    """build-old (powered off, a 2 GiB sparse disk) onto localds-0-dirty marked `zeroed: false`:
    the plan and the apply say the volume is not assumed to read as zeros, and the volume
    equals the disk (the pattern under the holes is gone)."""
    dirty = f"{{name: {DIRTY_VOLUME_TYPE}, zeroed: false}}"
    mapping = f"    volume_type_map:\n      LocalDS_1: {dirty}\n"
    spec = spec_for(tmp_path, "build-old", f"    verify: false\n{mapping}")
    state = tmp_path / "ferry.db"
    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    said = " ".join(plan.stdout.split())
    assert "not assumed to read as zeros" in said and "holes written as zeros" in said, said

    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "logs" / "build-old.log").read_text()
    assert "not assumed to read as zeros: holes and zero runs written as zeros" in log, log
    vm = find_vm("build-old")
    assert vm is not None
    record = records(state)["vm.build-old.disk[2000]"]
    live = lab_disks.live_path(lab.disks, vm, 2000)
    volume = volume_file(lab, record["volume_id"])
    assert file_digest(volume, vm.disks[0].capacity) == file_digest(live)
    assert record["last_sync"]["bytes"] > sum(n for _, n in lab_disks.data_extents(live))
