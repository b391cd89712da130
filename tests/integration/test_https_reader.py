"""The https reader (issue 15): disks read over vCenter's datastore file access (/folder) by
nbdkit's curl plugin with the SOAP session's cookie, TLS verified against the spec's CA.

The lab's vCenter serves a disk's base extent there (engine/lab/vcsim/ferry_folder.go): the
frozen copy of the VM's oldest snapshot while it has one, else the live disk. One cheap test
reads it directly (401, ranges, frozen under guest writes, no cookie on argv, a wrong CA, the
speed against the file reader); one replicates web01 through it, a full copy (one disk's extent
named otherwise than its descriptor: found in layoutEx) and a delta."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from engine.dataplane import nbd as nbd_client
from engine.dataplane.cbt import merge_extents
from engine.dataplane.copy import CopyOptions, copy, file_digest
from engine.dataplane.nbdkit import FileDiskSource, HttpsDiskSource, NbdkitServer
from engine.errors import DataplaneError
from engine.executor.seams import HttpsSources, datacenter_path, folder_url
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.session import connect, session, session_cookie, target_from_env
from engine.providers.vsphere.snapshots import DiskInfo, parse_disks, vm_extent
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ferry
from tests.integration.converge import records, volume_file
from tests.integration.test_fault_drills import spec_for

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
MiB = 1024**2


def _get(url: str, cafile: Path, cookie: str | None, tmp: Path, ranges: str = "") -> list[str]:
    """curl's status line and headers for GET `url` (the cookie from a 0600 header file)."""
    args = ["curl", "-s", "-o", "/dev/null", "-D", "-", "--cacert", str(cafile), url]
    if ranges:
        args += ["-r", ranges]
    if cookie:
        header = tmp / "cookie.hdr"
        header.touch(0o600)
        header.write_text(f"Cookie: {cookie}")
        args += ["-H", f"@{header}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return [line.strip().lower() for line in done.stdout.splitlines() if line.strip()]


def _copy_seconds(source: FileDiskSource | HttpsDiskSource, areas: list[tuple[int, int]],
                  out: Path) -> tuple[float, str]:  # fmt: skip
    """Seconds to copy `areas` of `source` into a new file `out`, and the sha256 of its areas."""
    out.unlink(missing_ok=True)
    with NbdkitServer(source) as server:
        with nbd_client.connect(server.uri) as handle:
            size = int(handle.get_size())
        with out.open("wb") as f:
            f.truncate(size)
        began = time.monotonic()
        copy(server.uri, out, areas, CopyOptions(dst_is_zero=True))
        seconds = time.monotonic() - began
    return seconds, _areas_digest(out, areas)


def _assert_no_cookie_on_argv(source: HttpsDiskSource, cookie: str) -> None:
    """While nbdkit runs: its argv (/proc/<pid>/cmdline) names the cookie's 0600 file only
    (`cookie=+FILE`, or the cookie script that prints the file ferry keeps current)."""
    with NbdkitServer(source) as server:
        assert server.pid is not None
        argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        secret = cookie.split('"')[1]
        assert "curl" in argv and not any(secret in a for a in argv), argv
        cookie_file = next(
            Path(a.split("+", 1)[1] if a.startswith("cookie=+") else shlex.split(a)[-1])
            for a in argv
            if a.startswith(("cookie=+", "cookie-script="))
        )
        assert cookie_file.stat().st_mode & 0o777 == 0o600
        assert cookie_file.read_text() == cookie


def _areas_digest(path: Path, areas: list[tuple[int, int]]) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for offset, length in areas:
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()


def _other_ca(tmp_path: Path) -> Path:
    """A self-signed certificate that did not sign the lab vCenter's."""
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(other_ca), "-days", "1",
         "-subj", "/CN=not-the-lab"],
        check=True, capture_output=True,
    )  # fmt: skip
    return other_ca


