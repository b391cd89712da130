"""Lab disk bytes: snapshots freeze what nbdkit serves (read through real libnbd), guest writes go
to the live disk; `ferry lab` bad input is a one-line error that changes nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbd
import pytest
from pyVmomi import vim

from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer
from engine.errors import DataplaneError
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.snapshots import create_snapshot, remove_snapshot

pytestmark = pytest.mark.lab


def vm_ref(si: Any, name: str) -> Any:
    return next(
        o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == name
    )


def read_nbd(uri: str, offset: int, length: int) -> bytes:
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        return bytes(h.pread(length, offset))
    finally:
        h.shutdown()


def read_file(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture
def web01_snapshot(si: Any) -> Iterator[Any]:
    snap = create_snapshot(si, vm_ref(si, "web01"), "nbd-test")
    yield snap
    remove_snapshot(si, snap)


def test_snapshot_served_over_nbd_keeps_frozen_bytes(lab: Lab, web01_snapshot: Any) -> None:
    lab_vm = find_vm("web01")
    assert lab_vm is not None
    frozen = lab_disks.snapshot_path(lab.disks, lab_vm, web01_snapshot._moId, 2000)
    live = lab_disks.live_path(lab.disks, lab_vm, 2000)
    offset, length = 5 * 1024 * 1024, 1024 * 1024
    before = read_file(live, offset, length)
    with NbdkitServer(FileDiskSource(frozen)) as server:
        assert oct(os.stat(server.socket.parent).st_mode & 0o777) == "0o700"
        lab.write("web01", 2000, offset, length, seed=7)
        after = read_file(live, offset, length)
        assert after == lab_disks.pattern(7, length) and after != before
        assert read_nbd(server.uri, offset, length) == before
        h = nbd.NBD()
        h.connect_uri(server.uri)
        try:
            assert h.get_size() == lab_vm.disks[0].capacity
            assert h.is_read_only()
        finally:
            h.shutdown()
    assert not server.socket.parent.exists(), "the private socket directory is removed on stop"


def test_whole_snapshot_digest_over_nbd_equals_frozen_file(lab: Lab, web01_snapshot: Any) -> None:
    lab_vm = find_vm("web01")
    assert lab_vm is not None
    frozen = lab_disks.snapshot_path(lab.disks, lab_vm, web01_snapshot._moId, 2001)
    with NbdkitServer(FileDiskSource(frozen)) as server:
        h = nbd.NBD()
        h.connect_uri(server.uri)
        size, step, digest = h.get_size(), 4 * 1024 * 1024, hashlib.sha256()
        for off in range(0, size, step):
            digest.update(h.pread(min(step, size - off), off))
        h.shutdown()
    want = hashlib.sha256(frozen.read_bytes()).hexdigest()
    assert digest.hexdigest() == want


def test_nbdkit_failing_to_start_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataplaneError, match="does not exist"):
        NbdkitServer(FileDiskSource(tmp_path / "missing.raw")).start()
    not_a_disk = tmp_path / "dir.raw"
    not_a_disk.mkdir()
    with pytest.raises(DataplaneError):
        NbdkitServer(FileDiskSource(not_a_disk)).start()


def ferry(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, "--dir", str(lab.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--disk", "2000", "--offset", "0", "--length", "1"], "no lab VM named 'nope'"),
        (["web01", "--disk", "2009", "--offset", "0", "--length", "1"], "has no disk 2009"),
        (["web01", "--disk", "2000", "--offset", "2G", "--length", "1"], "outside disk 2000"),
        (["web01", "--disk", "2000", "--offset", "0", "--length", "0"], "length must be positive"),
        (["web01", "--disk", "2000", "--offset", "1x", "--length", "1"], "not a size"),
    ],
)
def test_lab_write_bad_input_is_one_line_and_changes_nothing(
    lab: Lab, args: list[str], message: str
) -> None:
    lab_vm = find_vm("web01")
    assert lab_vm is not None
    journals = {
        d.key: lab_disks.journal_path(lab.disks, lab_vm, d.key).read_text() for d in lab_vm.disks
    }
    done = ferry(lab, "lab", "write", *args)
    assert done.returncode == 1
    assert (
        done.stderr.count("\n") == 1
        and done.stderr.startswith("error: ")
        and message in done.stderr
    )
    assert "Traceback" not in done.stderr
    assert journals == {
        d.key: lab_disks.journal_path(lab.disks, lab_vm, d.key).read_text() for d in lab_vm.disks
    }


def test_lab_write_through_the_cli(lab: Lab) -> None:
    lab_vm = find_vm("db01")
    assert lab_vm is not None
    done = ferry(
        lab,
        "lab",
        "write",
        "db01",
        "--disk",
        "2001",
        "--offset",
        "1M",
        "--length",
        "64K",
        "--seed",
        "3",
    )
    assert done.returncode == 0, done.stderr
    assert read_file(
        lab_disks.live_path(lab.disks, lab_vm, 2001), 1024 * 1024, 65536
    ) == lab_disks.pattern(3, 65536)
    assert (
        lab_disks.journal_path(lab.disks, lab_vm, 2001).read_text().splitlines()[-1]
        == f"{1024 * 1024} 65536"
    )


def test_lab_up_when_up_and_down_when_down_are_errors(lab: Lab, tmp_path: Path) -> None:
    done = ferry(lab, "lab", "up")
    assert done.returncode == 1 and "already up" in done.stderr and done.stderr.count("\n") == 1
    assert lab.status()[0].up, "a refused `up` must leave the running lab alone"
    empty = Lab(tmp_path / "never-started")
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lab", "down", "--dir", str(empty.root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "is not up" in done.stderr


def test_status_and_env(lab: Lab) -> None:
    done = ferry(lab, "lab", "status", "--json")
    assert done.returncode == 0, done.stderr
    assert '"up": true' in done.stdout
    env = ferry(lab, "lab", "env")
    assert f"export FERRY_VCENTER_PASSWORD_FILE={lab.vcenter_files.password}" in env.stdout
    assert lab.vcenter_files.password.read_text().strip() not in env.stdout
    assert oct(lab.vcenter_files.password.stat().st_mode & 0o777) == "0o600"


def test_password_is_not_on_any_argv(lab: Lab) -> None:
    password = lab.vcenter_files.password.read_text().strip()
    for record in lab.processes():
        argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().decode(errors="replace")
        assert password not in argv, record.name
        assert password not in Path(record.log).read_text(errors="replace")
