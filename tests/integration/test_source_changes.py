"""Source changes between syncs (issue 12, item 5): a disk grown in vCenter (ReconfigVM_Task) gets
its volume extended (Cinder) and copied in full, CBT not being trusted across a disk extend; the
plan says so. A snapshot someone else takes between syncs is a concern in the plan, and neither it
nor its removal breaks the deltas."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import GiB, MiB, find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.snapshots import create_snapshot, remove_snapshot
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_cutover import apply, spec_with, vm_ref

pytestmark = pytest.mark.lab


def set_capacity(si: Any, ref: Any, key: int, capacity: int) -> None:
    """ReconfigVM_Task editing one disk's capacityInKB/capacityInBytes, as a vSphere client does."""
    disk = next(d for d in fetch_property(si, ref, "config.hardware.device") if d.key == key)
    disk.capacityInKB = capacity // 1024
    disk.capacityInBytes = capacity
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    wait_task(si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), "resize disk")


@pytest.fixture
def grown_db01_disk(lab: Lab, si: Any, new_cloud_objects: None) -> Iterator[Path]:
    """db01's disk 2002 grown from 1 to 2 GiB; back to 1 GiB after (the lab's own undo: vSphere
    itself never shrinks a disk)."""
    vm = find_vm("db01")
    assert vm is not None
    live = lab_disks.live_path(lab.disks, vm, 2002)
    ref = vm_ref(si, "db01")
    yield live
    set_capacity(si, ref, 2002, GiB)
    os.truncate(live, GiB)


def test_a_grown_disk_extends_its_volume_and_copies_in_full(
    lab: Lab, si: Any, tmp_path: Path, grown_db01_disk: Path
) -> None:
    vm = find_vm("db01")
    assert vm is not None
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "db01", "mode: replicate")
    done = apply(lab, spec, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    volume_id = records(state)["vm.db01.disk[2002]"]["volume_id"]

    set_capacity(si, vm_ref(si, "db01"), 2002, 2 * GiB)
    assert grown_db01_disk.stat().st_size == 2 * GiB, "the lab's disk file grew"
    lab.write("db01", 2002, 1536 * MiB, MiB, seed=21)  # data in the new part

    plan = ferry(lab, "plan", str(spec), "--target", "vm.db01", "--state", str(state), "--json")
    assert plan.returncode == 0, plan.stderr
    change = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}["vm.db01.disk[2002]"]
    assert change["action"] == "update" and change["after"]["size_gib"] == 2, change
    assert "grew from 1 GiB to 2 GiB" in change["reason"] and "extend" in change["reason"]
    assert "full" in change["reason"]

    done = apply(lab, spec, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    after = records(state)["vm.db01.disk[2002]"]
    assert after["volume_id"] == volume_id, "the same volume, extended"
    assert after["size_gib"] == 2 and after["last_sync"]["kind"] == "full"
    assert lab.openstack("ferry-lab").block_storage.get_volume(volume_id).size == 2
    assert file_digest(volume_file(lab, volume_id), 2 * GiB) == file_digest(grown_db01_disk)


def test_a_snapshot_taken_and_removed_by_someone_else_keeps_the_deltas_exact(
    lab: Lab, si: Any, tmp_path: Path, new_cloud_objects: None
) -> None:
    """Someone's snapshot (a backup job) between two syncs of web01, read through the https
    reader, which reads the base extent that snapshot freezes: a plan saved before it is
    refused at the snapshot step, before anything is copied (break-it 12c item 10: it copied
    the older base and recorded ferry's changeId, 2 MiB lost); a plan made while it exists
    blocks web01 and says how to proceed; once it is removed, a delta brings every write."""
    vm = find_vm("web01")
    assert vm is not None
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "web01", "mode: replicate")
    done = apply(lab, spec, "vm.web01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    ref = vm_ref(si, "web01")
    lab.write("web01", 2000, 100 * MiB, MiB, seed=31)
    saved = tmp_path / "before-the-backup.plan"
    made = ferry(
        lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state), "--out", str(saved)
    )
    assert made.returncode == 0, made.stdout + made.stderr
    backup = create_snapshot(si, ref, "backup-tool")  # someone else's, between two syncs
    try:
        lab.write("web01", 2000, 200 * MiB, MiB, seed=32)
        stale = ferry(lab, "apply", str(saved), "--auto-approve", "--state", str(state))
        assert stale.returncode == 1, stale.stdout + stale.stderr
        assert "has snapshot(s) backup-tool now" in stale.stdout + stale.stderr, stale.stdout
        plan = ferry(
            lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state), "--json"
        )
        concerns = next(v for v in json.loads(plan.stdout)["vms"] if v["name"] == "web01")
        assert "snapshot-with-https-reader" in {c["code"] for c in concerns["concerns"]}
        assert concerns["blocked"]
    finally:
        remove_snapshot(si, backup)
    lab.write("web01", 2000, 300 * MiB, MiB, seed=33)
    done = apply(lab, spec, "vm.web01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    synced = records(state)
    assert synced["vm.web01.disk[2000]"]["last_sync"]["kind"] == "delta"
    assert synced["vm.web01.disk[2000]"]["last_sync"]["bytes"] >= 3 * MiB  # all three writes
    for disk in vm.disks:
        volume = volume_file(lab, synced[f"vm.web01.disk[{disk.key}]"]["volume_id"])
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        assert file_digest(volume, disk.capacity) == file_digest(live)
