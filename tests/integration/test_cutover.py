"""Cutover on the lab: the source is powered off before its final snapshot, the final delta is
exact, the volumes are protected, and a server boots from them with the source MACs in NIC order
and the disks in order. A failed conversion restores the volumes and powers the source back on;
the next apply syncs a small delta and completes."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pyVmomi import vim

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.power import power_on, power_state
from engine.providers.vsphere.read import retrieve
from engine.report import svg
from engine.report.render import SUMMARY_HEAD
from engine.statestore.sqlite import SqliteStateStore
from engine.units import parse_duration
from tests.integration.cli import ROOT, ferry, file_reader
from tests.integration.converge import assert_converged, data_after, records, volume_file

pytestmark = pytest.mark.lab
MiB = 1024**2


@pytest.fixture(autouse=True)
def clean_destination(si: Any, new_cloud_objects: None) -> Iterator[None]:
    """What a test created in the cloud goes after it; its source VMs are powered on again."""
    yield
    for name in ("db01", "Reporting Ünit 1"):
        power_on(si, vm_ref(si, name))


def vm_ref(si: Any, name: str) -> Any:
    return next(
        o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == name
    )


def spec_with(tmp_path: Path, entry: str, settings: str) -> Path:
    """plans/demo.yaml with one VM entry's settings extended."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    line = re.search(rf"^  - name: {re.escape(entry)}.*$", text, re.M)
    assert line is not None
    indent = "\n    "
    extended = line.group(0).split("#")[0].rstrip() + indent + indent.join(settings.splitlines())
    spec = tmp_path / f"{abs(hash(settings))}.yaml"
    spec.write_text(text.replace(line.group(0), extended))
    return spec


def apply(lab: Lab, spec: Path, target: str, state: Path, *more: str) -> Any:
    return ferry(
        lab, "apply", str(spec), "--target", target, "--auto-approve", "--state", str(state), *more
    )


def lock_holder(state: Path) -> int | None:
    store = SqliteStateStore(state)
    try:
        lock = store.read().lock
    finally:
        store.close()
    return lock.pid if lock else None


def power_events(si: Any, ref: Any, since: Any) -> list[str]:
    """The VM's events since a vCenter time, oldest first (vcsim answers one page of 10)."""
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=ref, recursion="self"),
        time=vim.event.EventFilterSpec.ByTime(beginTime=since),
    )
    events = sorted(si.content.eventManager.QueryEvents(spec), key=lambda e: e.key)
    return [type(e).__name__.rsplit(".", 1)[-1] for e in events]


def assert_report(lab: Lab, state: Path, server_id: str) -> None:
    """`ferry report` shows db01's server, a timeline with its nodes, the measured downtime."""
    page, md = state.parent / "report.html", state.parent / "report.md"
    shown = ferry(lab, "report", "--html", str(page), "--md", str(md), "--state", str(state))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    text = page.read_text()
    assert server_id in text and text.count("<svg") == 2
    assert 'class="bar"' in text and "vm.db01.conversion" in text  # the timeline has the nodes
    row = next(line for line in md.read_text().splitlines() if line.startswith("| db01 |"))
    assert report_seconds(row, "downtime") > 0, row  # measured, not estimated
    assert_renders(page)


def report_seconds(row: str, column: str) -> float:
    """A time cell of a report's summary row (a Markdown table line), in seconds."""
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    return parse_duration(cells[SUMMARY_HEAD.index(column)])


def assert_renders(page: Path) -> None:
    """A real browser draws the report: headless Chromium's screenshot shows timeline bars in
    the colors of copies and of the server boot."""
    shot = page.with_suffix(".png")
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with Image.open(shot) as image:
        pixels = Counter(image.convert("RGB").getdata())
    for color in (svg.COLORS["volume"], svg.COLORS["server"]):
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        assert pixels[rgb] > 200, f"no {color} bar drawn in {shot}"


