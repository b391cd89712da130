"""`--verify` checks the bytes of replicas nothing else is planned for (issue 12, last item): a
powered-off VM in sync gets a verify step (its volume compared whole with a new snapshot, nothing
copied); a volume changed behind ferry's back fails it with one line naming the volume and the
first differing offset, is marked tainted, and the next plan replaces it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.model.state import Status
from engine.statestore.sqlite import SqliteStateStore
from tests.integration.cli import ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_fault_drills import spec_for

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2
DISK = "vm.build-old.disk[2000]"
BAD_AT = 5 * MiB + 4096  # where 1 MiB of the volume is changed behind ferry's back


def actions(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["address"]: (c["action"], c["reason"]) for c in plan["changes"]}


def status(state: Path) -> Status:
    store = SqliteStateStore(state)
    try:
        return store.read().resources[DISK].status
    finally:
        store.close()


def test_verify_finds_a_changed_idle_replica(lab: Lab, tmp_path: Path) -> None:
    vm = find_vm("build-old")
    assert vm is not None and not vm.powered_on
    capacity = vm.disks[0].capacity
    spec = spec_for(tmp_path, "build-old", "    verify: false\n")  # the first copy: unverified
    state = tmp_path / "ferry.db"
    first = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr

    saved = tmp_path / "verify.plan.json"
    shown = ferry(lab, "plan", str(spec), "--verify", "--out", str(saved), "--state", str(state))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"= {DISK} verify  compare the volume with a new snapshot (--verify)" in shown.stdout
    assert "1 to verify" in shown.stdout
    plan = json.loads(saved.read_text())  # the saved plan is the JSON plan, sealed
    assert actions(plan)[DISK][0] == "verify", actions(plan)
    assert actions(plan)["vm.build-old.snapshot"][0] == "create"
    assert plan["summary"]["verify"] == 1 and plan["summary"]["bytes_to_copy"] == 0

    volume_id = records(state)[DISK]["volume_id"]
    with volume_file(lab, volume_id).open("r+b") as f:  # the volume's bytes, outside ferry
        f.seek(BAD_AT)
        old = f.read(MiB)
        f.seek(BAD_AT)
        f.write(bytes(b ^ 0xFF for b in old))
    failed = ferry(lab, "apply", str(spec), "--verify", "--auto-approve", "--state", str(state))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    line = next(x for x in failed.stdout.splitlines() if x.startswith(f"failed: {DISK}"))
    assert f"volume {volume_id}" in line and f"differs from the source at offset {BAD_AT}" in line
    assert f"= {DISK} verify" in failed.stdout and "Apply INCOMPLETE" in failed.stdout
    assert status(state) is Status.TAINTED
    assert "0 B of data copied" in failed.stdout  # compared, nothing copied
    # nor does the volume's metadata still name a changeId: a state rebuilt from the destination
    # must not adopt it as in sync (break-it pass, fault D)
    meta = lab.openstack("ferry-lab").block_storage.get_volume(volume_id).metadata
    assert not meta.get("ferry_change_id"), meta

    fixed = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"-/+ {DISK} replace" in fixed.stdout  # the plan it applied: a full copy, and why
    assert f"verification failed: verify: disk 2000 (volume {volume_id})" in fixed.stdout
    live = lab_disks.live_path(lab.disks, vm, 2000)
    assert file_digest(volume_file(lab, volume_id), capacity) == file_digest(live, capacity)

    # A verify step whose disk was written after the plan: the replica is behind the snapshot it
    # is compared with, so its delta is copied first (then the whole disk compared).
    again = ferry(lab, "plan", str(spec), "--verify", "--out", str(saved), "--state", str(state))
    assert again.returncode == 0 and f"= {DISK} verify" in again.stdout, again.stdout
    lab.write("build-old", 2000, 100 * MiB, MiB, seed=5)
    synced = ferry(lab, "apply", str(saved), "--state", str(state))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "since the plan: its delta is copied first" in " ".join(synced.stdout.split())
    assert "1.0 MiB of data copied" in synced.stdout
    assert records(state)[DISK]["last_sync"]["verified"] == "whole disk"
    assert file_digest(volume_file(lab, volume_id), capacity) == file_digest(live, capacity)
