"""`ferry plan` on the lab: the demo spec against the real vCenter and cloud."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pyVmomi import vim

from engine.lab import disks as lab_disks
from engine.lab.estate import ESTATE, LabDisk, LabVM
from engine.lab.lab import Lab
from engine.planner import planfile
from engine.providers.vsphere.read import retrieve
from engine.units import human
from tests.integration.cli import ROOT, ferry

pytestmark = pytest.mark.lab
PLAN_SCHEMA = json.loads((ROOT / "schemas" / "plan.v1.json").read_text())


def counts(lab: Lab, si: Any) -> tuple[int, int]:
    volumes = len(list(lab.openstack("ferry-lab-admin").block_storage.volumes(all_projects=True)))
    snaps = sum(
        len(o.props.get("snapshot").rootSnapshotList) if o.props.get("snapshot") else 0
        for o in retrieve(si, vim.VirtualMachine, ["snapshot"])
    )
    return volumes, snaps


def allocated(lab: Lab, vm: LabVM, disk: LabDisk) -> int:
    if not disk.thin:
        return disk.capacity
    return min(os.stat(lab_disks.live_path(lab.disks, vm, disk.key)).st_blocks * 512, disk.capacity)


def full_read(lab: Lab, vm: LabVM, disk: LabDisk) -> int:
    """What the plan says a full copy reads: the allocated bytes, or with CBT off the whole
    capacity (the demo's https reader has no block status and nothing says where data is)."""
    return allocated(lab, vm, disk) if vm.cbt else disk.capacity


# the demo spec reads disks through the https reader, which refuses a VM with snapshots of its
# own (its base extent is older than its disk): the estate's Reporting Ünit 1 is blocked
BLOCKED = "Reporting Ünit 1"
PLANNED = [vm for vm in ESTATE if vm.name != BLOCKED]


def test_demo_plan_json(lab: Lab, si: Any, tmp_path: Path) -> None:
    state = tmp_path / "ferry.db"
    before = counts(lab, si)
    done = ferry(
        lab,
        "plan",
        "plans/demo.yaml",
        "--json",
        "--detailed-exitcode",
        "--state",
        str(state),
        "--out",
        str(tmp_path / "demo.plan"),
    )
    assert done.returncode == 1, done.stderr  # a blocked VM (exit 2 once it is consolidated)
    plan = json.loads(done.stdout)
    Draft202012Validator(PLAN_SCHEMA).validate(plan)
    assert not state.exists(), "plan never creates state"
    assert counts(lab, si) == before, "plan never changes the source or the destination"
    vms = {v["name"]: v for v in plan["vms"]}
    assert set(vms) == {vm.name for vm in ESTATE}
    assert vms["web01"]["flavor"] == "m1.medium" and vms["db01"]["flavor"] == "m1.large"
    codes = {name: {c["code"] for c in v["concerns"]} for name, v in vms.items()}
    assert "cbt-off" in codes["win-app01"]
    # the refusal only: the replicate warning's "consolidate later" would contradict it (15 F7)
    assert "snapshot-with-https-reader" in codes[BLOCKED]
    assert "existing-snapshot" not in codes[BLOCKED]
    (refused,) = [c for c in vms[BLOCKED]["concerns"] if c["code"] == "snapshot-with-https-reader"]
    assert (
        "consolidate (delete) them first, or read this VM with source.reader: vddk"
        in (refused["message"])
    )
    assert "powered-off" in codes["build-old"]
    assert [n for n, v in vms.items() if v["blocked"]] == [BLOCKED]
    volumes = {c["address"]: c for c in plan["changes"] if c["kind"] == "volume"}
    assert not any(a.startswith(f'vm["{BLOCKED}"]') for a in volumes)
    for vm in PLANNED:
        for disk in vm.disks:
            address = (
                f"vm.{vm.name}" if " " not in vm.name else f'vm["{vm.name}"]'
            ) + f".disk[{disk.key}]"
            change = volumes[address]
            # a full copy reads at most what the disk occupies on its datastore (layoutEx), the
            # whole extent when CBT is off (win-app01)
            assert change["action"] == "create" and change["bytes"] == full_read(lab, vm, disk)
            assert change["after"]["volume_type"] == disk.datastore.lower().replace("_", "-")
    assert plan["summary"]["bytes_to_copy"] == sum(
        full_read(lab, vm, d) for vm in PLANNED for d in vm.disks
    )
    assert plan["summary"]["bytes_to_copy"] < sum(d.capacity for vm in ESTATE for d in vm.disks)
    saved = planfile.load(tmp_path / "demo.plan")
    assert saved.spec_path is not None
    assert saved.spec_path.resolve() == (ROOT / "plans/demo.yaml").resolve()
    assert planfile.to_json(saved.plan)["changes"] == plan["changes"]


def test_demo_plan_human_view_and_target(lab: Lab, tmp_path: Path) -> None:
    done = ferry(lab, "plan", "plans/demo.yaml", "--state", str(tmp_path / "s.db"))
    assert done.returncode == 1, done.stderr  # Reporting Ünit 1 is blocked
    assert "+ vm.web01.disk[2000] create" in done.stdout
    assert "warning: CBT is off" in done.stdout
    assert "disks read via https" in " ".join(done.stdout.split())
    total = human(sum(full_read(lab, vm, d) for vm in PLANNED for d in vm.disks))
    said = " ".join(done.stdout.split())
    assert f"Plan: 11 to create, 0 to update, 0 to destroy; {total} to copy; 1 VM(s) blocked" in (
        said
    )
    targeted = ferry(
        lab,
        "plan",
        "plans/demo.yaml",
        "--json",
        "--target",
        "vm.db01",
        "--state",
        str(tmp_path / "s.db"),
    )
    addresses = {c["address"] for c in json.loads(targeted.stdout)["changes"]}
    assert addresses == {
        "vm.db01.snapshot",
        "vm.db01.disk[2000]",
        "vm.db01.disk[2001]",
        "vm.db01.disk[2002]",
    }


def test_plan_errors_are_one_clear_report(lab: Lab, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    text = (
        (ROOT / "plans" / "demo.yaml")
        .read_text()
        .replace("    DC0_DVPG1: {network: lab-dvpg1}\n", "")
    )
    spec.write_text(text)
    done = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", str(tmp_path / "s.db"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: NIC 0 (00:50:56:8f:03:00) is on portgroup 'DC0_DVPG1'" in done.stdout
    assert "blocked" in done.stdout
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("version: 1\nvms: 3\n")
    done = ferry(lab, "plan", str(invalid))
    assert (
        done.returncode == 1
        and "invalid.yaml:2:6: error: expected array, got integer 3 (at vms)" in done.stderr
        and "Traceback" not in done.stderr
    )


def test_a_vm_entry_that_selects_nothing_is_an_error_with_its_line(
    lab: Lab, tmp_path: Path
) -> None:
    spec = tmp_path / "ghost.yaml"
    spec.write_text((ROOT / "plans" / "demo.yaml").read_text() + "  - name: ghost01\n")
    lines = spec.read_text().splitlines()
    done = ferry(lab, "plan", str(spec), "--state", str(tmp_path / "s.db"))
    assert done.returncode == 1
    where = (
        f"{spec}:{len(lines)}:5: error: vms[5] selects no VM in the inventory of datacenter "
        "DC0: name 'ghost01'"
    )
    assert where in done.stdout.replace("\n", "")


def test_a_vm_over_the_projects_quota_is_blocked_and_the_others_planned(
    lab: Lab, tmp_path: Path
) -> None:
    """Quotas read from the lab cloud: gigabytes left for web01's volumes (2 + 1 GiB) but not
    for db01's (1 + 4 + 1 GiB) too; one more volume of type localds-0 (Cinder's per-type quota,
    break-it 12j F1: found only by the volume create, after a cutover's power-off): web01's,
    not win-app01's."""
    admin = lab.openstack("ferry-lab-admin")
    project = lab.openstack("ferry-lab").current_project_id
    current = admin.block_storage.get_quota_set(project, usage=True)
    typed = "volumes_localds-0"
    was = current.to_dict(computed=False)
    limit, used = int(current.gigabytes), int((current.usage or {}).get("gigabytes", 0))
    used_typed = int((current.usage or {}).get(typed, 0))
    admin.block_storage.update_quota_set(project, gigabytes=used + 4, **{typed: used_typed + 1})
    try:
        done = ferry(lab, "plan", "plans/demo.yaml", "--json", "--state", str(tmp_path / "s.db"))
    finally:
        admin.block_storage.update_quota_set(project, gigabytes=limit, **{typed: was[typed]})
    assert done.returncode == 1, done.stderr  # a blocked VM
    vms = {v["name"]: v for v in json.loads(done.stdout)["vms"]}
    assert not vms["web01"]["blocked"]
    assert vms["db01"]["blocked"]
    (quota,) = [c for c in vms["db01"]["concerns"] if c["code"] == "quota"]
    assert "GiB of volumes and snapshots: needs 6, 1 left" in quota["message"]
    (quota,) = [c for c in vms["win-app01"]["concerns"] if c["code"] == "quota"]
    assert "volumes of type localds-0: needs 1, 0 left" in quota["message"]


def test_vms_selected_by_vsphere_tag(lab: Lab, tmp_path: Path) -> None:
    """The lab tags web01 and db01 wave:1 (tier:web, tier:db), Reporting Ünit 1 wave:2; tags
    are read through vcsim's vSphere Automation REST API."""
    text = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
    spec = tmp_path / "tagged.yaml"
    spec.write_text(
        text + "\nvms:\n  - pattern: {tag: 'wave:1'}\nexclude:\n  - pattern: {tag: 'tier:db'}\n"
    )
    done = ferry(lab, "plan", str(spec), "--json", "--state", str(tmp_path / "s.db"))
    assert done.returncode == 0, done.stderr
    assert [v["name"] for v in json.loads(done.stdout)["vms"]] == ["web01"]
    spec.write_text(text + "\nvms:\n  - pattern: {tag: 'wave:9'}\n")
    none = ferry(lab, "plan", str(spec), "--state", str(tmp_path / "s.db"))
    assert none.returncode == 1 and "selects no VM" in none.stderr + none.stdout
