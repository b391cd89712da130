"""`ferry apply` (replication) on the lab: a VM's disks land byte-exact in Cinder volumes through
the conversion host; after guest writes a re-apply copies exactly the changed bytes and advances
the changeId; a stale saved plan is refused."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.dataplane.cbt import merge_extents, total_bytes
from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.openstack import volumes
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.snapshots import create_snapshot, remove_snapshot, snapshot_disks
from engine.units import human
from tests.integration.cli import ROOT, ferry, file_reader
from tests.integration.converge import data_after, records, volume_file

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2


APPLY_WEB01 = ("apply", "plans/demo.yaml", "--target", "vm.web01", "--auto-approve")


def apply_web01(lab: Lab, state: Path) -> subprocess.CompletedProcess[str]:
    done = ferry(lab, *APPLY_WEB01, "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def assert_exact(lab: Lab, state: Path) -> dict[str, Any]:
    vm = find_vm("web01")
    assert vm is not None
    found = records(state)
    for disk in vm.disks:
        attrs = found[f"vm.web01.disk[{disk.key}]"]
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        volume = file_digest(volume_file(lab, attrs["volume_id"]), disk.capacity)
        assert volume == file_digest(live)
        assert attrs["last_sync"]["sha256"] == volume  # the demo spec verifies every copy
    return found


def test_replicate_then_delta_syncs_are_exact(lab: Lab, si: Any, tmp_path: Path) -> None:
    state = tmp_path / "ferry.db"
    apply_web01(lab, state)
    first = assert_exact(lab, state)
    conn = lab.openstack("ferry-lab")
    for key in (2000, 2001):
        volume = conn.block_storage.get_volume(first[f"vm.web01.disk[{key}]"]["volume_id"])
        assert volume.metadata["ferry_disk"] == str(key)
        assert volume.metadata["ferry_vm"] == find_vm("web01").instance_uuid  # type: ignore[union-attr]
        assert volume.metadata["ferry_change_id"] == first[f"vm.web01.disk[{key}]"]["change_id"]
    vm_snapshots = [s for s in lab_disks.vm_dir(lab.disks, find_vm("web01")).glob("snapshots/*")]  # type: ignore[arg-type]
    assert vm_snapshots == [], "apply removes its snapshot"

    rng = random.Random(5)
    previous = first
    for cycle in range(3):
        writes = []
        for _ in range(1000 if cycle == 0 else 200):
            length = rng.choice([512, 4096, 65536, 300_000])
            offset = rng.randrange(0, 2048 * MiB - length)
            lab.write("web01", 2000, offset, length)
            writes.append((offset, length))
        apply_web01(lab, state)
        now = assert_exact(lab, state)
        sync = now["vm.web01.disk[2000]"]["last_sync"]
        assert sync["kind"] == "delta"
        assert sync["bytes"] == total_bytes(merge_extents(writes)), "bytes copied = bytes changed"
        # web01 runs: its unwritten disk is synced too, a delta of 0 bytes at the same changeId
        unwritten = now["vm.web01.disk[2001]"]
        assert unwritten["change_id"] == first["vm.web01.disk[2001]"]["change_id"]
        assert unwritten["volume_id"] == first["vm.web01.disk[2001]"]["volume_id"]
        assert (unwritten["last_sync"]["kind"], unwritten["last_sync"]["bytes"]) == ("delta", 0)
        old, new = (
            previous["vm.web01.disk[2000]"]["change_id"],
            now["vm.web01.disk[2000]"]["change_id"],
        )
        assert old.rsplit("/", 1)[0] == new.rsplit("/", 1)[0]
        assert int(new.rsplit("/", 1)[1]) > int(old.rsplit("/", 1)[1]), "the changeId advanced"
        previous = now


def test_a_stale_saved_plan_is_refused(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "ferry.db"
    saved = tmp_path / "p.plan"
    done = ferry(
        lab,
        "plan",
        "plans/demo.yaml",
        "--target",
        "vm.build-old",
        "--out",
        str(saved),
        "--state",
        str(state),
    )
    assert done.returncode == 0, done.stderr
    assert lab.vcenter_files.password.read_text().strip() not in saved.read_text()
    done = ferry(
        lab,
        "apply",
        "plans/demo.yaml",
        "--target",
        "vm.build-old",
        "--auto-approve",
        "--state",
        str(state),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    stale = ferry(lab, "apply", str(saved), "--state", str(state))
    assert stale.returncode == 1 and "the state changed since this plan was made" in stale.stderr
    assert "Traceback" not in stale.stderr
    # break-it 12e item 3: a saved --destroy, then another state takes the volumes over with
    # --adopt-lineage (the serial of this state does not move): refused whole, nothing deleted
    # (it deleted the other state's replica, exit 0)
    destroy = tmp_path / "d.plan"
    args = ("plans/demo.yaml", "--target", "vm.build-old")
    done = ferry(lab, "plan", *args, "--destroy", "--out", str(destroy), "--state", str(state))
    assert done.returncode == 0, done.stderr
    listed = ferry(lab, "state", "list", "--state", str(state))
    listed_text = listed.stdout + listed.stderr  # the "# lineage" header goes to stderr
    lineage = re.search(r"^# lineage ([^,]+),", listed_text, re.M)
    assert lineage is not None, listed_text
    other = str(tmp_path / "other.db")
    adopt = ("--adopt-lineage", lineage.group(1))
    done = ferry(lab, "apply", *args, "--auto-approve", "--state", other, *adopt)
    assert done.returncode == 0 and "adopted volume" in done.stdout, done.stdout + done.stderr
    refused = ferry(lab, "apply", str(destroy), "--state", str(state))
    assert refused.returncode == 1, refused.stdout
    assert "the plan is stale: vm.build-old.disk[" in refused.stderr
    assert "nothing applied" in refused.stderr and "Traceback" not in refused.stderr


def test_kill_9_during_a_delta_then_rerun_is_exact(lab: Lab, tmp_path: Path) -> None:
    state = tmp_path / "ferry.db"
    apply_web01(lab, state)
    before = records(state)["vm.web01.disk[2000]"]
    writes = [(i * 24 * MiB, 4 * MiB) for i in range(80)]  # 320 MiB of new data
    for offset, length in writes:
        lab.write("web01", 2000, offset, length)
    env = {**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"}
    lab.read_delay("web01", 2000, 200)  # the delta lasts past a few checkpoints (2 s each)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            *APPLY_WEB01,
            "--state",
            str(state),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip().startswith("vm.web01: snapshot"):
            break
    deadline = time.monotonic() + 60
    try:  # the delta has begun and its checkpoint passed 64 MiB
        while int(records(state)["vm.web01.disk[2000]"].get("copied_bytes") or 0) < 64 * MiB:
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint came"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
        lab.read_errors("web01", 2000, None)  # clears every fault of the disk
    killed = records(state)["vm.web01.disk[2000]"]
    assert killed["copy"] == "delta", "killed during the delta (its record is in progress)"
    assert killed["change_id"] == before["change_id"], "the changeId did not advance early"
    mark = int(killed["copied_bytes"])
    conn = lab.openstack("ferry-lab")
    meta = conn.block_storage.get_volume(before["volume_id"]).metadata
    assert meta["ferry_change_id"] == before["change_id"]
    # the guest writes below the checkpoint and above it before the re-run (the resumed delta
    # rewrites what changed since the killed one's snapshot, then goes on from its checkpoint)
    lab.write("web01", 2000, 0, MiB, seed=7)
    lab.write("web01", 2000, mark + 2 * MiB, MiB, seed=8)
    done = apply_web01(lab, state)  # the volume a killed apply left attached is reused
    after = assert_exact(lab, state)["vm.web01.disk[2000]"]
    assert after["last_sync"]["kind"] == "delta"
    assert "the interrupted delta resumes at" in done.stdout, done.stdout
    whole = total_bytes(merge_extents([*writes, (0, MiB), (mark + 2 * MiB, MiB)]))
    assert after["last_sync"]["bytes"] < whole, "the resumed delta did not start from 0"
    assert int(after["change_id"].rsplit("/", 1)[1]) > int(before["change_id"].rsplit("/", 1)[1])


def test_a_volume_os_migrate_left_is_adopted_and_synced_by_delta(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """os-migrate's vmware-migration-kit copied the disk at a snapshot and stored the changeId in
    its own keys; ferry adopts that volume (no full copy) and syncs the delta since then. The VM
    has `verify: changed`: the delta is verified over the 2 MiB it copied, not the whole disk."""
    vm = find_vm("Reporting Ünit 1")
    assert vm is not None
    ref = next(
        o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == vm.name
    )
    snapshot = create_snapshot(si, ref, "osm-snap")
    (disk,) = snapshot_disks(si, snapshot)
    conn = lab.openstack("ferry-lab")
    volume = volumes.create_volume(
        conn,
        "Reporting_Unit_1-2000",
        1,
        "localds-0",
        {"osm": "true", "changeID": disk.change_id or "", "converted": "false"},
    )
    volume_file(lab, volume.id).write_bytes(
        lab_disks.snapshot_path(lab.disks, vm, snapshot._moId, 2000).read_bytes()
    )
    remove_snapshot(si, snapshot)
    lab.write(vm.name, 2000, 5 * MiB, 2 * MiB)
    state = tmp_path / "ferry.db"
    target = 'vm["Reporting Ünit 1"]'
    # the file reader: Reporting Ünit 1 keeps a snapshot of its own, which the https reader refuses
    text = file_reader((ROOT / "plans" / "demo.yaml").read_text())
    entry = next(line for line in text.splitlines(True) if "- name: Reporting Ünit 1" in line)
    spec = tmp_path / "changed.yaml"
    spec.write_text(text.replace(entry, entry + "    verify: changed\n"))
    first = ferry(
        lab, "apply", str(spec), "--target", target, "--auto-approve", "--state", str(state)
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"adopted volume {volume.id}" in first.stdout
    assert records(state)[f"{target}.disk[2000]"]["change_id"] == disk.change_id
    second = ferry(
        lab, "apply", str(spec), "--target", target, "--auto-approve", "--state", str(state)
    )
    assert second.returncode == 0, second.stdout + second.stderr
    synced = records(state)[f"{target}.disk[2000]"]
    assert synced["last_sync"] == {**synced["last_sync"], "kind": "delta", "bytes": 2 * MiB}
    live = lab_disks.live_path(lab.disks, vm, 2000)
    assert file_digest(volume_file(lab, volume.id), 1024**3) == file_digest(live)
    copied = file_digest(volume_file(lab, volume.id), areas=[(5 * MiB, 2 * MiB)])
    assert synced["last_sync"]["verified"] == "changed areas"
    assert synced["last_sync"]["sha256"] == copied
    assert conn.block_storage.get_volume(volume.id).metadata["ferry_vm"] == vm.instance_uuid


def test_json_events_stream_for_ci_logs(lab: Lab, tmp_path: Path) -> None:
    """`apply --json`: stdout is JSON lines only — start, every node framed, copy progress, end —
    the same events land in state/logs/apply-*.jsonl, and none holds the vCenter password."""
    state = tmp_path / "ferry.db"
    spec = tmp_path / "one-read.yaml"  # web01's two disks live on one ESXi host: one at a time
    spec.write_text(
        (ROOT / "plans" / "demo.yaml")
        .read_text()
        .replace("    datacenter: DC0", "    datacenter: DC0\n    reads_per_esxi_host: 1")
    )
    apply_web01_json = ("apply", str(spec), *APPLY_WEB01[2:], "--state", str(state), "--json")
    done = ferry(lab, *apply_web01_json)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    framing = [e for e in events if e["event"] in ("node_start", "copy_written", "node_end")]
    disks = [e["event"] for e in framing if ".disk[" in e["address"]]
    reads = [e for e in disks if e != "node_end"]  # a disk's slot goes back once it is written
    assert reads == ["node_start", "copy_written"] * 2, "two disks read at once from one host"
    assert disks.count("node_end") == 2
    kinds = [e["event"] for e in events]
    assert kinds[0] == "apply_start" and kinds[-1] == "apply_end" and events[-1]["ok"] is True
    started = {e["address"] for e in events if e["event"] == "node_start"}
    ended = {e["address"] for e in events if e["event"] == "node_end" and e["outcome"] == "done"}
    assert started == ended == {"vm.web01.snapshot", "vm.web01.disk[2000]", "vm.web01.disk[2001]"}
    copies = [e for e in events if e["event"] == "copy"]
    assert copies and all(0 <= e["done"] <= e["total"] for e in copies)
    assert {e["address"] for e in copies if e["done"] == e["total"]} == {
        "vm.web01.disk[2000]",
        "vm.web01.disk[2001]",
    }
    (log,) = (tmp_path / "logs").glob("apply-*.jsonl")
    assert [json.loads(line) for line in log.read_text().splitlines()] == events
    password = lab.vcenter_files.password.read_text().strip()
    assert password not in done.stdout and password not in log.read_text()
    for stored in tmp_path.glob("ferry.db*"):  # the state (and its WAL) holds no secret either
        assert password.encode() not in stored.read_bytes()
    again = ferry(lab, *apply_web01_json)  # web01 runs: a delta per disk, nothing written
    assert again.returncode == 0, again.stdout + again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert events[-1]["event"] == "apply_end" and events[-1]["ok"] is True
    synced = {e["address"]: (e["kind"], e["bytes"]) for e in events if e["event"] == "synced"}
    assert synced == {"vm.web01.disk[2000]": ("delta", 0), "vm.web01.disk[2001]": ("delta", 0)}


def test_read_errors_fail_only_their_disk_then_sporadic_ones_are_retried(
    lab: Lab, tmp_path: Path
) -> None:
    """A fault drill: every read of web01's second disk fails (EIO from nbdkit's error filter):
    that disk fails with a clear message, the first disk completes. Then 10 % of its reads fail:
    each is retried with backoff and the copy is exact.

    nbdkit's error filter seeds its generator with the time in seconds and its first draws are
    poorly mixed: over the ~21 reads of this disk's own data, 20 % injected no error at all in
    about one run in ten. 128 MiB more data (~85 reads) gave 5 or more retries in 60 of 60 runs."""
    state = tmp_path / "ferry.db"
    for i in range(2):
        lab.write("web01", 2001, 256 * MiB + i * 256 * MiB, 64 * MiB)
    lab.read_errors("web01", 2001, "100%")
    try:
        failed = ferry(lab, *APPLY_WEB01, "--state", str(state))
        assert failed.returncode == 1
        assert "failed: vm.web01.disk[2001]" in failed.stdout
        assert "failed after 6 attempts: Input/output error" in failed.stdout
        found = records(state)
        assert "last_sync" in found["vm.web01.disk[2000]"]  # the other disk finished
        assert "last_sync" not in found["vm.web01.disk[2001]"]
        lab.read_errors("web01", 2001, "10%")
        apply_web01(lab, state)
    finally:
        lab.read_errors("web01", 2001, None)
    synced = assert_exact(lab, state)["vm.web01.disk[2001]"]["last_sync"]
    assert synced["retries"] > 0


def test_sigint_stops_the_copy_at_a_flushed_checkpoint_and_the_next_apply_resumes(
    lab: Lab, tmp_path: Path
) -> None:
    """Ctrl-C mid copy: no new step starts, the running copy writes its reads in flight,
    flushes, records where it got to, detaches its volume; ferry exits 130 within seconds. The
    next plan says it resumes, and the next apply reads only what lies beyond the checkpoint."""
    state = tmp_path / "ferry.db"
    for i in range(4):  # 256 MiB more data, so the copy lasts beyond its first checkpoint (2 s)
        lab.write("web01", 2000, 1024 * MiB + i * 128 * MiB, 64 * MiB)
    lab.read_delay("web01", 2000, 1000)  # ~32 reads a second: a copy of several seconds
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *APPLY_WEB01, "--state", str(state), "--json"],
            cwd=ROOT,
            env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal's job
        )
        deadline = time.monotonic() + 120
        while not (state.exists() and checkpoint(state) > 0):  # the copy is under way
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
        seconds = time.monotonic() - stopped_at
    finally:
        lab.read_errors("web01", 2000, None)
    assert proc.returncode == 130, out + err
    # the reads in flight (1 s each here), the flush, the detach: seconds; 15.4 s once at load
    # 10-12 (four labs on 2 cores), so the bound only catches a copy that does not stop
    assert seconds < 30, f"ferry took {seconds:.1f} s to stop"
    assert "Traceback" not in err and "stopped: vm.web01.disk[2000]" in err, err
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "stopping" and e["signal"] == "SIGINT" for e in events)
    record = records(state)["vm.web01.disk[2000]"]
    mark = int(record["copied_bytes"])
    assert record["copy"] == "full" and "last_sync" not in record and mark > 0
    conn = lab.openstack("ferry-lab")
    assert conn.block_storage.get_volume(record["volume_id"]).status == "available"
    vm = find_vm("web01")
    assert vm is not None
    live = lab_disks.live_path(lab.disks, vm, 2000)
    with live.open("rb") as a, volume_file(lab, record["volume_id"]).open("rb") as b:
        assert a.read(mark) == b.read(mark), "the checkpoint covers bytes not written"

    plan = ferry(lab, "plan", "plans/demo.yaml", "--target", "vm.web01", "--state", str(state))
    said = " ".join(plan.stdout.split())
    assert f"resume the interrupted copy ({human(mark)} already written)" in said, plan.stdout
    apply_web01(lab, state)
    synced = assert_exact(lab, state)["vm.web01.disk[2000]"]["last_sync"]
    assert 0 < synced["bytes"] <= data_after(live, mark) + 2 * MiB
    print(f"stopped in {seconds:.1f} s at {mark} bytes; the resumed copy read {synced['bytes']}")


def checkpoint(state: Path) -> int:
    return int(records(state).get("vm.web01.disk[2000]", {}).get("copied_bytes", 0))


def test_a_host_that_cannot_read_disks_fails_before_touching_anything(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    """Production reads disks through nbdkit's vddk plugin; on a host where it cannot load VDDK
    (here: Debian's nbdkit, which has no vddk plugin) the apply stops at once with what to do:
    no snapshot taken, no volume made, nothing recorded."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    assert "  lab_dir: ${FERRY_LAB_DIR}" in text and "  reader: https" in text
    text = re.sub(r"^  (lab_dir|reader): .*\n", "", text, flags=re.M).replace(
        "    datacenter: DC0", f"    datacenter: DC0\n    vddk_libdir: {tmp_path / 'vddk'}"
    )  # vddk_libdir without a source.reader: the vddk reader
    spec = tmp_path / "vddk.yaml"
    spec.write_text(text)
    state = tmp_path / "ferry.db"
    before = snapshots_of(si, "web01")
    done = ferry(lab, "apply", str(spec), "--target", "vm.web01", "--auto-approve",
                 "--state", str(state))  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    assert "cannot read disks through VDDK" in done.stderr and "nothing was changed" in done.stderr
    assert not [a for a in records(state) if a.startswith("vm.web01")] if state.exists() else True
    assert snapshots_of(si, "web01") == before, "a snapshot was taken"


def snapshots_of(si: Any, name: str) -> list[str]:
    """The names of a VM's snapshots, depth first."""
    (vm,) = [o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == name]
    todo, names = list(vm.snapshot.rootSnapshotList if vm.snapshot else []), []
    while todo:
        snap = todo.pop()
        names.append(snap.name)
        todo += snap.childSnapshotList
    return sorted(names)


def test_a_conversion_host_the_spec_asks_for_is_booted_first(lab: Lab, tmp_path: Path) -> None:
    """The pre-migration phase: conv-02 does not exist; apply boots it (image, flavor, network,
    a security group with SSH from one CIDR), then copies onto it; a second plan is all no-op;
    --destroy would delete it."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    hosts = text[text.index("conversion_hosts:") : text.index("\ndefaults:")]
    made = (
        "conversion_hosts:\n  - name: ferry-conv-02\n    max_parallel: 1\n"
        "    devices: connection-info\n    create:\n      image: ferry-lab-conversion\n"
        "      flavor: ferry.conversion\n      network: lab-vm-network\n"
        "      ssh_from: 192.0.2.0/24\n"
    )
    spec = tmp_path / "host.yaml"
    spec.write_text(text.replace(hosts, made).split("\nvms:")[0] + "\nvms:\n  - name: build-old\n")
    state = tmp_path / "ferry.db"
    plan = ferry(lab, "plan", str(spec), "--json", "--state", str(state))
    edges = json.loads(plan.stdout)["graph"]["edges"]
    assert ["host.ferry-conv-02", "vm.build-old.snapshot"] in edges
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    conn = lab.openstack("ferry-lab")
    host = conn.compute.find_server("ferry-conv-02")
    assert host is not None and host.status == "ACTIVE"
    volume = conn.block_storage.get_volume(records(state)["vm.build-old.disk[2000]"]["volume_id"])
    assert volume.status == "available"  # written on conv-02, detached after
    group = conn.network.find_security_group("ferry-conv-02-ssh")
    rules = [
        (r.protocol, r.port_range_min, r.remote_ip_prefix)
        for r in conn.network.security_group_rules(security_group_id=group.id)
        if r.direction == "ingress"
    ]
    assert ("tcp", 22, "192.0.2.0/24") in rules
    again = ferry(lab, "plan", str(spec), "--detailed-exitcode", "--state", str(state))
    assert again.returncode == 0, again.stdout
    destroy = ferry(lab, "plan", str(spec), "--destroy", "--json", "--state", str(state))
    assert "host.ferry-conv-02" in {c["address"] for c in json.loads(destroy.stdout)["changes"]}
