"""A volume held by a Cinder attachment that never completed (break-it pass 12b, item 4: cinder-api
down right after the power-off left an attachment 'reserved'; the apply waited 300 s with the
source off, and every re-apply powered the source off and waited again until someone deleted
the attachment by hand; the plan said nothing).

The stuck state is made directly, as nova's reserve leaves it when its attachment update never
comes: a Cinder attachment of the replica for the conversion host, created without a connector
(status `reserved`). A saved cutover plan made before it stops before the power-off (the source
keeps running); the next plan shows the repair, and its apply deletes the attachment before
powering the source off once and cuts over with the volume equal to the disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.model.state import UPDATED_AT
from engine.providers.openstack import volumes
from engine.providers.vsphere.power import power_on, power_state
from engine.providers.vsphere.tasks import wait_task
from engine.statestore.sqlite import SqliteStateStore
from tests.integration.cli import ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_cutover import vm_ref
from tests.integration.test_fault_drills import spec_for

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2
VM = "build-old"  # one 2 GiB sparse disk: a short first copy


@pytest.fixture(autouse=True)
def source_back_off(si: Any) -> Iterator[None]:
    """build-old is powered off in the lab's estate: left so, whatever the test did."""
    yield
    ref = vm_ref(si, VM)
    if power_state(si, ref) != "poweredOff":
        wait_task(si, ref.PowerOffVM_Task(), f"powering {VM} off")


def powered_off_events(si: Any, ref: Any, since: Any) -> int:
    """How many times vCenter powered the VM off since a vCenter time: an event collector's
    latest page, sized past the default 10 (QueryEvents and a collector answer 10 events at
    most, the oldest among them once a VM has more), filtered by time here."""
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=ref, recursion="self"),
        eventTypeId=["VmPoweredOffEvent"],
    )
    collector = si.content.eventManager.CreateCollectorForEvents(spec)
    try:
        collector.SetCollectorPageSize(1000)
        found = list(collector.latestPage or [])
    finally:
        collector.DestroyCollector()
    return sum(e.createdTime >= since for e in found)


def same_bytes(a: Path, b: Path, size: int) -> bool:
    """Whether two sparse files hold the same first `size` bytes, compared over the union of
    their data extents (a hole reads as zeros in both): byte-exact without hashing 2 GiB."""
    spans = sorted(lab_disks.data_extents(a) + lab_disks.data_extents(b))
    with a.open("rb") as left, b.open("rb") as right:
        for offset, length in spans:
            left.seek(offset)
            right.seek(offset)
            at, end = offset, min(offset + length, size)
            while at < end:
                n = min(8 * MiB, end - at)
                if left.read(n) != right.read(n):
                    return False
                at += n
    return True


def unstamped(state: Path, address: str, conn: Any) -> None:
    """The record and volume as the interrupted apply that left the attachment leaves them: a
    sync or a compare drops the volume's recorded Cinder updated_at before its host attaches
    the volume (ferry's own attach moves it), and that host clears the volume's own stamp
    (ferry_updated_at), so a volume attached since is not taken for one changed outside ferry
    (model.state.changed_outside)."""
    store = SqliteStateStore(state)
    try:
        record = store.read().resources[address]
        attrs = {k: v for k, v in record.attributes.items() if k != UPDATED_AT}
        store.write([replace(record, attributes=attrs)], [])
    finally:
        store.close()
    volumes.unstamp(conn, str(attrs["volume_id"]))


def test_a_reserved_attachment_is_repaired_before_the_power_off(
    lab: Lab, si: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    vm = find_vm(VM)
    assert vm is not None
    state = tmp_path / "ferry.db"
    replicate = spec_for(tmp_path, VM, "    verify: false\n")
    first = ferry(lab, "apply", str(replicate), "--auto-approve", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    volume_id = records(state)[f"vm.{VM}.disk[2000]"]["volume_id"]

    ref = vm_ref(si, VM)
    power_on(si, ref)  # a running source: its power-offs are counted
    lab.write(VM, 2000, 64 * MiB, MiB, seed=12)  # the final delta has bytes to copy
    cutover = tmp_path / "cutover.yaml"
    cutover.write_text(
        replicate.read_text().replace(
            "    verify: false\n",
            "    verify: false\n    mode: cutover\n    convert: false\n"
            "    power_off: {policy: hard}\n",
        )
    )
    saved = tmp_path / "cutover.plan"
    conn = lab.openstack("ferry-lab")
    unstamped(state, f"vm.{VM}.disk[2000]", conn)  # before the plan: a write moves the serial
    planned = ferry(lab, "plan", str(cutover), "--state", str(state), "--out", str(saved))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "left 'reserved'" not in planned.stdout

    host = conn.compute.find_server("ferry-conversion-01", ignore_missing=False)
    stuck = conn.block_storage.create_attachment(volume_id, instance=host.id)
    request.addfinalizer(lambda: conn.block_storage.delete_attachment(stuck.id))  # a failed run
    assert conn.block_storage.get_volume(volume_id).status == "reserved"
    since = si.CurrentTime()

    refused = ferry(lab, "apply", str(saved), "--state", str(state))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = " ".join(refused.stdout.split())
    assert f"attachment {stuck.id} 'reserved'" in said and "source was not powered off" in said
    assert power_state(si, ref) == "poweredOn"
    assert powered_off_events(si, ref, since) == 0

    done = ferry(lab, "apply", str(cutover), "--auto-approve", "--state", str(state))
    shown = " ".join(done.stdout.split())  # the plan it applied, then what it did
    repair = f"attachment {stuck.id} left 'reserved' by an interrupted apply: delete it"
    assert repair in shown, shown
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"attachment {stuck.id} of volume {volume_id}" in done.stdout
    assert powered_off_events(si, ref, since) == 1  # once, by the apply that cut over
    left = [(a.status, a.instance) for a in conn.block_storage.attachments()]
    server = records(state)[f"vm.{VM}.server"]["server_id"]
    assert left == [("attached", server)], left  # the booted server's, none stuck
    synced = records(state)[f"vm.{VM}.disk[2000]"]["last_sync"]
    assert synced["kind"] == "delta" and synced["bytes"] >= MiB, synced  # the 1 MiB written
    live = lab_disks.live_path(lab.disks, vm, 2000)  # the guest's writes applied at power-off
    assert same_bytes(volume_file(lab, volume_id), live, vm.disks[0].capacity)
    assert conn.compute.get_server(server).status == "ACTIVE"
    print(f"test_a_reserved_attachment_is_repaired_before_the_power_off: "
          f"{time.monotonic() - began:.1f} s")  # fmt: skip
