"""Identity on the lab (issue 12, items 4 and 6): a datacenter is found by name wherever it sits
in the folder tree; state follows a VM's instance UUID, so a rename moves its records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.lab.estate import ESTATE
from engine.lab.lab import Lab
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ROOT, ferry

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
        assert done.returncode == 0, done.stdout + done.stderr
        plan = json.loads(done.stdout)
        assert plan["diagnostics"] == []
        assert sorted(v["name"] for v in plan["vms"]) == sorted(vm.name for vm in ESTATE)
    spec.write_text(demo.replace("datacenter: DC0", "datacenter: DC0/vm"))
    wrong = ferry(lab, "plan", str(spec), "--state", str(tmp_path / "s.db"))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "datacenter 'DC0/vm' is not in the inventory (datacenters: /Region-A/DC0)" in (
        wrong.stdout + wrong.stderr
    ).replace("\n", "")
