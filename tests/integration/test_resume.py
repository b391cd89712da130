"""A copy that is interrupted and resumed ends equal to the snapshot it finishes from
(../shared/DESIGN.md §5.7, issue 12 item 1): the resumed copy, reading a newer snapshot, also
copies what the guest changed below its checkpoint since the copy began (CBT, from the changeId
the copy recorded when it began); a copy that fails verification is tainted and copied again in
full, never resumed the same way again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.model.state import Status
from engine.statestore.sqlite import SqliteStateStore
from engine.units import human
from tests.integration.cli import ROOT, ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_cbt import set_cbt
from tests.integration.test_cutover import vm_ref
from tests.integration.test_fault_drills import spec_for

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2
DISK = "vm.web01.disk[2000]"


def copied(state: Path) -> int:
    return int(records(state).get(DISK, {}).get("copied_bytes", 0)) if state.exists() else 0


def stop_mid_copy(lab: Lab, spec: Path, state: Path, past: int, kind: str = "full") -> int:
    """`ferry apply` on a slow disk, stopped with Ctrl-C (SIGINT to its process group) once its
    recorded checkpoint passes `past` bytes in a `kind` copy; returns the checkpoint."""
    lab.read_delay("web01", 2000, 1500)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "apply", str(spec), "--auto-approve",
             "--state", str(state)],
            cwd=ROOT,
            env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while copied(state) <= past or records(state)[DISK].get("copy") != kind:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        lab.read_errors("web01", 2000, None)
    assert proc.returncode == 130, out + err
    mark = copied(state)
    assert records(state)[DISK]["copy"] == kind
    stopped_copy_counts(state.parent / "logs", out, mark)
    return mark


def stopped_copy_counts(logs: Path, out: str, mark: int) -> None:
    """The stopped apply reports what its copy moved until the stop (break-it pass 12b, item 8:
    before, apply_end's bytes_read, the summary line and the report said 0 although the
    checkpoint had passed 280 MiB): copy_stopped names the recorded checkpoint, apply_end
    counts its bytes with the other copies', the summary line says them."""
    events = [json.loads(line) for line in sorted(logs.glob("apply-*.jsonl"))[-1].open()]
    stop = next(e for e in events if e["event"] == "copy_stopped")
    end = next(e for e in events if e["event"] == "apply_end")
    assert stop["address"] == DISK and stop["checkpoint"] == mark, stop
    copies = [e["read"] for e in events if e["event"] in ("synced", "copy_stopped")]
    assert stop["read"] > 0 and end["bytes_read"] == sum(copies), (stop, end)
    said = " ".join(out.split())
    assert "Apply INCOMPLETE" in said, out
    assert f"{human(end['bytes_read'])} of data copied" in said, out


def volume_equals_disk(lab: Lab, state: Path) -> bool:
    vm = find_vm("web01")
    assert vm is not None
    capacity = next(d.capacity for d in vm.disks if d.key == 2000)
    volume = volume_file(lab, records(state)[DISK]["volume_id"])
    return file_digest(volume, capacity) == file_digest(lab_disks.live_path(lab.disks, vm, 2000))


def test_a_copy_resumed_from_a_newer_snapshot_copies_what_changed_below_its_checkpoint(
    lab: Lab, tmp_path: Path
) -> None:
    """web01, verify off; ~1 GiB of data on disk 2000; the copy is stopped past 64 MiB; the
    guest writes 1 MiB at offset 0 (below the checkpoint); the next plan says the resume also
    copies what changed since the copy began, the apply does, and the volume equals the disk.
    Before: the resume copied [checkpoint, end) only and the volume kept the old 1 MiB."""
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    for i in range(8):
        lab.write("web01", 2000, i * 128 * MiB, 128 * MiB, seed=1200 + i)
    mark = stop_mid_copy(lab, spec, state, 64 * MiB)
    began = records(state)[DISK]["copy_change_id"]
    assert began, "the copy records the changeId of the snapshot it began from"
    lab.write("web01", 2000, 0, MiB, seed=99)

    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    said = " ".join(plan.stdout.replace(",", "").split())
    assert f"resume the interrupted copy ({human(mark)} already written)" in said, plan.stdout
    assert f"and copy what changed since changeId {began}" in said, plan.stdout

    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert volume_equals_disk(lab, state), "the resumed copy lost the guest's write below it"
    record = records(state)[DISK]
    assert record["last_sync"]["kind"] == "full" and record["change_id"] != began
    log = (tmp_path / "logs" / "web01.log").read_text()
    assert f"resumed at {human(mark)} from a newer snapshot" in log
    print(f"\nstopped at {human(mark)}; the resume read {human(record['last_sync']['bytes'])}")


