"""Changed block tracking on the lab: `enable_cbt` turns it on for a VM that had it off (so the
next sync is a delta), a running VM whose changeIds did not move since the last sync still plans
a delta (its changeId moves only at stun points), and a CBT reset between syncs plans a full copy
with the reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ferry
from tests.integration.test_cutover import apply, records, spec_with, vm_ref, volume_file

pytestmark = pytest.mark.lab
MiB = 1024**2


def set_cbt(si: Any, ref: Any, enabled: bool) -> None:
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
    wait_task(si, ref.ReconfigVM_Task(spec), "toggle CBT")


@pytest.fixture
def win_app(si: Any, new_cloud_objects: None) -> Iterator[Any]:
    """win-app01 (CBT off in the estate) is put back as it was after; its volumes go."""
    ref = vm_ref(si, "win-app01")
    yield ref
    set_cbt(si, ref, False)


def plan(lab: Lab, spec: Path, state: Path) -> Any:
    return ferry(
        lab, "plan", str(spec), "--target", "vm.win-app01", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip


def test_enable_cbt_then_deltas_then_a_reset_is_a_full_copy_with_its_reason(
    lab: Lab, si: Any, tmp_path: Path, win_app: Any
) -> None:
    vm = find_vm("win-app01")
    assert vm is not None
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "win-app01", "enable_cbt: true")
    first = plan(lab, spec, state)
    assert first.returncode == 2 and "vm.win-app01.cbt" in first.stdout, first.stdout
    done = apply(lab, spec, "vm.win-app01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fetch_property(si, win_app, "config.changeTrackingEnabled") is True
    synced = records(state)["vm.win-app01.disk[2000]"]
    assert synced["change_id"] and synced["last_sync"]["kind"] == "full"

    # Nothing written since, but win-app01 runs: its changeId moves only at stun points, so
    # the plan is a delta of unknown size, never "in sync".
    unchanged = plan(lab, spec, state)
    assert unchanged.returncode == 2, unchanged.stdout
    assert (
        "unknown until measured"
        in ferry(
            lab, "plan", str(spec), "--target", "vm.win-app01", "--state", str(state), "--json"
        ).stdout
    )

    lab.write("win-app01", 2000, 40 * MiB, 3 * MiB)
    delta = plan(lab, spec, state)
    assert delta.returncode == 2 and "delta sync since changeId" in delta.stdout
    done = apply(lab, spec, "vm.win-app01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    sync = records(state)["vm.win-app01.disk[2000]"]["last_sync"]
    assert sync["kind"] == "delta" and sync["bytes"] == 3 * MiB

    set_cbt(si, win_app, False)  # a reset: off, then on again
    set_cbt(si, win_app, True)
    lab.write("win-app01", 2000, 90 * MiB, MiB)
    reset = plan(lab, spec, state)
    assert reset.returncode == 2 and "CBT was reset" in reset.stdout, reset.stdout
    done = apply(lab, spec, "vm.win-app01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    after = records(state)["vm.win-app01.disk[2000]"]
    assert after["last_sync"]["kind"] == "full"
    assert after["change_id"].rsplit("/", 1)[0] != synced["change_id"].rsplit("/", 1)[0]
    live = lab_disks.live_path(lab.disks, vm, 2000)
    assert file_digest(volume_file(lab, after["volume_id"]), vm.disks[0].capacity) == (
        file_digest(live)
    )
