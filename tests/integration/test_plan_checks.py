"""Plan-time destination checks on the lab: what would fail a cutover after the source's
power-off is found by `ferry plan` and blocks the VM before anything is touched (issue 12,
item 3: a port someone else made holds the source MAC)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.power import power_on, power_state
from engine.providers.vsphere.read import retrieve
from tests.integration.cli import ROOT, ferry

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MAC = "00:50:56:8f:01:00"  # web01's first NIC, on portgroup VM Network → lab-vm-network


@pytest.fixture
def web01(si: Any) -> Iterator[Any]:
    """web01's moref, powered on before and after the test (whatever the apply did)."""
    ref = next(
        o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == "web01"
    )
    power_on(si, ref)
    yield ref
    power_on(si, ref)


def cutover_spec(tmp_path: Path, settings: str = "") -> Path:
    """plans/demo.yaml cut down to web01 in cutover mode (no guest conversion)."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    entry = "  - name: web01\n    mode: cutover\n    convert: false\n" + settings
    spec = tmp_path / "web01-cutover.yaml"
    spec.write_text(re.sub(r"(?ms)^vms:\n.*", "vms:\n" + entry, text))
    return spec


def test_a_port_holding_the_source_mac_blocks_the_cutover_and_apply_touches_nothing(
    lab: Lab, si: Any, web01: Any, tmp_path: Path
) -> None:
    conn = lab.openstack("ferry-lab")
    network = conn.network.find_network("lab-vm-network")
    squatter = conn.network.create_port(network_id=network.id, mac_address=MAC, name="squatter")
    vm = find_vm("web01")
    assert vm is not None
    spec, state = cutover_spec(tmp_path), tmp_path / "ferry.db"

    plan = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", str(state))
    assert plan.returncode == 1, plan.stdout + plan.stderr
    concern = (
        f"error: NIC 0: MAC {MAC} is already used on network 'lab-vm-network' by port "
        f"{squatter.id} (squatter), which ferry did not create for this VM: delete that port"
    )
    assert concern in plan.stdout, plan.stdout
    assert "vm.web01.server" not in plan.stdout  # blocked: no change is planned for it

    ports_before = {p.id for p in conn.network.ports()}
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert "Not applied, blocked by errors: vm.web01" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1  # a CI gate cannot go green on a blocked VM
    assert power_state(si, web01) == "poweredOn"
    assert {p.id for p in conn.network.ports()} == ports_before
    ours = [
        v.id
        for v in conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get("ferry_vm") == vm.instance_uuid
    ]
    assert ours == []


def test_plan_blocks_a_cutover_on_roles_key_pairs_groups_and_hosts_the_cloud_lacks(
    lab: Lab, tmp_path: Path
) -> None:
    """Read from the real keystone, nova and neutron: the member user may not create a flavor
    (the admin may), a key pair and a security group that do not exist, a conversion host that
    is no server: one line each, and nothing to apply."""
    settings = (
        "    flavor: create\n    key_pair: ferry-no-key\n"
        "    security_groups: [ferry-lab, ferry-no-group]\n"
    )
    member = cutover_spec(tmp_path, settings)
    member.write_text(member.read_text().replace("ferry-conversion-01", "ferry-conversion-09"))
    admin = tmp_path / "admin.yaml"
    admin.write_text(
        member.read_text().replace(
            "cloud: ferry-lab\n", "cloud: ferry-lab-admin\n  project: ferry-lab\n"
        )
    )
    lines = (
        "error: flavor: create needs the admin role to create flavor 'ferry-web01', and the "
        "cloud's user has the roles member, reader",
        "error: key pair 'ferry-no-key' does not exist for the cloud's user",
        "error: security group 'ferry-no-group' does not exist in the destination project",
        "error: conversion host 'ferry-conversion-09' is not a server in the destination project",
    )
    state = str(tmp_path / "ferry.db")
    shown = {}
    for name, spec in (("member", member), ("admin", admin)):
        plan = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", state)
        assert plan.returncode == 1, plan.stdout + plan.stderr
        assert "vm.web01.server" not in plan.stdout
        shown[name] = plan.stdout
    assert all(line in shown["member"] for line in lines), shown["member"]
    assert [line in shown["admin"] for line in lines] == [False, True, True, True], shown["admin"]
    assert f"{admin}:" in shown["admin"]  # the host's error points at its line of the spec
