"""The ferry_migrate.ferry collection's example playbook against the lab, as an AAP job runs it:
ansible-playbook (ansible-core from PyPI) on localhost with the collection from the repo. One
powered-off VM (build-old, replicated, not verified): the job in check mode plans (changed) and
creates nothing; the job applies (changed); the same job again changes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.lab.lab import Lab
from engine.statestore.sqlite import SqliteStateStore
from tests.integration.cli import ROOT

pytestmark = pytest.mark.lab

PLAYBOOK = ROOT / "ansible" / "playbooks" / "migrate.yml"
RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


def job(lab: Lab, tmp_path: Path, *more: str) -> tuple[dict[str, int], str]:
    """ansible-playbook migrate.yml on localhost: (the recap's counts, its output)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "conversion_hosts": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        )
    )
    env = {
        **os.environ,
        **lab.env(),
        "PYTHONPATH": str(ROOT),  # the modules import this tree's ferry
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "ansible"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(PLAYBOOK),
            "-e",
            f"@{tmp_path / 'vars.yml'}",
            *more,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    recap = RECAP.search(done.stdout)
    assert recap is not None, said
    ok, changed, unreachable, failed = map(int, recap.groups())
    return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}, said


def records(state: Path) -> dict[str, Any]:
    if not state.exists():
        return {}
    store = SqliteStateStore(state)
    try:
        return dict(store.read().resources)
    finally:
        store.close()


@pytest.mark.usefixtures("new_cloud_objects")
def test_playbook_plans_applies_and_is_idempotent(lab: Lab, tmp_path: Path) -> None:
    head = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{head}\nvms:\n  - name: build-old\n    verify: false\n")
    state = tmp_path / "state" / "ferry.db"
    state.parent.mkdir()  # ferry makes the state file, not its directory (break-it 16c L4)
    (tmp_path / "vars.yml").write_text(
        yaml.safe_dump(
            {
                "ferry_spec": str(spec),
                "ferry_state": str(state),
                "ferry_waves": {"wave1": ["vm.build-old"]},  # the job's wave: the VM's address
            }
        )
    )
    conn = lab.openstack("ferry-lab")
    volumes = {v.id for v in conn.block_storage.volumes()}
    began = time.monotonic()

    checked, said = job(lab, tmp_path, "--check", "--diff", "-e", "wave=wave1")
    assert checked["changed"] == 2, said  # the plan and the apply would change something
    assert '"build-old"' in said, said  # the discovered VMs
    assert "vm.build-old.disk[2000] create" in said, said  # the plan's diff
    assert "Plan: " in said, said
    assert {v.id for v in conn.block_storage.volumes()} == volumes  # nothing created
    assert records(state) == {}
    planned = time.monotonic()

    wave = ("-e", "wave=wave1", "--skip-tags", "discover")  # listed by the check run
    applied, said = job(lab, tmp_path, *wave)
    assert applied == {"ok": 4, "changed": 2, "unreachable": 0, "failed": 0}, said
    made = {v.id for v in conn.block_storage.volumes()} - volumes
    assert len(made) == 1, said  # build-old's one disk
    assert records(state)["vm.build-old.disk[2000]"].status.value == "ready"
    assert "report.html" in said
    done = time.monotonic()

    again, said = job(lab, tmp_path, *wave)
    assert again == {"ok": 4, "changed": 0, "unreachable": 0, "failed": 0}, said
    assert "No changes: the destination matches the spec." in said
    assert {v.id for v in conn.block_storage.volumes()} - volumes == made
    print(
        f"check {planned - began:.1f} s, apply {done - planned:.1f} s, "
        f"again {time.monotonic() - done:.1f} s"
    )
