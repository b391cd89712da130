"""Adversarial regressions (issue 12, a fresh tester's pass): interruptions next to the numbered
faults. Oracle: every volume equals the source disk at the snapshot its last sync read (the lab
disk, which no write touched since)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.lab.estate import GiB, find_vm
from engine.lab.lab import Lab
from engine.model.state import INSTANCE_UUID, VCENTER_OFF_AT, ResourceRecord, Status
from engine.providers.openstack import volumes
from engine.providers.vsphere.power import (
    PowerOffPolicy,
    power_off,
    power_on,
    power_state,
    vcenter_now,
)
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.tasks import wait_task
from engine.statestore.sqlite import SqliteStateStore
from tests.integration.cli import ferry
from tests.integration.converge import assert_converged, records, volume_file
from tests.integration.test_boot_source_power import booting, wait_status
from tests.integration.test_cutover import apply, spec_with, vm_ref
from tests.integration.test_cutover_safety import (
    WEB01,
    interrupt_after_power_off,
    replicated,
    start,
)
from tests.integration.test_fault_drills import spec_for
from tests.integration.test_resume import DISK, MiB, stop_mid_copy, volume_equals_disk
from tests.integration.test_source_changes import grown_db01_disk, set_capacity  # noqa: F401

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
    volume = conn.block_storage.get_volume(gone)
    conn.block_storage.wait_for_status(volume, "available", interval=0.25)
    conn.block_storage.delete_volume(gone)
    conn.block_storage.wait_for_delete(
        volume, interval=0.25
    )  # fetched before: a quick delete left none to get

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


def test_a_cutover_killed_after_the_power_off_then_moved_back_to_replicate_powers_it_on(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """web01 replicated, then cut over (convert off) and the apply killed (-9: no handler runs)
    right after "source powered off"; the spec moves web01 back to replicate. The plan says
    ferry powered it off and that it goes back on; the apply powers it on and drops the
    conversion record. Before: the plan deleted the conversion record, the one that said
    ferry had powered web01 off, and left web01 off: later plans said nothing about it."""
    state = tmp_path / "ferry.db"
    replicate = spec_with(tmp_path, "web01", "mode: replicate\nverify: false")
    done = apply(lab, replicate, WEB01, state)
    assert done.returncode == 0, done.stdout + done.stderr
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false\nverify: false")
    code, out = interrupt_after_power_off(lab, cutover, state, signal.SIGKILL, (8 * MiB, 1202))
    assert code == -signal.SIGKILL, out
    ref = vm_ref(si, "web01")
    try:
        assert power_state(si, ref) == "poweredOff"
        back = spec_with(tmp_path, "web01", "mode: replicate\nverify: false")
        plan = ferry(lab, "plan", str(back), "--target", WEB01, "--state", str(state))
        said = " ".join(plan.stdout.split())
        assert "source powered off by ferry at" in said, plan.stdout
        done = apply(lab, back, WEB01, state)
        assert done.returncode == 0, done.stdout + done.stderr
        assert power_state(si, ref) == "poweredOn", "moved back to replicate, left off"
        assert "vm.web01.conversion" not in records(state)
    finally:
        if power_state(si, ref) != "poweredOn":
            power_on(si, ref)


def test_a_cutover_killed_in_its_boot_then_moved_back_to_replicate_is_undone(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Break-it 12f F2: web01 replicated, its cutover (convert off) killed (-9) while its server
    boots; the server goes ACTIVE, never confirmed, and its guest writes each volume's first
    MiB (written into the volume files here); disk 2001's protection snapshot is deleted by
    someone (break-it 12g F1). The spec moves web01 back to replicate: the plan deletes that
    server, the apply reverts disk 2000 to its protection snapshot (no conversion ran: the
    guest's writes are what is undone) and copies disk 2001 in full (nothing to revert to),
    drops the ports and the conversion record and powers web01 back on. Oracle: every volume
    equals the source disk, no server, no snapshot. Before: "nothing of the cutover is
    undone", web01 left off beside the unconfirmed server, then "No changes"; with the
    snapshot gone, every apply failed its revert with web01 off."""
    vm = find_vm("web01")
    assert vm is not None
    state = replicated(lab, tmp_path)
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false\nverify: false")
    conn, ref = lab.openstack("ferry-lab"), vm_ref(si, "web01")
    proc = start(lab, cutover, state)
    killed = booting(state, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    try:
        wait_status(conn, killed, "ACTIVE")
        for disk in (DISK, OTHER_DISK):  # the unconfirmed guest's writes
            with volume_file(lab, str(records(state)[disk]["volume_id"])).open("r+b") as volume:
                volume.write(os.urandom(MiB))
        back = spec_with(tmp_path, "web01", "mode: replicate\nverify: false")
        saved = tmp_path / "back.plan"
        plan = ferry(lab, "plan", str(back), "--target", WEB01, "--state", str(state),
                     "--out", str(saved))  # fmt: skip
        said = " ".join(plan.stdout.split())
        assert f"server {killed}, never confirmed (an apply stopped during its boot), is " \
            "deleted" in said, plan.stdout  # fmt: skip
        assert "its server never confirmed: it is powered back on" in said, plan.stdout
        # break-it 12g F1, 12h M1: disk 2001's protection snapshot deleted by someone (a
        # janitor) after the plan was saved (the plan's own wording: planner cases)
        gone = str(records(state)["vm.web01.conversion"]["protection"][
            records(state)[OTHER_DISK]["volume_id"]])  # fmt: skip
        snapshot = conn.block_storage.get_snapshot(gone)
        conn.block_storage.delete_snapshot(gone)
        conn.block_storage.wait_for_delete(
            snapshot, interval=0.25
        )  # fetched before: it may go at once
        done = ferry(lab, "apply", str(saved), "--state", str(state))
        out = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 1, out  # not "Apply complete" with the guest's bytes left
        assert "back to its protection snapshot (undoing what the unconfirmed server" in out
        assert "this plan syncs them no more: marked tainted, the next plan copies them" in out
        assert power_state(si, ref) == "poweredOn", "backed out, the source left off"
        assert records(state)[OTHER_DISK].get("tainted"), "its writes stay: tainted"
        done = apply(lab, back, WEB01, state)  # the tainted volume copied in full
        assert done.returncode == 0, done.stdout + done.stderr
        assert not [s for s in conn.compute.servers() if s.id == killed]
        assert not {"vm.web01.server", "vm.web01.conversion", "vm.web01.port[0]"} & set(
            records(state)
        )
        assert_converged(lab, state, vm, server=False)  # the guest's MiB is gone
    finally:
        if power_state(si, ref) != "poweredOn":
            power_on(si, ref)


def test_a_cbt_off_source_powered_on_after_its_cutover_is_seen_by_the_plan(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Break-it 12f F4 on the lab vCenter's own events, no apply: win-app01 (CBT off: no
    changeId to move) is recorded cut over (a state written here: ferry took charge of it at
    vCenter's time T, its server since gone), then powered on and off again. The plan reads
    vCenter's power-on events since T and says the source ran since its cutover. Before: the
    refresh read changeIds only, and the plan was silent where every apply refused."""
    ref = vm_ref(si, "win-app01")
    was = power_state(si, ref)
    uuid = str(fetch_property(si, ref, "config.instanceUuid"))
    if was != "poweredOff":
        power_off(si, ref, PowerOffPolicy.from_spec({"policy": "hard"}))
    state = tmp_path / "ferry.db"
    store = SqliteStateStore(state)
    taken = vcenter_now(si)
    attrs = {INSTANCE_UUID: uuid, VCENTER_OFF_AT: taken.isoformat(), "powered_off_at": 1.0}
    server = {INSTANCE_UUID: uuid, "server_id": "0c9f1e0e-0000-4000-8000-00000000f4f4"}
    store.write(
        [
            ResourceRecord("vm.win-app01.conversion", "conversion", Status.READY, attrs),
            ResourceRecord("vm.win-app01.server", "server", Status.READY, server),
        ],
        [],
    )
    store.close()
    spec = spec_with(tmp_path, "win-app01", "mode: cutover\nconvert: false")
    try:
        quiet = ferry(lab, "plan", str(spec), "--target", "vm.win-app01", "--state", str(state))
        assert "vCenter's events" not in quiet.stdout, quiet.stdout  # off since T: nothing
        power_on(si, ref)
        power_off(si, ref, PowerOffPolicy.from_spec({"policy": "hard"}))
        plan = ferry(lab, "plan", str(spec), "--target", "vm.win-app01", "--state", str(state))
        said = " ".join(plan.stdout.split())
        assert plan.returncode == 1, said
        assert "the source ran since its cutover (powered on at " in said, said
        assert "vCenter's events)" in said, said
    finally:
        if power_state(si, ref) != was:
            power_on(si, ref)


@pytest.mark.usefixtures("grown_db01_disk")
def test_a_saved_cutover_plan_applied_after_a_disk_grew_is_refused_before_the_power_off(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """db01 replicated; a cutover plan saved; then disk 2002 grows 1 → 2 GiB with 1 MiB written
    at 1.5 GiB. The saved plan (state and spec unchanged, so not stale by those) is refused for
    db01 before its source is powered off: the plan's disks are not the source's any more.
    Before: db01 was powered off, its final delta written into the 1 GiB volume, and a server
    booted from it (the grown part lost, the source down)."""
    state = tmp_path / "ferry.db"
    replicate = spec_with(tmp_path, "db01", "mode: replicate\nverify: false")
    done = apply(lab, replicate, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    cutover = spec_with(tmp_path, "db01", "mode: cutover\nconvert: false\nverify: false")
    saved = tmp_path / "cutover.plan"
    made = ferry(lab, "plan", str(cutover), "--target", "vm.db01", "--out", str(saved),
                 "--state", str(state))  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    ref = vm_ref(si, "db01")
    was = power_state(si, ref)
    set_capacity(si, ref, 2002, 2 * GiB)
    lab.write("db01", 2002, 1536 * MiB, MiB, seed=1203)

    done = ferry(lab, "apply", str(saved), "--state", str(state))
    out = " ".join((done.stdout + done.stderr).split())
    try:
        assert done.returncode == 1, out
        assert "disk 2002 is 2 GiB, 1 GiB when the plan was made" in out, out  # to the byte
        assert power_state(si, ref) == was, "powered off for a plan that no longer fits"
        assert "vm.db01.server" not in records(state)
    finally:
        if power_state(si, ref) != was:
            power_on(si, ref)


ADDED_MAC = "00:50:56:8f:01:07"
OTHER_DISK = "vm.web01.disk[2001]"


@pytest.fixture
def web01_nic_added_after(si: Any) -> Iterator[Any]:
    """A function adding a NIC (MAC ADDED_MAC, on VM Network) to web01 by ReconfigVM_Task, as
    a vSphere client does; the NIC is removed after the test."""

    def add() -> None:
        nic = vim.vm.device.VirtualVmxnet3(
            key=-1,
            addressType="manual",
            macAddress=ADDED_MAC,
            backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"),
        )
        change = vim.vm.device.VirtualDeviceSpec(operation="add", device=nic)
        wait_task(si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), "add NIC")

    ref = vm_ref(si, "web01")
    yield add
    for dev in fetch_property(si, ref, "config.hardware.device"):
        if isinstance(dev, vim.vm.device.VirtualEthernetCard) and dev.macAddress == ADDED_MAC:
            change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=dev)
            wait_task(si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])), "remove")


def test_a_saved_cutover_plan_applied_after_a_nic_was_added_is_refused_before_any_port(
    lab: Lab, si: Any, tmp_path: Path, web01_nic_added_after: Any
) -> None:
    """web01 (never replicated) gets a cutover plan saved; then a third NIC is added in vCenter.
    The saved plan (spec and state unchanged) is refused for web01 before its first port is made
    and before the snapshot that would power it off. Before: its two ports were made, web01
    powered off and copied, and a server booted without the new NIC."""
    state = tmp_path / "ferry.db"
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false\nverify: false")
    saved = tmp_path / "cutover.plan"
    made = ferry(lab, "plan", str(cutover), "--target", WEB01, "--out", str(saved),
                 "--state", str(state))  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    ref = vm_ref(si, "web01")
    was = power_state(si, ref)
    web01_nic_added_after()
    conn = lab.openstack("ferry-lab")
    macs = {"00:50:56:8f:01:00", "00:50:56:8f:01:01", ADDED_MAC}
    ports = {p.id for p in conn.network.ports() if p.mac_address in macs}

    began = time.monotonic()
    done = ferry(lab, "apply", str(saved), "--state", str(state))
    out = " ".join((done.stdout + done.stderr).split())
    try:
        assert done.returncode == 1, out
        assert (
            "vm.web01: the source VM changed since this plan was made "
            f"(NIC {ADDED_MAC} was added): run `ferry plan` again" in out
        ), out
        assert "Traceback" not in out, out
        assert power_state(si, ref) == was, "powered off for a plan that no longer fits"
        assert not [a for a in records(state) if ".port[" in a or a.endswith(".server")]
        assert {p.id for p in conn.network.ports() if p.mac_address in macs} == ports
        assert not list(conn.compute.servers(name="web01"))
    finally:
        if power_state(si, ref) != was:
            power_on(si, ref)
    print(f"refused in {time.monotonic() - began:.1f} s")


def touch_from_a_test_server(lab: Lab, volume_id: str) -> None:
    """A server that is not ferry's attaches the volume, writes a MiB at offset 0 and one at
    512 MiB (where web01's disk 2000 has a hole), and lets it go."""
    conn = lab.openstack("ferry-lab")
    host = conn.compute.find_server("ferry-conversion-01", ignore_missing=False)
    volumes.attach(conn, host.id, volume_id)
    with volume_file(lab, volume_id).open("r+b") as f:
        f.write(os.urandom(MiB))  # over the source's data
        f.seek(512 * MiB)
        f.write(os.urandom(MiB))  # where the source has a hole
    volumes.detach(conn, host.id, volume_id)


def test_a_test_boot_of_the_replica_is_seen_and_the_volume_copied_in_full(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Break-it 12l F2: web01 replicated, verify off; then a server that is not ferry's attaches
    disk 2000's volume, writes a MiB at offset 0 and one where the source has a hole, and lets
    it go (a "test boot" of the replica). A plan made before the touch (saved) and one made
    after: the new plan copies the volume in full, saying it changed outside ferry (Cinder's
    updated_at moved); the saved plan's apply does the same (checked right before its copy),
    holes written as zeros: the volume equals the source disk again. Before: neither plan
    saw it, the delta went on top of the guest's bytes, then "No changes". A cutover saved
    before another test boot is refused before the power-off (its final sync would be a full
    copy the plan did not announce nor count in the downtime)."""
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    lab.write("web01", 2000, 0, 4 * MiB, seed=1221)
    first = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    assert records(state)[DISK].get("volume_updated_at"), records(state)[DISK]
    saved = tmp_path / "before-the-touch.plan"
    made = ferry(lab, "plan", str(spec), "--out", str(saved), "--state", str(state))
    assert made.returncode == 0, made.stdout + made.stderr
    assert "changed outside ferry" not in made.stdout, made.stdout  # ferry's own writes

    volume_id = str(records(state)[DISK]["volume_id"])
    touch_from_a_test_server(lab, volume_id)
    assert not volume_equals_disk(lab, state)

    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    said = " ".join(plan.stdout.split())
    assert f"volume {volume_id} changed outside ferry since its last sync" in said, plan.stdout
    assert "copy it in full, holes written as zeros" in said, plan.stdout

    done = ferry(lab, "apply", str(saved), "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    log = " ".join((tmp_path / "logs" / "web01.log").read_text().split())
    assert f"volume {volume_id} changed outside ferry since its last sync" in log, log
    assert volume_equals_disk(lab, state), "the test boot's bytes stayed"
    again = ferry(lab, "plan", str(spec), "--state", str(state))
    assert "changed outside ferry" not in again.stdout, again.stdout

    # a cutover planned (delta) before another test boot: refused before the power-off, as its
    # final sync would be a full copy the plan did not count in the downtime
    cut = tmp_path / "cut.yaml"
    cut.write_text(spec.read_text() + "    mode: cutover\n    convert: false\n")
    saved = tmp_path / "cutover.plan"
    made = ferry(lab, "plan", str(cut), "--out", str(saved), "--state", str(state))
    assert made.returncode == 0 and "changed outside ferry" not in made.stdout, made.stdout
    touch_from_a_test_server(lab, volume_id)
    refused = ferry(lab, "apply", str(saved), "--state", str(state))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "its final sync would be a full copy" in said, said
    assert "the source was not powered off" in said, said
    assert power_state(si, vm_ref(si, "web01")) == "poweredOn"


def test_a_copy_stopped_then_its_volume_attached_elsewhere_starts_over(
    lab: Lab, tmp_path: Path
) -> None:
    """Break-it 12l F2's kind in an interrupted copy: web01's full copy stopped (Ctrl-C) past
    16 MiB, then a server that is not ferry's attaches its volume, writes below the checkpoint
    and where the source has a hole, and lets it go. The resume would keep those bytes (it
    copies only from the checkpoint, and what CBT says changed since): the plan and the apply
    start the copy over from 0, holes written as zeros; the volume equals the source disk. A
    protection snapshot of ferry's left unrecorded (a cutover killed between its create and its
    record) is deleted by the sync that writes the volume (break-it 12k M2: it stayed)."""
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    lab.write("web01", 2000, 0, 64 * MiB, seed=1222)
    stop_mid_copy(lab, spec, state, 16 * MiB)
    assert records(state)[DISK].get("volume_updated_at"), "the stop's detach not recorded"
    volume_id = str(records(state)[DISK]["volume_id"])
    touch_from_a_test_server(lab, volume_id)
    plan = ferry(lab, "plan", str(spec), "--state", str(state))
    said = " ".join(plan.stdout.split())
    assert "the interrupted copy starts over from 0" in said, plan.stdout
    assert f"volume {volume_id} changed outside ferry" in said, plan.stdout
    # break-it 12k M2: a protection snapshot an interrupted cutover made and never recorded
    conn = lab.openstack("ferry-lab")
    left = conn.block_storage.create_snapshot(
        volume_id=volume_id, name="ferry-protect-left", metadata={"ferry_protects": volume_id}
    )
    conn.block_storage.wait_for_status(left, "available", interval=0.25)
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    assert volume_equals_disk(lab, state), "the foreign bytes stayed under the resume"
    log = " ".join((tmp_path / "logs" / "web01.log").read_text().split())
    assert f"protection snapshot {left.id} of volume {volume_id} (left unrecorded" in log, log
    assert list(conn.block_storage.snapshots()) == []
