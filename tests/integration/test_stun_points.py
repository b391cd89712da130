"""No false "in sync" (issue 12): on vSphere a running VM's disk changeId moves at stun points
(snapshot create/remove, power on/off), not at every guest write, and so does the lab's. A running
VM in replicate mode therefore always plans a delta, whose size is unknown until measured; a
powered-off VM whose changeIds match plans nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import MiB, find_vm
from engine.lab.lab import Lab
from engine.model.observed import SYNC_SNAPSHOT_DESCRIPTION as SYNC
from engine.providers.vsphere.power import PowerOffPolicy, power_off, power_on
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.snapshots import create_snapshot, remove_snapshot
from tests.integration.cli import ferry, file_reader
from tests.integration.converge import records, volume_file
from tests.integration.test_cutover import apply, spec_with, vm_ref

pytestmark = pytest.mark.lab


def live_change_ids(si: Any, ref: Any) -> dict[int, str]:
    devices = fetch_property(si, ref, "config.hardware.device")
    return {
        d.key: d.backing.changeId
        for d in devices
        if hasattr(d, "capacityInKB") and getattr(d.backing, "changeId", None)
    }


def test_a_running_vm_changeid_moves_at_stun_points_only(lab: Lab, si: Any) -> None:
    name = "Reporting Ünit 1"
    ref = vm_ref(si, name)
    before = live_change_ids(si, ref)[2000]
    lab.write(name, 2000, 8 * MiB, MiB)
    assert live_change_ids(si, ref)[2000] == before, "a guest write is no stun point"
    snap = create_snapshot(si, ref, "stun-test")
    try:
        taken = live_change_ids(si, ref)[2000]
        assert taken != before, "a snapshot is a stun point"
        lab.write(name, 2000, 9 * MiB, MiB)
        assert live_change_ids(si, ref)[2000] == taken
    finally:
        remove_snapshot(si, snap)
    removed = live_change_ids(si, ref)[2000]
    assert removed != taken, "removing a snapshot is a stun point"
    lab.write(name, 2000, 10 * MiB, MiB)
    try:
        power_off(si, ref, PowerOffPolicy(graceful=False))
        off = live_change_ids(si, ref)[2000]
        assert off != removed, "a power-off is a stun point"
        lab.write(name, 2000, 11 * MiB, MiB)
        assert live_change_ids(si, ref)[2000] != off, "a VM that is off: every write moves it"
    finally:
        power_on(si, ref)


def test_a_running_vm_in_sync_plans_a_delta_that_copies_its_hidden_writes(
    lab: Lab, si: Any, tmp_path: Path, new_cloud_objects: None
) -> None:
    vm = find_vm("web01")
    assert vm is not None
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "web01", "mode: replicate")
    done = apply(lab, spec, "vm.web01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    lab.write("web01", 2000, 300 * MiB, MiB, seed=12)
    synced = records(state)["vm.web01.disk[2000]"]
    # the trap: vSphere reports the changeId of the last sync though the disk changed since
    assert live_change_ids(si, vm_ref(si, "web01"))[2000] == synced["change_id"]

    plan = ferry(lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state), "--json")
    assert plan.returncode == 0, plan.stderr
    changes = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}
    for key in (2000, 2001):
        change = changes[f"vm.web01.disk[{key}]"]
        assert change["action"] == "update", change
        assert "unknown until measured" in change["reason"], change
    detailed = ferry(
        lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert detailed.returncode == 2 and "No changes" not in detailed.stdout

    done = apply(lab, spec, "vm.web01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    after = records(state)
    assert after["vm.web01.disk[2000]"]["last_sync"]["kind"] == "delta"
    assert after["vm.web01.disk[2000]"]["last_sync"]["bytes"] == MiB  # the hidden write
    assert after["vm.web01.disk[2001]"]["last_sync"]["bytes"] == 0
    for disk in vm.disks:
        volume = volume_file(lab, after[f"vm.web01.disk[{disk.key}]"]["volume_id"])
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        assert file_digest(volume, disk.capacity) == file_digest(live)
    # the next plan estimates from the change rate between the last two syncs
    plan = ferry(lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state), "--json")
    reason = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}["vm.web01.disk[2000]"][
        "reason"
    ]
    assert "changed between the last syncs" in reason, reason


def test_a_powered_off_vm_in_sync_is_a_no_op_until_a_snapshot_is_left_on_it(
    lab: Lab, si: Any, tmp_path: Path, new_cloud_objects: None
) -> None:
    """A powered-off VM in sync plans nothing. Then chaos seed 8103: an apply killed after
    build-old synced, before its snapshot was removed, left `ferry-build-old` on the VM; with
    nothing else planned for it, the next plans said "No changes" and the snapshot stayed
    forever. Now the plan removes it as its own step, the apply does, and a user's snapshot
    (`ferry-backup`: ferry's prefix, not its description) stays, as does another ferry
    state's (its lineage in the description; a warning in the plan, a line in the apply:
    break-it 16b F5)."""
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "build-old", "mode: replicate")
    # the lab's snapshot files: the user's snapshot stays on build-old, which the https reader
    # refuses (its base extent is older); what is tested here is which snapshots are ferry's
    spec.write_text(file_reader(spec.read_text()))
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert plan.returncode == 0 and "No changes" in plan.stdout, plan.stdout
    ref = vm_ref(si, "build-old")
    # what the kill -9 leaves in vCenter: ferry's sync snapshot (its name and description)
    left = create_snapshot(si, ref, "ferry-build-old", SYNC)
    users = create_snapshot(si, ref, "ferry-backup", "before the migration")
    # another ferry state's (its lineage in the description), its copy maybe running: it stays
    # (break-it 16b F5: a second state's apply removed it under the first state's copy)
    theirs = create_snapshot(
        si, ref, "ferry-build-old", f"{SYNC} (ferry state 0c0ffee0-0000-4000-8000-000000000000)"
    )
    try:
        plan = ferry(
            lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state), "--json"
        )
        changes = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}
        codes = [c["code"] for v in json.loads(plan.stdout)["vms"] for c in v["concerns"]]
        assert "other-state-snapshot" in codes, codes
        step = changes["vm.build-old.snapshot"]
        assert step["action"] == "delete", step
        assert "left by an interrupted apply" in step["reason"], step
        assert [s["moref"] for s in step["before"]["snapshots"]] == [left._moId], step
        done = apply(lab, spec, "vm.build-old", state)
        assert done.returncode == 0, done.stdout + done.stderr
        said = f"snapshot {theirs._moId} (ferry-build-old) was taken by ferry state 0c0ffee0"
        assert said in done.stdout, done.stdout
        morefs = sorted(s.snapshot._moId for s in _snapshots(si, ref))
        assert morefs == sorted([users._moId, theirs._moId]), morefs
        plan = ferry(
            lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
            "--detailed-exitcode",
        )  # fmt: skip
        assert plan.returncode == 0 and "No changes" in plan.stdout, plan.stdout
    finally:
        remove_snapshot(si, theirs)
        remove_snapshot(si, users)


def _snapshots(si: Any, ref: Any) -> list[Any]:
    info = fetch_property(si, ref, "snapshot")
    out, stack = [], list(info.rootSnapshotList) if info is not None else []
    while stack:
        tree = stack.pop()
        out.append(tree)
        stack.extend(tree.childSnapshotList or [])
    return out
