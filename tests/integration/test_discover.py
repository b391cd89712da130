"""`ferry discover` on the lab: the whole estate in one PropertyCollector pass."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.lab import vcenter
from engine.lab.estate import DISTRIBUTED_PORTGROUPS, ESTATE, HOSTS
from engine.lab.lab import Lab, vcsim_binary
from engine.lab.processes import stop
from engine.providers.vsphere.inventory import fetch_inventory, parse_inventory
from tests.integration.cli import ROOT, ferry

pytestmark = pytest.mark.lab


@pytest.fixture
def calls(si: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the SOAP methods the session calls from now on."""
    names: list[str] = []
    stub = si._stub
    original = stub.InvokeMethod

    def counting(mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:  # noqa: N803
        names.append(info.name)
        return original(mo, info, args, outerStub) if outerStub else original(mo, info, args)

    monkeypatch.setattr(stub, "InvokeMethod", counting)
    return names


def test_fetch_is_one_retrieve_call(si: Any, calls: list[str]) -> None:
    objects = fetch_inventory(si)
    assert calls.count("RetrievePropertiesEx") == 1
    assert len(calls) <= 4, calls  # view create, retrieve, view destroy (+ content once)
    assert len(parse_inventory(objects).vms) == len(ESTATE)


def discover(lab: Lab, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return ferry(lab, "discover", *args, **env)


def test_discover_json_describes_the_estate(lab: Lab) -> None:
    done = discover(lab, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format_version"] == 1
    assert report["hosts"] == sorted(HOSTS)
    vms = {vm["name"]: vm for vm in report["vms"]}
    assert set(vms) == {vm.name for vm in ESTATE}
    for lab_vm in ESTATE:
        got = vms[lab_vm.name]
        assert got["instance_uuid"] == lab_vm.instance_uuid
        assert got["cbt"] is lab_vm.cbt
        assert got["power_state"] == ("poweredOn" if lab_vm.powered_on else "poweredOff")
        assert got["firmware"] == lab_vm.firmware
        assert (got["cpus"], got["memory_mb"]) == (lab_vm.cpus, lab_vm.memory_mb)
        assert got["host"] == lab_vm.host and got["folder"] == "/DC0/vm"
        assert [(d["key"], d["capacity"], d["thin"], d["datastore"]) for d in got["disks"]] == [
            (d.key, d.capacity, d.thin, d.datastore) for d in lab_vm.disks
        ]
        assert [(n["mac"], n["portgroup"], n["distributed"]) for n in got["nics"]] == [
            (n.mac, n.portgroup, n.portgroup in DISTRIBUTED_PORTGROUPS) for n in lab_vm.nics
        ]
        assert [s["name"] for s in got["snapshots"]] == (
            [lab_vm.existing_snapshot] if lab_vm.existing_snapshot else []
        )


def test_discover_with_the_demo_spec_and_a_table(lab: Lab) -> None:
    done = discover(lab, "plans/demo.yaml")
    assert done.returncode == 0, done.stderr
    assert "5 VMs on 2 hosts" in done.stdout
    for vm in ESTATE:
        assert vm.name in done.stdout


def test_discover_wrong_password_is_one_clear_line(lab: Lab, tmp_path: Any) -> None:
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password\n")
    done = discover(lab, FERRY_VCENTER_PASSWORD_FILE=str(wrong))
    assert done.returncode == 1
    assert done.stderr.startswith("error: vCenter") and "rejected the login" in done.stderr
    assert "Traceback" not in done.stderr and "not-the-password" not in done.stderr


def test_devices_only_for_chosen_vms_in_a_second_call(si: Any, calls: list[str]) -> None:
    objects = fetch_inventory(
        si, devices_for=lambda objs: [o.ref for o in objs if o.props.get("name") == "web01"]
    )
    assert calls.count("RetrievePropertiesEx") == 2
    vms = {vm.name: vm for vm in parse_inventory(objects).vms}
    assert [d.key for d in vms["web01"].disks] == [2000, 2001] and len(vms["web01"].nics) == 2
    assert all(not vm.disks and not vm.nics for name, vm in vms.items() if name != "web01")


def test_esxi_direct_mode(lab: Lab, tmp_path: Path) -> None:
    """source.vcenter.esxi: a standalone ESXi host (ferry-vcsim -esx: ha-datacenter, one host,
    no vCenter) is discovered and planned through the same SOAP API."""
    files = vcenter.VCenterFiles(tmp_path / "esx")
    record = vcenter.start(vcsim_binary(), files, tmp_path / "esx-disks", extra=("-esx",))
    try:
        target = vcenter.target(files)
        text = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
        text = re.sub(r"^  (lab_dir|reader): .*\n", "", text, flags=re.M)
        text = text.replace("${FERRY_VCENTER_HOST}", target.host)
        text = text.replace("${FERRY_VCENTER_PORT}", str(target.port))
        text = text.replace("${FERRY_VCENTER_PASSWORD_FILE}", str(files.password))
        text = text.replace("${FERRY_VCENTER_CAFILE}", str(files.cert))
        esx = "    datacenter: ha-datacenter\n    esxi: true\n"
        text = text.replace("    datacenter: DC0\n", esx)
        spec = tmp_path / "esx.yaml"
        spec.write_text(text + "\nvms:\n  - pattern: {name: '*'}\n")
        found = ferry(lab, "discover", str(spec), "--json")
        assert found.returncode == 0, found.stderr
        vms = json.loads(found.stdout)["vms"]
        assert vms and all(v["host"] for v in vms) and all(v["disks"] for v in vms)
        plan = ferry(lab, "plan", str(spec), "--json", "--state", str(tmp_path / "s.db"))
        assert plan.returncode in (0, 1), plan.stderr  # unmapped portgroups may block VMs
        planned = {v["name"] for v in json.loads(plan.stdout)["vms"]}
        assert planned == {v["name"] for v in vms}
    finally:
        stop(record)
