"""Identity on the lab (issue 12, items 4 and 6): a datacenter is found by name wherever it sits
in the folder tree; state follows a VM's instance UUID, so a rename moves its records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.lab.estate import ESTATE, find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ROOT, ferry
from tests.integration.converge import records

pytestmark = pytest.mark.lab


@pytest.fixture
def dc0_in_a_folder(si: Any) -> Iterator[None]:
    """DC0 moved into a folder Region-A for the test, and back after (the lab is shared)."""
    root = si.RetrieveContent().rootFolder
    (dc,) = [e for e in root.childEntity if isinstance(e, vim.Datacenter) and e.name == "DC0"]
    region = root.CreateFolder("Region-A")
    try:
        wait_task(si, region.MoveIntoFolder_Task([dc]), "move DC0 into Region-A")
        yield
    finally:
        wait_task(si, root.MoveIntoFolder_Task([dc]), "move DC0 back")
        wait_task(si, region.Destroy_Task(), "remove Region-A")


@pytest.mark.usefixtures("dc0_in_a_folder")
def test_a_datacenter_in_a_folder_is_found_by_name_and_by_path(lab: Lab, tmp_path: Path) -> None:
    demo = (ROOT / "plans" / "demo.yaml").read_text()
    for datacenter in ("DC0", "Region-A/DC0"):
        spec = tmp_path / "dc.yaml"
        spec.write_text(demo.replace("datacenter: DC0", f"datacenter: {datacenter}"))
        done = ferry(lab, "plan", str(spec), "--json", "--state", str(tmp_path / "s.db"))
        assert done.returncode == 1, done.stdout + done.stderr  # one VM blocked:
        plan = json.loads(done.stdout)
        assert plan["diagnostics"] == []
        # the demo's https reader refuses the VM with a snapshot of its own
        assert [v["name"] for v in plan["vms"] if v["blocked"]] == ["Reporting Ünit 1"]
        assert sorted(v["name"] for v in plan["vms"]) == sorted(vm.name for vm in ESTATE)
    spec.write_text(demo.replace("datacenter: DC0", "datacenter: DC0/vm"))
    wrong = ferry(lab, "plan", str(spec), "--state", str(tmp_path / "s.db"))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "no datacenter 'DC0/vm' in vCenter (datacenters: /Region-A/DC0)" in (
        wrong.stdout + wrong.stderr
    ).replace("\n", "")


DB01 = find_vm("db01")
assert DB01 is not None


def spec_selecting(tmp_path: Path, entry: str) -> Path:
    """The demo spec cut down to db01, selected by `entry`; copies unverified (faster)."""
    head = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
    spec = tmp_path / f"db01-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    spec.write_text(
        head.replace("verify: true", "verify: false")
        + f"\nvms:\n  - {entry}\n    flavor: {{name: m1.large}}\n"
    )
    return spec


def rename(si: Any, uuid: str, name: str) -> None:
    (vm,) = [
        o.ref
        for o in retrieve(si, vim.VirtualMachine, ["config.instanceUuid"])
        if o.props.get("config.instanceUuid") == uuid
    ]
    wait_task(si, vm.Rename_Task(name), f"rename {uuid} to {name}")


def plan_json(lab: Lab, spec: Path, state: Path) -> tuple[int, dict[str, Any]]:
    done = ferry(lab, "plan", str(spec), "--json", "--detailed-exitcode", "--state", str(state))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.usefixtures("new_cloud_objects")
def test_a_renamed_vm_moves_its_records_and_keeps_its_volumes(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Issue 12, item 4 (and 2): db01 replicated, selected by instance_uuid, renamed in vCenter:
    the plan moves its records (no delete, adopt or copy of a volume), apply re-keys the state,
    the volumes stay the same and no full copy follows. A spec selecting it by its old name
    finds nothing: an error, and its records are left untouched."""
    state = tmp_path / "ferry.db"
    by_uuid = spec_selecting(tmp_path, f"instance_uuid: {DB01.instance_uuid}")
    done = ferry(lab, "apply", str(by_uuid), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    first = records(state)
    disks = [f"vm.db01.disk[{d.key}]" for d in DB01.disks]
    rename(si, DB01.instance_uuid, "db01-renamed")
    try:
        code, plan = plan_json(lab, by_uuid, state)
        assert code == 2 and plan["diagnostics"] == []
        (move,) = [c for c in plan["changes"] if c["action"] == "move"]
        assert move["address"] == "vm.db01-renamed"
        assert move["before"]["address"] == "vm.db01"
        assert move["before"]["records"] == sorted(first)
        assert plan["summary"]["move"] == 1
        # db01 may be running: a delta sync (and its snapshot) is fine, no volume made or adopted
        volumes = [c for c in plan["changes"] if c["kind"] == "volume"]
        assert not [c for c in plan["changes"] if c["action"] in ("delete", "read")]
        assert not [c for c in volumes if c["action"] == "create" or "full copy" in c["reason"]]
        assert not [c for c in plan["changes"] if c["address"].startswith("vm.db01.")]
        human = ferry(lab, "plan", str(by_uuid), "--state", str(state))
        assert "-> vm.db01-renamed move  vm.db01 has moved to vm.db01-renamed" in human.stdout
        assert ", 1 to move;" in human.stdout

        by_name = spec_selecting(tmp_path, "name: db01")
        code, plan = plan_json(lab, by_name, state)
        assert code == 1
        kept = [d["summary"] for d in plan["diagnostics"]]
        assert "vms[0] selects no VM in the inventory of datacenter DC0: name 'db01'" in kept
        assert any(s.startswith("vm.db01 (instance UUID ") and "left untouched" in s for s in kept)
        assert plan["changes"] == []

        done = ferry(lab, "apply", str(by_uuid), "--auto-approve", "--state", str(state))
        assert done.returncode == 0, done.stdout + done.stderr
        moved = records(state)
        assert not [a for a in moved if a.startswith("vm.db01.")]
        for address in disks:
            new = address.replace("vm.db01.", "vm.db01-renamed.")
            assert moved[new]["volume_id"] == first[address]["volume_id"], "the same volume"
            assert moved[new]["instance_uuid"] == DB01.instance_uuid
        conn = lab.openstack("ferry-lab")
        ours = [
            v.id
            for v in conn.block_storage.volumes(details=True)
            if (v.metadata or {}).get("ferry_vm") == DB01.instance_uuid
        ]
        assert sorted(ours) == sorted(first[a]["volume_id"] for a in disks)

        code, plan = plan_json(lab, by_uuid, state)
        assert code in (0, 2)
        volumes = [c for c in plan["changes"] if c["kind"] == "volume"]
        assert {c["action"] for c in volumes} <= {"no-op", "update"}
        assert not [c for c in volumes if "full copy" in c["reason"]], "no full copy again"
        assert not [c for c in plan["changes"] if c["action"] == "move"]
    finally:
        rename(si, DB01.instance_uuid, "db01")