def test_folder_serves_the_frozen_base_extent(lab: Lab, tmp_path: Path) -> None:
    """web01 disk 2001 (1 GiB, thin) with a snapshot taken here: /folder answers 401 without the
    session cookie, 206 with Content-Range to a range request, 404 for a dcPath other than the
    datacenter's inventory path (break-it 15b N5: any path ending in /DC0 was served); a guest
    write after the snapshot leaves the served extent equal to the snapshot's frozen copy;
    nbdkit's curl plugin reads it with the cookie on no argv, and refuses a server the CA does
    not vouch for."""
    target = target_from_env(lab.env())
    assert target.cafile is not None
    si = connect(target)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vm = next(v for v in view.view if v.name == "web01")
    lab_vm = find_vm("web01")
    assert lab_vm is not None
    disk = next(d for d in parse_disks(vm.config.hardware.device) if d.key == 2001)
    url = folder_url(target, datacenter_path(vm), vm_extent(si, vm, disk.file_name))
    assert url.endswith("/folder/web01/web01_1-flat.vmdk?dcPath=DC0&dsName=LocalDS_1"), url
    cookie = session_cookie(si)

    assert _get(url, target.cafile, None, tmp_path)[0].startswith("http/1.1 401")
    wrong = 'vmware_soap_session="00000000-0000-0000-0000-000000000000"'
    assert _get(url, target.cafile, wrong, tmp_path)[0].startswith("http/1.1 401")
    head = _get(url, target.cafile, cookie, tmp_path, ranges="1048576-2097151")
    assert head[0].startswith("http/1.1 206"), head
    assert f"content-range: bytes 1048576-2097151/{disk.capacity}" in head, head
    for elsewhere in ("DC9", "Wrong%2FPath%2FDC0"):  # DC0's inventory path only
        wrong_dc = url.replace("dcPath=DC0", f"dcPath={elsewhere}")
        assert _get(wrong_dc, target.cafile, cookie, tmp_path)[0].startswith("http/1.1 404")
    rooted = url.replace("dcPath=DC0", "dcPath=%2FDC0")  # as govmomi sends it (InventoryPath)
    assert _get(rooted, target.cafile, cookie, tmp_path, "0-0")[0].startswith("http/1.1 206")
    _probe_before_a_power_off(lab, si, vm, disk, tmp_path)

    task = vm.CreateSnapshot_Task("test-https-reader", "", False, False)
    snapshot = wait_task(si, task, "snapshot")
    try:
        frozen = lab_disks.snapshot_path(lab.disks, lab_vm, snapshot._moId, 2001)
        lab_disks.guest_write(lab.disks, lab_vm, 2001, 8 * MiB, MiB)  # lands on the live disk
        live = lab_disks.live_path(lab.disks, lab_vm, 2001)
        written = [(8 * MiB, MiB)]
        assert _areas_digest(live, written) != _areas_digest(frozen, written)
        areas = merge_extents([*lab_disks.data_extents(frozen), *written])  # the write's area too

        source = HttpsSources(target, si).source(vm._moId, "", snapshot._moId, disk)
        assert isinstance(source, HttpsDiskSource)
        _assert_no_cookie_on_argv(source, cookie)
        https_s, https_sha = _copy_seconds(source, areas, tmp_path / "https.raw")
        file_s, file_sha = _copy_seconds(FileDiskSource(frozen), areas, tmp_path / "file.raw")
        assert https_sha == file_sha == _areas_digest(frozen, areas)
        data = sum(n for _, n in areas)
        print(f"\n{data / MiB:.0f} MiB: https {https_s:.2f} s, file {file_s:.2f} s "
              f"(https/file {https_s / file_s:.1f}x)")  # fmt: skip

        other_ca = _other_ca(tmp_path)
        untrusted = HttpsDiskSource(source.url, source.cookie, other_ca)
        with pytest.raises(DataplaneError), NbdkitServer(untrusted) as server:
            copy(server.uri, tmp_path / "never.raw", [(0, MiB)], CopyOptions())
        # the write after the snapshot was not read
        assert _areas_digest(tmp_path / "https.raw", written) == _areas_digest(frozen, written)
    finally:
        wait_task(si, snapshot.RemoveSnapshot_Task(False), "snapshot removal")
        Disconnect(si)


def _probe_before_a_power_off(lab: Lab, si: Any, vm: Any, disk: DiskInfo, tmp: Path) -> None:
    """The cutover's probe (HttpsSources.probe, before the power-off; break-it 15 F9): a HEAD
    on the extent with the session's cookie passes; a CA that does not vouch for vCenter fails
    with a line naming the disk. (The lab's layoutEx lists only the files its /folder serves:
    a 404 or 403 there cannot be made without faking vCenter.)"""
    target = target_from_env(lab.env())
    HttpsSources(target, si).probe(vm._moId, [disk])
    untrusted = HttpsSources(replace(target, cafile=_other_ca(tmp)), si)
    with pytest.raises(DataplaneError, match=r"disk 2001: .*cannot be reached .*certificate"):
        untrusted.probe(vm._moId, [disk])


