"""Adversarial regressions (issue 12, a fresh tester's pass): interruptions next to the numbered
faults. Oracle: every volume equals the source disk at the snapshot its last sync read (the lab
disk, which no write touched since)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.lab.lab import Lab
from tests.integration.cli import ferry
from tests.integration.converge import records
from tests.integration.test_fault_drills import spec_for
from tests.integration.test_resume import DISK, MiB, stop_mid_copy, volume_equals_disk

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]


def test_an_interrupted_copy_whose_volume_is_gone_starts_over_on_the_new_volume(
    lab: Lab, tmp_path: Path
) -> None:
    """web01, verify off: a full copy stopped past 16 MiB, a plan saved, then its volume
    deleted (by someone, or cinder lost it). A new plan says the volume is gone and copies in
    full; the saved plan (it still says "resume") is applied: the executor makes a new volume
    and copies it from 0. Before: both resumed at the checkpoint onto the new, empty volume:
    the data below it was never copied, "Apply complete", and later plans saw it in sync."""
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    lab.write("web01", 2000, 0, 64 * MiB, seed=1201)
    mark = stop_mid_copy(lab, spec, state, 16 * MiB)
    saved = tmp_path / "resume.plan"
    made = ferry(lab, "plan", str(spec), "--out", str(saved), "--state", str(state))
    assert made.returncode == 0, made.stdout + made.stderr
    conn = lab.openstack("ferry-lab")
    gone = str(records(state)[DISK]["volume_id"])
    conn.block_storage.wait_for_status(conn.block_storage.get_volume(gone), "available")
    conn.block_storage.delete_volume(gone)
    conn.block_storage.wait_for_delete(conn.block_storage.get_volume(gone))

    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    said = " ".join(plan.stdout.replace(",", "").split())
    assert "resume the interrupted copy" not in said, plan.stdout
    assert f"recorded volume {gone} no longer exists: full copy from 0" in said, plan.stdout

    done = ferry(lab, "apply", str(saved), "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert records(state)[DISK]["volume_id"] != gone
    assert volume_equals_disk(lab, state), f"the new volume lacks the bytes below {mark}"
    log = (tmp_path / "logs" / "web01.log").read_text()
    assert f"volume {gone} was replaced by a new volume" in log, log
