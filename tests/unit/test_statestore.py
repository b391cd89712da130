"""Both state stores (SQLite and a real PostgreSQL server) against one contract: lineage and
serial, one transaction per write, the lock (held by another live process → fails fast naming
it; holder killed → usable again), force-unlock, and survival of a process killed mid-write.
Then the CLI: `ferry state list|show|unlock|migrate`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from engine.errors import NoStateError, StateError, StateLockedError, UserError
from engine.model.state import ResourceRecord, Status
from engine.statestore import StateLocation, parse_ref, postgres_at, sqlite_at
from engine.statestore.sqlite import SqliteStateStore

Where = Callable[[], StateLocation]


def record(address: str, **attrs: object) -> ResourceRecord:
    return ResourceRecord(address, "volume", Status.READY, attrs)


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> StateLocation:
    """A fresh, empty state location of each backend (PostgreSQL: a schema of its own)."""
    if request.param == "sqlite":
        return sqlite_at(tmp_path / "s.db")
    dsn = request.getfixturevalue("postgres_dsn")
    return postgres_at(dsn, f"t_{uuid.uuid4().hex[:12]}")


def ref_env(location: StateLocation) -> tuple[str, dict[str, str]]:
    """How a child process names the same state: a path, or env:NAME with the DSN."""
    if location.path is not None:
        return str(location.path), dict(os.environ)
    return "env:FERRY_TEST_DSN", {**os.environ, "FERRY_TEST_DSN": location.dsn or ""}


def test_lineage_is_stable_and_serial_bumps_per_write(where: StateLocation) -> None:
    store = where.open()
    first = store.read()
    assert (first.serial, first.resources) == (0, {})
    assert store.write([record("vm.a.disk[2000]", size=1)], []) == 1
    assert store.write([record("vm.a.disk[2000]", size=2, name="Ünit")], ["vm.nope"]) == 2
    store.close()
    again = where.open(create=False).read()
    assert again.lineage == first.lineage and again.serial == 2
    assert again.resources["vm.a.disk[2000]"].attributes == {"size": 2, "name": "Ünit"}
    assert where.open().write([], ["vm.a.disk[2000]"]) == 3
    assert where.open().read().resources == {}


def test_missing_state_is_an_error_when_not_creating(where: StateLocation) -> None:
    with pytest.raises(NoStateError, match="no state"):
        where.open(create=False)
    if where.path is not None:
        assert not where.path.exists()


def test_newer_format_is_refused(where: StateLocation) -> None:
    where.open().close()
    if where.path is not None:
        db = sqlite3.connect(where.path)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
        db.commit()
        db.close()
    else:
        with psycopg.connect(where.dsn or "", autocommit=True) as conn:
            table = f"{where.schema}.meta"
            conn.execute(f"UPDATE {table} SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(StateError, match="newer than this ferry"):
        where.open()


HOLD = """
import os, sys, time
from engine.statestore import parse_ref
store = parse_ref(sys.argv[1], os.environ, sys.argv[2]).open()
store.acquire("apply")
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_held_by_a_live_process_fails_fast_naming_it(where: StateLocation) -> None:
    ref, env = ref_env(where)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, ref, where.schema], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store = where.open()
        began = time.monotonic()
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            store.acquire("plan")
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            store.check_unlocked()
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            store.force_unlock() if where.path is None else store.acquire("apply")
        assert time.monotonic() - began < 2.0
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (kill -9): the lock is usable again without anyone's help.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert where.open().acquire("plan").pid == os.getpid()
            break
        except StateLockedError:  # PostgreSQL notices the dead connection within moments
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_force_unlock(where: StateLocation) -> None:
    store = where.open()
    assert store.force_unlock() is None
    store.acquire("apply")
    removed = store.force_unlock()
    assert removed is not None and removed.pid == os.getpid()
    assert store.read().lock is None
    with store.locked("apply") as info:
        assert store.read().lock == info
    assert store.read().lock is None


WRITER = """
import os, sys
from engine.model.state import ResourceRecord, Status
from engine.statestore import parse_ref
store = parse_ref(sys.argv[1], os.environ, sys.argv[2]).open()
print("open", flush=True)
i = 0
while True:
    i += 1
    attrs = {"i": i, "pad": "x" * 2000}
    store.write([ResourceRecord(f"vm.a.disk[{n}]", "volume", Status.IN_PROGRESS, attrs)
                 for n in range(20)], [])
"""


def test_kill_9_mid_writes_leaves_a_consistent_state(where: StateLocation) -> None:
    where.open().close()
    ref, env = ref_env(where)
    for _ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, ref, where.schema],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        time.sleep(0.5)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        state = where.open().read()
        values = {r.attributes["i"] for r in state.resources.values()}
        assert len(values) == 1, "a write is one transaction: all 20 rows from the same write"
        assert state.serial >= next(iter(values)) > 0


def test_a_state_url_with_a_password_is_refused_and_descriptions_hold_no_secret() -> None:
    with pytest.raises(UserError, match="must not carry a password"):
        parse_ref("postgresql://ferry:s3cret@db.example/ferry", {})
    env = {"DSN": "host=db.example user=ferry password=s3cret dbname=ferry"}
    location = parse_ref("env:DSN", env)
    assert "s3cret" not in location.display and "s3cret" not in repr(location)
    assert location.display.startswith("postgresql://ferry@db.example/ferry")
    with pytest.raises(UserError, match=r"\$NOPE is empty"):
        parse_ref("env:NOPE", {})