@contextmanager
def _extent_named(lab: Lab, vm_name: str, key: int, extent: str) -> Iterator[None]:
    """While in the block, the lab vCenter lists (layoutEx) and serves disk `key`'s flat extent
    as file `extent` in its descriptor's directory (extraConfig ferry.lab.extent.<key>)."""

    def reconfigure(value: str) -> None:
        with session(lab.vcenter_target()) as si:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.VirtualMachine], True
            )
            vm = next(v for v in view.view if v.name == vm_name)
            option = vim.option.OptionValue(key=f"ferry.lab.extent.{key}", value=value)
            spec = vim.vm.ConfigSpec(extraConfig=[option])
            wait_task(si, vm.ReconfigVM_Task(spec=spec), "extent name")

    reconfigure(extent)
    try:
        yield
    finally:
        reconfigure("")


def test_replicate_web01_through_https(lab: Lab, tmp_path: Path) -> None:
    """web01 (running, CBT on; 2 + 1 GiB thin) with `source.reader: https`: the plan says so,
    the log names the URLs read; a full copy of the allocated areas and, after a guest write, a
    delta leave both volumes equal to the disks (sha256 of both sides)."""
    spec = spec_for(tmp_path, "web01", "    verify: false\n")
    assert "  reader: https" in spec.read_text()  # the demo spec's reader
    wrong = tmp_path / "wrong-ca.yaml"
    ca = "ca_file: ${FERRY_VCENTER_CAFILE}"
    assert ca in spec.read_text()
    wrong.write_text(spec.read_text().replace(ca, f"ca_file: {_other_ca(tmp_path)}"))
    refused = ferry(lab, "apply", str(wrong), "--auto-approve", "--state", str(tmp_path / "w.db"))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stdout + refused.stderr
    assert "TLS verification of vCenter" in lines[0], lines
    assert not (tmp_path / "w.db").exists() and not refused.stdout.strip(), refused.stdout

    state = tmp_path / "ferry.db"
    vm = find_vm("web01")
    assert vm is not None
    # disk 2000's descriptor renamed by hand: its extent keeps an old name, which only layoutEx
    # tells (a reader guessing web01_0-flat.vmdk gets 404)
    with _extent_named(lab, "web01", 2000, "web01-old_0-flat.vmdk"):
        began = time.monotonic()
        done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
        assert done.returncode == 0, done.stdout + done.stderr
        full_s = time.monotonic() - began
    assert "disks read via https" in " ".join(done.stdout.split()), done.stdout  # its plan
    log = (tmp_path / "logs" / "web01.log").read_text()
    assert "disk[2000]: read from https https://127.0.0.1:" in log, log
    assert "/folder/web01/web01-old_0-flat.vmdk?dcPath=DC0&dsName=LocalDS_0" in log, log
    assert "/folder/web01/web01_1-flat.vmdk?dcPath=DC0&dsName=LocalDS_1" in log, log
    for disk in vm.disks:
        record = records(state)[f"vm.web01.disk[{disk.key}]"]
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        volume = volume_file(lab, record["volume_id"])
        assert file_digest(volume, disk.capacity) == file_digest(live), disk.key
        data = sum(n for _, n in lab_disks.data_extents(live))
        # HTTP has no block status: only what CBT lists as allocated ("*") is read
        assert record["last_sync"]["bytes"] <= data + 64 * MiB, record["last_sync"]

    lab_disks.guest_write(lab.disks, vm, 2000, 100 * MiB, 2 * MiB)
    began = time.monotonic()
    done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    delta_s = time.monotonic() - began
    record = records(state)["vm.web01.disk[2000]"]
    assert record["last_sync"]["kind"] == "delta", record["last_sync"]
    assert record["last_sync"]["bytes"] >= 2 * MiB, record["last_sync"]
    for disk in vm.disks:
        record = records(state)[f"vm.web01.disk[{disk.key}]"]
        live = lab_disks.live_path(lab.disks, vm, disk.key)
        volume = volume_file(lab, record["volume_id"])
        assert file_digest(volume, disk.capacity) == file_digest(live), disk.key
    print(f"\nfull apply {full_s:.1f} s, delta apply {delta_s:.1f} s")
