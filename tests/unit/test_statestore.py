"""The SQLite state store: lineage and serial, one transaction per write, the lock, and survival
of a process killed mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import StateError, StateLockedError
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore


def record(address: str, **attrs: object) -> ResourceRecord:
    return ResourceRecord(address, "volume", Status.READY, attrs)


def test_lineage_is_stable_and_serial_bumps_per_write(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.db")
    first = store.read()
    assert (first.serial, first.resources) == (0, {})
    assert store.write([record("vm.a.disk[2000]", size=1)], []) == 1
    assert store.write([record("vm.a.disk[2000]", size=2)], ["vm.nope"]) == 2
    again = SqliteStateStore(tmp_path / "s.db").read()
    assert again.lineage == first.lineage and again.serial == 2
    assert again.resources["vm.a.disk[2000]"].attributes == {"size": 2}


def test_missing_state_is_an_error_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state"):
        SqliteStateStore(tmp_path / "none.db", create=False)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer than this ferry"):
        SqliteStateStore(tmp_path / "s.db")


HOLD = """
import sys, time
from pathlib import Path
from engine.statestore.sqlite import SqliteStateStore
store = SqliteStateStore(Path(sys.argv[1]))
store.acquire("apply")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_held_by_a_live_process_fails_fast_naming_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "s.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store = SqliteStateStore(tmp_path / "s.db")
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            store.acquire("plan")
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and is taken over.
    assert SqliteStateStore(tmp_path / "s.db").acquire("plan").pid == os.getpid()


def test_force_unlock(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.db")
    assert store.force_unlock() is None
    store.acquire("apply")
    removed = store.force_unlock()
    assert removed is not None and removed.pid == os.getpid()
    assert store.read().lock is None


WRITER = """
import sys
from pathlib import Path
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
store = SqliteStateStore(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    attrs = {"i": i, "pad": "x" * 2000}
    store.write([ResourceRecord(f"vm.a.disk[{n}]", "volume", Status.IN_PROGRESS, attrs)
                 for n in range(20)], [])
"""


def test_kill_9_mid_writes_leaves_a_consistent_state(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStateStore(path).close()
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        time.sleep(0.7)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        state = SqliteStateStore(path).read()
        values = {r.attributes["i"] for r in state.resources.values()}
        assert len(values) == 1, "a write is one transaction: all 20 rows from the same write"
        assert state.serial >= next(iter(values))


def ferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_state_cli(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStateStore(path)
    store.write([record('vm["Reporting Ünit 1"].disk[2000]', size=1)], [])
    listed = ferry("state", "list", "--state", str(path))
    assert listed.returncode == 0 and 'vm["Reporting Ünit 1"].disk[2000]' in listed.stdout
    shown = ferry("state", "show", 'vm["Reporting Ünit 1"].disk[2000]', "--state", str(path))
    assert shown.returncode == 0 and '"size": 1' in shown.stdout
    missing = ferry("state", "show", "vm.nope", "--state", str(path))
    assert missing.returncode == 1 and missing.stderr == "error: vm.nope is not in the state\n"
    bad = ferry("state", "show", "vm..x", "--state", str(path))
    assert bad.returncode == 1 and "not an address" in bad.stderr
    store.acquire("apply")
    unlocked = ferry("state", "unlock", "--state", str(path))
    assert unlocked.returncode == 0 and "removed the lock" in unlocked.stdout
    none = ferry("state", "list", "--state", str(tmp_path / "absent.db"))
    assert none.returncode == 1 and "no state at" in none.stderr
    assert not (tmp_path / "absent.db").exists()
