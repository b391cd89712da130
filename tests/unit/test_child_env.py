"""No secret ferry read from the environment reaches a process it starts (break-it 15c F-B: the
vCenter password of `password_env` was in /proc/PID/environ of every nbdkit of an apply, and of
virt-v2v and qemu-img by the same code). A real nbdkit (the file plugin on a small file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer
from engine.proc import SECRET_ENV, child_env
from engine.providers.vsphere.session import read_secret


def test_a_password_read_from_the_environment_is_kept_from_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_VC_PASSWORD", "s3cret-vc")
    monkeypatch.setenv("OS_PASSWORD", "s3cret-os")
    monkeypatch.setenv("FERRY_TEST_PLAIN", "kept")
    monkeypatch.setattr("engine.proc.SECRET_ENV", set(SECRET_ENV))
    env = {"MY_VC_PASSWORD": "s3cret-vc"}
    assert read_secret({"password_env": "MY_VC_PASSWORD"}, "vCenter", env) == "s3cret-vc"
    assert "MY_VC_PASSWORD" not in child_env() and "OS_PASSWORD" not in child_env()
    assert child_env()["FERRY_TEST_PLAIN"] == "kept"
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 65536)
    with NbdkitServer(FileDiskSource(disk)) as server:
        assert server.pid is not None
        environ = Path(f"/proc/{server.pid}/environ").read_bytes()
    assert b"s3cret" not in environ
    assert b"FERRY_TEST_PLAIN=kept" in environ  # the rest of the environment is passed on
