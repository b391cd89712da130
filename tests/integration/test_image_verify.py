"""`--verify` compares output: image's local files as it does volumes (break-it 12c item 9: it
planned "No changes" and compared nothing while a file differed). build-old (powered off) is
replicated into a file; `apply --verify` compares it whole with a new snapshot; a silent change
of 4 KiB inside the file (its mtime put back: inode, size and mtime as the sync left them, so
only the bytes tell) fails the next `apply --verify` at that offset and marks the file tainted;
the next plan copies it again in full and the file holds the source's bytes again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.lab.lab import Lab
from tests.integration.cli import ferry
from tests.integration.test_cutover import apply
from tests.integration.test_image_mode import image_spec, records

pytestmark = pytest.mark.lab
DISK = "vm.build-old.disk[2000]"
AT = 1 << 20  # any offset: the file is compared whole


def test_verify_compares_files_and_a_changed_file_is_copied_again(lab: Lab, tmp_path: Path) -> None:
    work, state = tmp_path / "work", tmp_path / "state.db"
    work.mkdir()
    spec = image_spec(tmp_path, work)
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(records(state)[DISK].attributes["path"])

    checked = apply(lab, spec, "vm.build-old", state, "--verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{DISK} verify" in checked.stdout, checked.stdout  # the plan shows the step
    assert f"{path} equals disk 2000" in checked.stdout, checked.stdout
    assert records(state)[DISK].attributes["last_verify"]["sha256"]

    seen = path.stat()
    with path.open("r+b") as f:  # bit rot, or a tool that keeps mtimes: only the bytes differ
        f.seek(AT)
        old = f.read(4096)
        f.seek(AT)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    caught = apply(lab, spec, "vm.build-old", state, "--verify")
    assert caught.returncode == 1, caught.stdout + caught.stderr
    said = caught.stdout + caught.stderr
    assert f"differs from the source at offset {AT}" in said, said
    assert "marked tainted" in said, said
    assert records(state)[DISK].status.value == "tainted"

    plan = ferry(lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"{DISK} replace" in plan.stdout, plan.stdout
    assert "verification failed" in plan.stdout, plan.stdout  # the tainted record's reason
    again = apply(lab, spec, "vm.build-old", state, "--verify")
    assert again.returncode == 0, again.stdout + again.stderr
    record = records(state)[DISK]
    assert record.status.value == "ready"
    assert record.attributes["last_sync"]["kind"] == "full"
    assert record.attributes["last_sync"]["verified"] == "whole disk"