def test_cutover_boots_the_server_from_exact_volumes_with_the_source_macs(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    vm = find_vm("db01")
    assert vm is not None
    state = tmp_path / "ferry.db"
    replicate = spec_with(tmp_path, "db01", "mode: replicate")
    done = apply(lab, replicate, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    writes = [(2000, 3 * MiB, MiB), (2001, 100 * MiB, 2 * MiB), (2002, 0, 512 * 1024)]
    for key, offset, length in writes:
        lab.write("db01", key, offset, length)
    cutover = spec_with(tmp_path, "db01", "mode: cutover\nconvert: false")
    plan = ferry(lab, "plan", str(cutover), "--target", "vm.db01", "--state", str(state))
    assert "power off the source" in plan.stdout and "vm.db01.server" in plan.stdout
    started = si.CurrentTime()
    done = apply(lab, cutover, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr

    ref = vm_ref(si, "db01")
    assert power_state(si, ref) == "poweredOff"
    assert "VmGuestShutdownEvent" in power_events(si, ref, started)  # graceful, in the guest
    found = records(state)
    for disk in vm.disks:
        attrs = found[f"vm.db01.disk[{disk.key}]"]
        assert attrs["converted"] is True
        assert attrs["last_sync"]["source_power"] == "poweredOff"  # snapshot taken when off
        assert attrs["last_sync"]["kind"] == "delta"
        changed = sum(length for key, _, length in writes if key == disk.key)
        assert attrs["last_sync"]["bytes"] == changed
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        assert file_digest(volume_file(lab, attrs["volume_id"]), disk.capacity) == file_digest(live)

    conn = lab.openstack("ferry-lab")
    server = conn.compute.get_server(found["vm.db01.server"]["server_id"])
    assert server.status == "ACTIVE" and server.name == "db01"
    assert server.metadata["ferry_vm"] == vm.instance_uuid
    assert server.flavor["original_name"] == "m1.large"
    interfaces = list(conn.compute.server_interfaces(server))
    by_port = {i.port_id: i.mac_addr for i in interfaces}
    port_ids = [found[f"vm.db01.port[{i}]"]["port_id"] for i in range(len(vm.nics))]
    assert [by_port[p] for p in port_ids] == [nic.mac for nic in vm.nics]
    attached = sorted(conn.compute.volume_attachments(server), key=lambda a: a.device)
    assert [a.volume_id for a in attached] == [
        found[f"vm.db01.disk[{d.key}]"]["volume_id"] for d in vm.disks
    ]
    for attrs in (found[f"vm.db01.disk[{d.key}]"] for d in vm.disks):
        volume = conn.block_storage.get_volume(attrs["volume_id"])
        assert volume.metadata["ferry_converted"] == "true"
    assert list(conn.block_storage.snapshots()) == []  # the protection went with success
    log = (tmp_path / "logs" / "db01.log").read_text()  # the VM's own log: every step, no secret
    for step in ("source powered off", "snapshot", "delta copy", "protected", "ACTIVE"):
        assert step in log
    assert lab.vcenter_files.password.read_text().strip() not in log

    assert_report(lab, state, found["vm.db01.server"]["server_id"])

    again = ferry(
        lab, "plan", str(cutover), "--target", "vm.db01", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    boot_metadata_restored(lab, conn, cutover, state, found["vm.db01.disk[2000]"]["volume_id"])
    rerun = apply(lab, cutover, "vm.db01", state)
    assert rerun.returncode == 0 and "No changes" in rerun.stdout
    assert len([s for s in conn.compute.servers() if s.name == "db01"]) == 1


NOVA_KEYS = ("hw_firmware_type", "hw_machine_type", "os_secure_boot", "hw_disk_bus",
             "hw_scsi_model", "hw_vif_model", "os_type")  # fmt: skip


def boot_metadata_restored(lab: Lab, conn: Any, spec: Path, state: Path, volume_id: str) -> None:
    """The boot volume's image metadata changed since the boot (as by an older ferry's rule):
    the plan updates the server's boot volume metadata, the apply sets what ferry sets (a key it
    does not set is removed), the next plan has no change (issue 16)."""

    def nova(volume: str) -> dict[str, str]:
        found = conn.block_storage.get_volume(volume).volume_image_metadata or {}
        return {k: v for k, v in found.items() if k in NOVA_KEYS}

    booted = nova(volume_id)
    assert "hw_machine_type" not in booted  # BIOS: ferry sets none
    conn.block_storage.set_volume_image_metadata(
        volume_id, hw_vif_model="rtl8139", hw_machine_type="pc"
    )
    plan = ferry(lab, "plan", str(spec), "--target", "vm.db01", "--state", str(state),
                 "--detailed-exitcode")  # fmt: skip
    assert plan.returncode == 2, plan.stdout + plan.stderr
    text = " ".join(plan.stdout.split())
    nic = booted.get("hw_vif_model")
    said = f"hw_vif_model: rtl8139 → {nic}" if nic else "- hw_vif_model (was rtl8139)"
    assert "~ vm.db01.server update the boot volume's image metadata changed: " in text
    assert "- hw_machine_type (was pc)" in text and said in text
    assert "Plan: 0 to create, 1 to update, 0 to destroy" in text
    done = apply(lab, spec, "vm.db01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert nova(volume_id) == booted
    again = ferry(lab, "plan", str(spec), "--target", "vm.db01", "--state", str(state),
                  "--detailed-exitcode")  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_failed_conversion_restores_then_the_next_apply_syncs_a_small_delta(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """virt-v2v-in-place really runs and really fails (the lab disk holds no operating system):
    the volumes are reverted to their protection snapshots, the source is powered on again, and
    the next apply copies only what the guest wrote since."""
    name, target = "Reporting Ünit 1", 'vm["Reporting Ünit 1"]'
    vm = find_vm(name)
    assert vm is not None
    state = tmp_path / "ferry.db"
    failing = spec_with(tmp_path, name, "mode: cutover")
    # the file reader: Reporting Ünit 1 keeps a snapshot of its own, which the https reader refuses
    failing.write_text(file_reader(failing.read_text()))
    done = apply(lab, failing, target, state)
    assert done.returncode == 1
    assert "inspection could not detect the source guest" in done.stdout
    assert "volumes restored from their protection snapshots" in done.stdout
    assert power_state(si, vm_ref(si, name)) == "poweredOn"
    found = records(state)
    assert f"{target}.conversion" not in found and f"{target}.server" not in found
    volume_id = found[f"{target}.disk[2000]"]["volume_id"]
    live = lab_disks.live_path(lab.disks, vm, 2000)
    assert file_digest(volume_file(lab, volume_id), 1024**3) == file_digest(live)
    conn = lab.openstack("ferry-lab")
    assert list(conn.block_storage.snapshots()) == []
    log = (tmp_path / "logs" / "Reporting-Unit-1.log").read_text()
    assert "virt-v2v-in-place -i libvirtxml" in log
    assert lab.vcenter_files.password.read_text().strip() not in log

    lab.write(name, 2000, 7 * MiB, MiB)
    ready = spec_with(tmp_path, name, "mode: cutover\nconvert: false")
    ready.write_text(file_reader(ready.read_text()))
    done = apply(lab, ready, target, state)
    assert done.returncode == 0, done.stdout + done.stderr
    sync = records(state)[f"{target}.disk[2000]"]["last_sync"]
    assert sync["kind"] == "delta" and sync["bytes"] == MiB
    assert file_digest(volume_file(lab, volume_id), 1024**3) == file_digest(live)
    assert conn.compute.get_server(records(state)[f"{target}.server"]["server_id"]).status == (
        "ACTIVE"
    )


def tree_argv(pid: int) -> list[str]:
    """The command lines of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            out.append(Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def start_apply(
    lab: Lab, spec: Path, target: str, state: Path, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "apply", str(spec), "--target", target,
         "--auto-approve", "--state", str(state), *extra],
        env={**os.environ, **lab.env(), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def kill_when(proc: subprocess.Popen[str], ready: Any, timeout: float = 120.0) -> bool:
    """SIGKILL the apply once `ready()` holds; False when the apply ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.02)
    proc.communicate()
    return False


def test_kill_9_at_random_moments_of_a_cutover_converges_without_duplicates(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """The first kill lands mid full copy, the second in the resumed copy after a further
    checkpoint (while a third apply fails fast on the lock), then ten more at random moments of
    the cutover, mostly in the copy. Checkpoints only move forward, the run that completes the
    copy reads only what lies beyond its checkpoint, and the last run converges: one server,
    one port per NIC, one volume per disk, digests equal."""
    vm = find_vm("db01")
    assert vm is not None
    for i in range(24):  # 1.5 GiB of data on the 4 GiB disk
        lab.write("db01", 2001, 1024 * MiB + i * 64 * MiB, 64 * MiB)
    # A distant source host: each read waits 1 s, so the full copy takes about 20 s (32 reads
    # of 2 MiB in flight) however fast this machine's disks are, and most kills land in it.
    lab.read_delay("db01", 2001, 1000)
    try:
        kill_at_random_moments(lab, tmp_path, vm)
    finally:
        lab.read_errors("db01", 2001, None)
    assert_converged(lab, tmp_path / "ferry.db", vm, server=True)


def kill_at_random_moments(lab: Lab, tmp_path: Path, vm: Any) -> None:
    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "db01", "mode: cutover\nconvert: false")

    def mark() -> int:
        """Where the disk's copy resumes: its recorded checkpoint."""
        return int(records(state).get("vm.db01.disk[2001]", {}).get("copied_bytes", 0))

    def copied() -> bool:
        return "last_sync" in records(state).get("vm.db01.disk[2001]", {})

    first = start_apply(lab, spec, "vm.db01", state)
    argvs: list[str] = []

    def mid_copy() -> bool:
        argvs.extend(tree_argv(first.pid))  # ferry and its nbdkit servers, while they run
        return state.exists() and mark() > 0

    assert kill_when(first, mid_copy), "no checkpoint seen"
    marks = [mark()]
    password = lab.vcenter_files.password.read_text().strip()
    assert any("nbdkit" in a for a in argvs) and not any(password in a for a in argvs)

    resumed = start_apply(lab, spec, "vm.db01", state)
    while lock_holder(state) != resumed.pid:  # then a second apply fails fast, naming it
        assert resumed.poll() is None, "the resumed apply ended before taking the lock"
        time.sleep(0.05)
    began = time.monotonic()
    second = apply(lab, spec, "vm.db01", state)
    assert second.returncode == 1 and f"locked by ferry apply (pid {resumed.pid}" in second.stderr
    assert time.monotonic() - began < 30 and "Traceback" not in second.stderr
    assert kill_when(resumed, lambda: mark() > marks[0]), "the resumed copy made no checkpoint"
    marks.append(mark())

    # Then at random moments: most land in the copy (slowed by the read delay), some in
    # the cutover's later steps. Every run resumes from the last checkpoint, never below it.
    rng = random.Random(20261127)
    kills = 2
    while kills < 12:
        starts_at = mark()
        proc = start_apply(lab, spec, "vm.db01", state)
        moment = time.monotonic() + rng.uniform(1.0, 8.0)
        if not kill_when(proc, lambda m=moment: time.monotonic() >= m):  # type: ignore[misc]
            break  # it finished: nothing left to interrupt
        kills += 1
        if not copied():
            assert mark() >= starts_at, "a checkpoint went back"
            marks.append(mark())
    starts_at = mark() if not copied() else marks[-1]
    lab.read_errors("db01", 2001, None)  # the last run at full speed (verify reads all data)
    done = ferry(lab, "apply", str(spec), "--target", "vm.db01", "--auto-approve",
                 "--state", str(state))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sync = records(state)["vm.db01.disk[2001]"]["last_sync"]
    print(f"kills: {kills}; checkpoints {marks}; the last copy read {sync['bytes']} bytes")
    assert kills >= 10, f"only {kills} kills landed before the cutover finished"
    live = lab_disks.live_path(lab.disks, vm, 2001)
    if sync["kind"] == "full":  # the run that completed the copy read only beyond its checkpoint
        assert 0 < sync["bytes"] <= data_after(live, starts_at) + 2 * MiB


def test_a_server_and_port_deleted_outside_ferry_are_reported_as_drift_and_recreated(
    lab: Lab, tmp_path: Path
) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    state = tmp_path / "ferry.db"
    cutover = spec_with(tmp_path, "build-old", "mode: cutover\nconvert: false")
    done = apply(lab, cutover, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(state)
    conn = lab.openstack("ferry-lab")
    server = conn.compute.get_server(found["vm.build-old.server"]["server_id"])
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=120, interval=0.25)
    conn.network.delete_port(found["vm.build-old.port[0]"]["port_id"])

    plan = ferry(
        lab, "plan", str(cutover), "--target", "vm.build-old", "--json", "--state", str(state)
    )
    assert plan.returncode == 0, plan.stderr
    actions = {c["address"]: (c["action"], c["reason"]) for c in json.loads(plan.stdout)["changes"]}
    for address in ("vm.build-old.server", "vm.build-old.port[0]"):
        assert actions[address][0] == "create" and "drift: recorded" in actions[address][1]
    assert actions["vm.build-old.disk[2000]"] == ("no-op", "cut over")  # never synced again
    done = apply(lab, cutover, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    again = records(state)
    assert again["vm.build-old.server"]["server_id"] != server.id
    assert_converged(lab, state, vm, server=True)


def test_cold_migration_from_a_datastore_mount(lab: Lab, tmp_path: Path) -> None:
    """source.vcenter.datastore_path instead of VDDK: build-old (powered off) copied once from
    its flat extent under an NFS-style mount, then booted. Its entry turns verify off; `apply
    --verify` verifies it all the same."""
    vm = find_vm("build-old")
    assert vm is not None
    mount = lab.export_datastores(tmp_path / "mnt")
    text = (ROOT / "plans" / "demo.yaml").read_text()
    text = re.sub(r"^  (lab_dir|reader): .*\n", "", text, flags=re.M)  # the mount's reader
    mounted = f"    datacenter: DC0\n    datastore_path: {mount}\n"
    text = text.replace("    datacenter: DC0\n", mounted)
    spec = tmp_path / "cold.yaml"
    spec.write_text(text.split("\nvms:")[0] + "\nvms:\n  - name: build-old\n    mode: cold\n"
                    "    convert: false\n    verify: false\n")  # fmt: skip
    state = tmp_path / "ferry.db"
    done = apply(lab, spec, "vm.build-old", state, "--verify")
    assert done.returncode == 0, done.stdout + done.stderr
    synced = records(state)["vm.build-old.disk[2000]"]
    assert synced["last_sync"]["kind"] == "full"
    capacity = vm.disks[0].capacity
    volume = file_digest(volume_file(lab, synced["volume_id"]), capacity)
    assert synced["last_sync"]["sha256"] == volume, "--verify did not verify"
    assert_converged(lab, state, vm, server=True)
    wrong = spec.read_text().replace("mode: cold", "mode: replicate")
    spec.write_text(wrong)
    refused = ferry(lab, "validate", str(spec))
    assert refused.returncode == 1 and "(mode: cold)" in refused.stdout + refused.stderr


def test_a_network_the_spec_asks_for_is_created_once_and_kept(lab: Lab, tmp_path: Path) -> None:
    """network_map with create: a missing network (and subnet) is planned, created before the
    port on it, reused by the next plan (no-op), and deleted only by --destroy."""
    vm = find_vm("build-old")
    assert vm is not None
    text = (
        (ROOT / "plans" / "demo.yaml")
        .read_text()
        .replace(
            "    VM Network: {network: lab-vm-network}",
            "    VM Network: {network: lab-made, create: {cidr: 10.77.0.0/24, gateway: 10.77.0.1}}",
        )
    )
    assert "lab-made" in text
    spec = tmp_path / "made.yaml"
    spec.write_text(text.split("\nvms:")[0] + "\nvms:\n  - name: build-old\n    mode: cutover\n"
                    "    convert: false\n    verify: false\n")  # fmt: skip
    state = tmp_path / "ferry.db"
    plan = ferry(lab, "plan", str(spec), "--json", "--state", str(state))
    assert json.loads(plan.stdout)["vms"][0]["verify"] == "off"
    changes = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}
    assert changes["network.lab-made"]["action"] == "create"
    assert ["network.lab-made", "vm.build-old.port[1]"] in json.loads(plan.stdout)["graph"]["edges"]
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    conn = lab.openstack("ferry-lab")
    network = conn.network.find_network("lab-made")
    assert network is not None and "ferry" in network.tags
    (subnet,) = list(conn.network.subnets(network_id=network.id))
    assert (subnet.cidr, subnet.gateway_ip) == ("10.77.0.0/24", "10.77.0.1")
    port = conn.network.get_port(records(state)["vm.build-old.port[1]"]["port_id"])
    assert port.network_id == network.id
    assert records(state)["vm.build-old.disk[2000]"]["last_sync"]["sha256"] is None  # not verified
    assert_converged(lab, state, vm, server=True)
    again = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", str(state))
    assert again.returncode == 0, again.stdout
    destroy = ferry(lab, "plan", str(spec), "--destroy", "--json", "--state", str(state))
    deletes = {c["address"] for c in json.loads(destroy.stdout)["changes"]}
    assert "network.lab-made" in deletes


def test_flavor_create_as_the_clouds_operator(lab: Lab, tmp_path: Path) -> None:
    """flavor: create needs an admin: the spec logs in as the lab cloud's admin, scoped to the
    lab project (destination.project). The flavor is made for the VM, the server boots with it,
    a re-plan leaves it alone and --destroy would delete it."""
    vm = find_vm("build-old")
    assert vm is not None
    text = (ROOT / "plans" / "demo.yaml").read_text()
    text = text.replace("  cloud: ferry-lab\n", "  cloud: ferry-lab-admin\n  project: ferry-lab\n")
    spec = tmp_path / "operator.yaml"
    spec.write_text(text.split("\nvms:")[0] + "\nvms:\n  - name: build-old\n    mode: cutover\n"
                    "    convert: false\n    flavor: create\n")  # fmt: skip
    state = tmp_path / "ferry.db"
    admin = lab.openstack("ferry-lab-admin")
    try:
        done = apply(lab, spec, "vm.build-old", state)
        assert done.returncode == 0, done.stdout + done.stderr
        flavor = admin.compute.find_flavor("ferry-build-old")
        assert flavor is not None and (flavor.vcpus, flavor.ram) == (vm.cpus, vm.memory_mb)
        server = lab.openstack("ferry-lab").compute.get_server(
            records(state)["vm.build-old.server"]["server_id"]
        )
        assert server.flavor["original_name"] == "ferry-build-old"
        assert_converged(lab, state, vm, server=True)
        again = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", str(state))
        assert again.returncode == 0, again.stdout
        destroy = ferry(lab, "plan", str(spec), "--destroy", "--json", "--state", str(state))
        assert "flavor.ferry-build-old" in {
            c["address"] for c in json.loads(destroy.stdout)["changes"]
        }
    finally:  # the server, ports and volumes go with the test's fixture; the flavor here
        made = admin.compute.find_flavor("ferry-build-old", ignore_missing=True)
        if made is not None:
            admin.compute.delete_flavor(made)
