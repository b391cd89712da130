"""A killed ferry's nbdkit private directories (with a vCenter session cookie or a password
file) are removed by the next ferry that starts an nbdkit (break-it 15: kill -9 left live
session cookies in /tmp); a live one's, or one being set up, stays. Real directories."""

from __future__ import annotations

import os
from pathlib import Path

from engine.dataplane.nbdkit import STALE_AFTER, sweep_stale


def _private(root: Path, name: str, pid: int | None, age: float) -> Path:
    path = root / f"ferry-nbd-{name}"
    path.mkdir(mode=0o700)
    (path / "cookie").write_text("vmware_soap_session=secret\n")
    if pid is not None:
        (path / "nbdkit.pid").write_text(f"{pid}\n")
    os.utime(path, (1e9 - age, 1e9 - age))
    return path


def test_only_a_dead_ferrys_old_directories_go(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above pid_max's default: no such process
    killed = _private(tmp_path, "killed", dead, STALE_AFTER + 60)
    alive = _private(tmp_path, "alive", os.getpid(), STALE_AFTER + 60)
    young = _private(tmp_path, "young", None, 5)
    unstarted = _private(tmp_path, "unstarted", None, STALE_AFTER + 60)
    other = tmp_path / "not-ferrys"
    other.mkdir()
    os.utime(other, (1, 1))
    gone = sweep_stale(tmp_path, now=1e9)
    assert sorted(gone) == sorted([killed, unstarted])
    assert not killed.exists() and alive.exists() and young.exists() and other.exists()
