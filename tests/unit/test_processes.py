from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.lab.processes import ProcessRecord, is_running, spawn, stop
from engine.proc import start_time


def test_start_time_of_self_and_of_nothing() -> None:
    assert isinstance(start_time(os.getpid()), int)
    assert start_time(2**22 + 12345) is None


def test_spawn_and_stop_by_pid(tmp_path: Path) -> None:
    record = spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log"
    )
    assert is_running(record)
    stop(record, timeout=5)
    assert not is_running(record)


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = start_time(proc.pid)
        assert started is not None
        stale = ProcessRecord("stale", proc.pid, started - 1, str(tmp_path / "log"))
        assert not is_running(stale)
        stop(stale, timeout=1)  # must not signal a process that is not the recorded one
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