def test_a_copy_that_fails_verification_is_tainted_and_copied_again_in_full(
    lab: Lab, tmp_path: Path
) -> None:
    """build-old (verify on, as the demo spec says) onto a device that loses its writes: the
    copy fails verification and is recorded tainted with the reason; the next plan replaces it
    (a full copy, not the same resume again) and says why; once the device is healed the apply
    copies it in full over the volume's old bytes (zeros written) and it equals the disk.
    Before: the record stayed in progress at the end of the disk, every later apply "resumed"
    there, copied nothing and failed verification again."""
    spec, state = spec_for(tmp_path, "build-old"), tmp_path / "ferry.db"
    address = "vm.build-old.disk[2000]"
    lab.device_lossy("build-old", 2000)
    try:
        failed = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    finally:
        lab.read_errors("build-old", 2000, None)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    said = " ".join(failed.stdout.split())
    assert f"failed: {address}: verify: disk 2000 (volume " in said
    assert "differs from the source at offset " in said and "marked tainted" in said
    store = SqliteStateStore(state)
    try:
        record = store.read().resources[address]
    finally:
        store.close()
    assert record.status is Status.TAINTED
    assert str(record.attributes["tainted"]).startswith("verification failed: verify: disk 2000")

    plan = ferry(lab, "plan", str(spec), "--json", "--state", str(state))
    (change,) = [c for c in json.loads(plan.stdout)["changes"] if c["address"] == address]
    assert change["action"] == "replace", change
    assert change["reason"].startswith("verification failed: verify: disk 2000"), change
    assert change["reason"].endswith("copy again in full"), change

    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    vm = find_vm("build-old")
    assert vm is not None
    live = lab_disks.live_path(lab.disks, vm, 2000)
    synced = records(state)[address]
    assert file_digest(volume_file(lab, synced["volume_id"]), vm.disks[0].capacity) == (
        file_digest(live)
    )
    assert synced["last_sync"]["kind"] == "full" and synced["last_sync"]["sha256"]
    data = sum(n for _, n in lab_disks.data_extents(live))
    assert synced["last_sync"]["bytes"] > data, "holes not zeroed: the volume was assumed zero"


def test_a_resume_across_a_cbt_reset_starts_over_and_an_interrupted_delta_is_redone(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """The same fault's kind. (1) A copy stopped mid-way, then CBT reset (off, on) and a guest
    write below the checkpoint: the changeId the copy began from is of another epoch, so what
    changed is unknown: the plan says it starts over from 0, and the volume ends equal to the
    disk. (2) A delta stopped mid-way, then guest writes below and beyond its checkpoint: it
    resumes at its checkpoint after rewriting what changed since the snapshot it read (the
    write below), the rest of the delta covers the write beyond, and it ends equal to the
    disk."""
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    for i in range(4):
        lab.write("web01", 2000, 1024 * MiB + i * 128 * MiB, 128 * MiB, seed=1300 + i)
    stop_mid_copy(lab, spec, state, 0)
    ref = vm_ref(si, "web01")
    set_cbt(si, ref, False)
    set_cbt(si, ref, True)
    lab.write("web01", 2000, 0, MiB, seed=98)
    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    said = " ".join(plan.stdout.split())
    assert "the interrupted copy starts over from 0: CBT was reset" in said, plan.stdout
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert volume_equals_disk(lab, state), "the copy across a CBT reset is not exact"

    for i in range(2):
        lab.write("web01", 2000, 200 * MiB + i * 512 * MiB, 128 * MiB, seed=1400 + i)
    stop_mid_copy(lab, spec, state, 0, kind="delta")
    lab.write("web01", 2000, 200 * MiB, MiB, seed=97)
    lab.write("web01", 2000, 1900 * MiB, MiB, seed=96)
    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    said = " ".join(plan.stdout.split())
    assert "resume the interrupted delta since changeId" in said, plan.stdout
    assert "after what changed since the snapshot it read" in said, plan.stdout
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert volume_equals_disk(lab, state), "the redone delta is not exact"
    assert records(state)[DISK]["last_sync"]["kind"] == "delta"