def ferry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
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
    assert missing.returncode == 1 and missing.stderr == (
        "error: vm.nope is not in the state (`ferry state list` shows what is)\n"
    )
    whole = ferry("state", "show", 'vm["Reporting Ünit 1"]', "--state", str(path))
    assert whole.returncode == 0, whole.stderr  # the VM's address, as the plan prints it
    shown_vm = json.loads(whole.stdout)
    assert [r["address"] for r in shown_vm["records"]] == ['vm["Reporting Ünit 1"].disk[2000]']
    bad = ferry("state", "show", "vm..x", "--state", str(path))
    assert bad.returncode == 1 and "not an address" in bad.stderr
    store.acquire("apply")  # held by this (running) process: not removed under it
    refused = ferry("state", "unlock", "--state", str(path))
    assert refused.returncode == 1 and "it is running: stop it" in refused.stderr
    store.release()
    gone = "import sys, pathlib; from engine.statestore.sqlite import SqliteStateStore as S; "
    gone += "S(pathlib.Path(sys.argv[1])).acquire('apply')"  # exits holding it
    subprocess.run(
        [sys.executable, "-c", gone, str(path)], check=True, cwd=Path(__file__).parents[2]
    )
    unlocked = ferry("state", "unlock", "--state", str(path))
    assert unlocked.returncode == 0 and "removed the lock" in unlocked.stdout
    none = ferry("state", "list", "--state", str(tmp_path / "absent.db"))
    assert none.returncode == 1 and "no state at" in none.stderr
    assert not (tmp_path / "absent.db").exists()


def test_state_migrate_sqlite_to_postgres_and_back(tmp_path: Path, postgres_dsn: str) -> None:
    path = tmp_path / "s.db"
    store = SqliteStateStore(path)
    for i in range(50):
        store.write([record(f'vm["VM Ü{i}"].disk[2000]', size=i, nested={"a": [i, None]})], [])
    original = store.read()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PG": postgres_dsn, "FERRY_STATE_DSN": postgres_dsn}
    there = ferry("state", "migrate", "--state", str(path), "--to", "env:PG", env=env)
    assert there.returncode == 0, there.stderr
    assert "copied 50 records" in there.stdout and "password" not in there.stdout
    copied = postgres_at(postgres_dsn).open(create=False).read()
    assert (copied.lineage, copied.serial) == (original.lineage, original.serial)
    assert copied.resources == original.resources
    # Into a non-empty destination: refused, nothing changed.
    again = ferry("state", "migrate", "--state", str(path), "--to", "env:PG", env=env)
    assert again.returncode == 1 and "is not empty" in again.stderr
    # FERRY_STATE_DSN selects PostgreSQL for every command; back to a new SQLite file.
    listed = ferry("state", "list", "--json", env=env)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["resources"]) == 50
    back = tmp_path / "back.db"
    returned = ferry("state", "migrate", "--to", str(back), env=env)
    assert returned.returncode == 0, returned.stderr
    assert SqliteStateStore(back).read().resources == original.resources
    assert schema not in returned.stdout  # the default schema was used throughout
    same = ferry("state", "migrate", "--to", "env:PG", env=env)
    assert same.returncode == 1 and "are the same state" in same.stderr


def test_state_commands_find_the_state_a_spec_names(tmp_path: Path, postgres_dsn: str) -> None:
    """--spec: the spec's state block (here PostgreSQL, schema and DSN variable) decides."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    postgres_at(postgres_dsn, schema).open().write([record("vm.a.disk[2000]", size=1)], [])
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "version: 1\nsource:\n  vcenter: {host: vc.example.com, username: svc, "
        "password_env: VC_PW}\ndestination: {cloud: prod}\nvms:\n  - name: a\n"
        f"state: {{backend: postgres, dsn_env: TEAM_DSN, schema: {schema}}}\n"
    )
    env = {**os.environ, "TEAM_DSN": postgres_dsn}
    listed = ferry("state", "list", "--spec", str(spec), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["address"] for r in json.loads(listed.stdout)["resources"]] == ["vm.a.disk[2000]"]
    unset = ferry("state", "list", "--spec", str(spec), env=dict(os.environ))
    assert unset.returncode == 1 and "$TEAM_DSN is empty" in unset.stderr


def test_ferry_log_dir_moves_the_logs_and_reports_of_either_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = sqlite_at(tmp_path / "s" / "ferry.db")
    postgres = StateLocation("postgres", dsn="postgresql://ferry@127.0.0.1/ferry")
    assert sqlite.log_dir == tmp_path / "s" / "logs" and sqlite.report_dir == tmp_path / "s"
    assert postgres.log_dir == Path("state/logs") and postgres.report_dir == Path("state")
    monkeypatch.setenv("FERRY_LOG_DIR", str(tmp_path / "moved"))
    for where in (sqlite, postgres):
        assert where.log_dir == where.report_dir == tmp_path / "moved"
