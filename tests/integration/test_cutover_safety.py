"""Cutover safety on the lab (issue 12, items 2, 3, 8, 9): a destination conflict fails before
the source is powered off; a conversion whose volumes were written again is done again before
the server boots; a protection snapshot older than the last sync is never reverted to, and a VM
moved back to replicate loses its ports and protection; a stop after the power-off powers the
source back on, or (leave_off) says so in the stop message, the next plan and the report; a
graceful shutdown that ends after the spec's timeout is waited for and undone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.power import guest_state, power_on, power_state
from tests.integration.cli import ROOT, ferry, until_line
from tests.integration.converge import assert_converged, records
from tests.integration.test_cutover import apply, report_seconds, spec_with, vm_ref
from tests.integration.test_power_tools import shutdown_seconds

pytestmark = pytest.mark.lab
MiB = 1024**2
WEB01 = "vm.web01"


@pytest.fixture(autouse=True)
def clean_destination(si: Any, new_cloud_objects: None) -> Iterator[None]:
    """What a test created in the cloud goes after it; web01 is powered on again."""
    yield
    if power_state(si, vm_ref(si, "web01")) != "poweredOn":
        power_on(si, vm_ref(si, "web01"))


def replicated(lab: Lab, tmp_path: Path) -> Path:
    state = tmp_path / "ferry.db"
    done = apply(lab, spec_with(tmp_path, "web01", "mode: replicate"), WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    return state


def test_a_mac_in_use_fails_before_the_power_off_then_the_cutover_converts_again(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Items 3 and 2: a port squatting web01's MAC on lab-vm-network fails the cutover while
    web01 still runs (no power-off, no protection); after the conflict goes, the next apply
    protects and 'converts' (convert: false) in that apply and boots from those volumes."""
    vm = find_vm("web01")
    assert vm is not None
    state = replicated(lab, tmp_path)
    conn = lab.openstack("ferry-lab")
    network = conn.network.find_network("lab-vm-network")
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false")
    saved = tmp_path / "cutover.plan"  # planned (and reviewed) before the squatter appears: the
    planned = ferry(  # plan's MAC check (test_plan_checks) cannot see it, the executor must
        lab, "plan", str(cutover), "--target", WEB01, "--state", str(state), "--out", str(saved)
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    squatter = conn.network.create_port(
        network_id=network.id, mac_address=vm.nics[0].mac, name="squatter"
    )
    failed = ferry(lab, "apply", str(saved), "--state", str(state))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "already used" in failed.stdout and "skipped: vm.web01.snapshot" in failed.stdout
    assert power_state(si, vm_ref(si, "web01")) == "poweredOn"  # production never went down
    assert "source powered off" not in failed.stdout
    assert list(conn.block_storage.snapshots()) == []
    assert "vm.web01.conversion" not in records(state)

    conn.network.delete_port(squatter.id)
    done = apply(lab, cutover, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "volume(s) protected" in done.stdout and "no conversion (convert: false)" in done.stdout
    found = records(state)
    epochs = found["vm.web01.conversion"]["epochs"]
    assert epochs == {str(d.key): found[f"vm.web01.disk[{d.key}]"]["epoch"] for d in vm.disks}
    assert_converged(lab, state, vm, server=True)


def test_volumes_written_after_their_conversion_are_converted_again_before_the_boot(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Item 2: a cutover that ended after protection (here: applied up to its conversion only)
    leaves the conversion recorded with its protection snapshots. The next plan converts again
    (the final delta writes the volumes), and that apply protects anew before the boot."""
    vm = find_vm("web01")
    assert vm is not None
    state = replicated(lab, tmp_path)
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false")
    first = apply(lab, cutover, "vm.web01.conversion", state)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "volume(s) protected" in first.stdout and "source powered back on" in first.stdout
    assert power_state(si, vm_ref(si, "web01")) == "poweredOn"  # no server: back on
    converted_at = records(state)["vm.web01.conversion"]["at"]

    plan = ferry(lab, "plan", str(cutover), "--target", WEB01, "--state", str(state))
    assert "protect and convert again" in plan.stdout, plan.stdout
    done = apply(lab, cutover, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "volume(s) protected" in done.stdout  # the conversion ran in this apply
    assert "back to its protection snapshot" not in done.stdout  # convert: false changed nothing
    found = records(state)
    assert found["vm.web01.conversion"]["at"] > converted_at
    assert_converged(lab, state, vm, server=True)


def test_a_vm_back_to_replicate_loses_its_protection_and_keeps_every_later_sync(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Item 8: after a cutover that ended after protection, web01 goes back to replicate: the
    plan deletes its ports and conversion record (protection snapshots); the 1 MiB written then
    is synced, and the next cutover keeps it (never reverted to the older protection)."""
    vm = find_vm("web01")
    assert vm is not None
    state = replicated(lab, tmp_path)
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false")
    first = apply(lab, cutover, "vm.web01.conversion", state)
    assert first.returncode == 0, first.stdout + first.stderr
    conn = lab.openstack("ferry-lab")
    assert len(list(conn.block_storage.snapshots())) == len(vm.disks)

    lab.write("web01", 2000, 950 * MiB, MiB, seed=8)
    back = spec_with(tmp_path, "web01", "mode: replicate")
    plan = ferry(lab, "plan", str(back), "--target", WEB01, "--state", str(state))
    assert "back to replicate: the protection snapshots" in plan.stdout, plan.stdout
    assert "back to replicate: the cutover's port goes" in plan.stdout
    done = apply(lab, back, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(state)
    assert "vm.web01.conversion" not in found
    assert not [a for a in found if a.startswith("vm.web01.port[")]
    assert list(conn.block_storage.snapshots()) == []
    assert not [p for p in conn.network.ports() if p.mac_address == vm.nics[0].mac]
    assert found["vm.web01.disk[2000]"]["last_sync"]["bytes"] >= MiB

    done = apply(lab, cutover, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_converged(lab, state, vm, server=True)  # the 1 MiB is on the volume


def start(lab: Lab, spec: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "apply", str(spec), "--target", WEB01,
         "--auto-approve", "--state", str(state)],
        env={**os.environ, **lab.env(), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job
    )  # fmt: skip


def interrupt_after_power_off(
    lab: Lab,
    spec: Path,
    state: Path,
    sig: signal.Signals = signal.SIGINT,
    written: tuple[int, int] = (64 * MiB, 9),  # the guest write before it: (bytes, seed)
) -> tuple[int, str]:
    """Ctrl-C (`sig` to the apply's process group; SIGKILL: no handler runs) once it says the
    source is powered off, while the final delta is still being copied (reads slowed down)."""
    lab.write("web01", 2000, 300 * MiB, written[0], seed=written[1])
    lab.read_delay("web01", 2000, 1000)
    try:
        proc = start(lab, spec, state)
        seen = until_line(proc, "source powered off", lambda: os.killpg(proc.pid, sig))
        rest, _ = proc.communicate(timeout=120)
    finally:
        lab.read_errors("web01", 2000, None)
    return proc.returncode, seen + rest


def test_ctrl_c_after_the_power_off_powers_the_source_back_on(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Item 9, default on_failure: the stopped cutover powers web01 back on."""
    state = replicated(lab, tmp_path)
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false")
    code, out = interrupt_after_power_off(lab, cutover, state)
    assert code == 130, out
    assert "source powered back on" in out, out
    assert power_state(si, vm_ref(si, "web01")) == "poweredOn"
    assert "powered_off_at" not in records(state).get("vm.web01.conversion", {})


def test_ctrl_c_after_the_power_off_with_leave_off_says_so_everywhere(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Item 9, on_failure: leave_off: the stop message, the next plan and the report say ferry
    powered web01 off and when; the next apply's downtime runs from that first power-off."""
    vm = find_vm("web01")
    assert vm is not None
    state = replicated(lab, tmp_path)
    settings = (
        "mode: cutover\nconvert: false\npower_off: {on_failure: leave_off, force_after: true}"
    )
    cutover = spec_with(tmp_path, "web01", settings)
    code, out = interrupt_after_power_off(lab, cutover, state)
    assert code == 130, out
    assert power_state(si, vm_ref(si, "web01")) == "poweredOff"
    said = "vm.web01: source powered off by ferry at "
    assert said in out and out.split(said, 1)[1].split("\n", 1)[0].endswith("no server yet"), out
    first_off = float(records(state)["vm.web01.conversion"]["powered_off_at"])

    plan = ferry(lab, "plan", str(cutover), "--target", WEB01, "--state", str(state))
    assert "source powered off by ferry at" in plan.stdout, plan.stdout
    md = tmp_path / "report.md"
    shown = ferry(lab, "report", "--md", str(md), "--state", str(state))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "source powered off by ferry at" in md.read_text()

    time.sleep(2)  # the next apply's own power-off would be later than the first
    done = apply(lab, cutover, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    server = records(state)["vm.web01.server"]
    assert server["source_off_at"] == first_off
    shown = ferry(lab, "report", "--md", str(md), "--state", str(state))
    row = next(line for line in md.read_text().splitlines() if line.startswith("| web01 |"))
    downtime = report_seconds(row, "downtime")
    assert downtime >= int(server["at"] - first_off) - 1, row
    assert_converged(lab, state, vm, server=True)


def test_a_graceful_shutdown_ending_after_the_timeout_is_waited_for_and_undone(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Break-it 12e item 6: web01's guest takes 3 s to shut down, the spec waits 2 s and does
    not allow a hard power-off. The cutover fails on the timeout while the guest is still going
    off; the settle waits for it (guest.guestState shuttingDown) and powers it back on — it
    neither forgets ferry turned it off nor powers on a guest that is going off.

    Then break-it 12f F3 on the same replica: the cutover (timeout 60) is killed (-9) while
    the guest goes off (16 s), and applied again at once: its plan says the source is
    shutting down at ferry's request (not "powered back on by an apply that could not record
    it"), the apply waits for the guest without asking again, and the downtime runs from the
    killed apply's power-off."""
    state = replicated(lab, tmp_path)
    ref = vm_ref(si, "web01")
    settings = "mode: cutover\nconvert: false\npower_off: {policy: graceful, timeout: 2}"
    cutover = spec_with(tmp_path, "web01", settings)
    shutdown_seconds(si, ref, 3)
    try:
        done = apply(lab, cutover, WEB01, state)
    finally:
        shutdown_seconds(si, ref, 0)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "did not shut down within 2 s" in out, out
    assert "source powered back on (its graceful shutdown ended after ferry's timeout)" in out, out
    time.sleep(1)  # nothing powers it off again
    assert power_state(si, ref) == "poweredOn"
    assert "powered_off_at" not in records(state).get("vm.web01.conversion", {})
    _rerun_while_the_guest_goes_off(lab, si, tmp_path, state)


def _rerun_while_the_guest_goes_off(lab: Lab, si: Any, tmp_path: Path, state: Path) -> None:
    """Break-it 12f F3 (see the test above): kill -9 during the graceful wait, then the same
    cutover applied (its plan shown first) while the guest is still shuttingDown."""
    ref = vm_ref(si, "web01")
    settings = "mode: cutover\nconvert: false\npower_off: {policy: graceful, timeout: 60}"
    cutover = spec_with(tmp_path, "web01", settings)
    shutdown_seconds(si, ref, 16)  # a loaded CI machine takes ~10 s to reach the power-off
    try:
        killed = start(lab, cutover, state)
        deadline = time.monotonic() + 120
        while guest_state(si, ref) != "shuttingDown":  # ferry asked: the wait began
            assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()
            time.sleep(0.1)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate(timeout=60)
        first_off = float(records(state)["vm.web01.conversion"]["powered_off_at"])
        done = apply(lab, cutover, WEB01, state)
    finally:
        shutdown_seconds(si, ref, 0)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    plan, walk = out.split("\nPlan: ", 1)
    assert "source powered off (already)" not in walk, f"off before the re-run asked: {out}"
    assert "source shutting down at ferry's request since" in plan, out
    assert "powered back on by an apply" not in plan, out
    assert "the guest finished the shutdown ferry asked for at" in walk, out  # not asked again
    server = records(state)["vm.web01.server"]
    assert server["source_off_at"] == first_off  # the downtime runs from the first power-off
