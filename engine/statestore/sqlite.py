"""The embedded state store: one SQLite file (WAL, full sync), safe for a process killed at any
instant: every change is one transaction that also bumps the serial.

Tables: meta (format_version, lineage, serial), resources (one row per address), lock (at most
one row: holder, pid, host, time, operation).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from engine.errors import NoStateError, StateError
from engine.model.state import LockInfo, ResourceRecord, State, Status
from engine.proc import start_time
from engine.statestore.common import (
    FORMAT_VERSION,
    holding,
    locked_error,
    my_lock,
    state_of,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    address TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
    attributes TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, acquired_at REAL NOT NULL, operation TEXT NOT NULL);
"""


class SqliteStateStore:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            raise NoStateError(f"no state at {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection shared by apply's worker threads, serialized by self._lock.
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=30, check_same_thread=False
            )
            self._lock = threading.RLock()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._tx():
                self._init()
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state {path}: {exc}") from exc

    def _init(self) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                self._db.execute(statement)
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("format_version", str(FORMAT_VERSION)),
                    ("lineage", str(uuid.uuid4())),
                    ("serial", "0"),
                ],
            )
        elif int(meta["format_version"]) > FORMAT_VERSION:
            raise StateError(
                f"state {self.path} has format {meta['format_version']}, newer than this ferry "
                f"understands ({FORMAT_VERSION}): upgrade ferry"
            )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def display(self) -> str:
        return str(self.path)

    @property
    def outage(self) -> StateError | None:
        """Always None: a local file has no connection to lose (its errors are raised)."""
        return None

    def close(self) -> None:
        self._db.close()

    # -- reading ----------------------------------------------------------------------------------

    def read(self) -> State:
        with self._lock:
            return self._read()

    def _read(self) -> State:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        rows = self._db.execute(
            "SELECT address, kind, status, attributes, updated_at FROM resources ORDER BY address"
        ).fetchall()
        resources = {
            r[0]: ResourceRecord(r[0], r[1], Status(r[2]), json.loads(r[3]), r[4]) for r in rows
        }
        return state_of(meta, resources, self._lock_row())

    def _lock_row(self) -> LockInfo | None:
        row = self._db.execute(
            "SELECT holder, pid, host, acquired_at, operation FROM lock WHERE id = 1"
        ).fetchone()
        return LockInfo(*row) if row else None

    # -- writing ----------------------------------------------------------------------------------

    def write(self, puts: list[ResourceRecord], deletes: list[str]) -> int:
        now = time.time()
        with self._tx():
            self._put(puts, now)
            for address in deletes:
                self._db.execute("DELETE FROM resources WHERE address = ?", (address,))
            return self._bump()

    def _put(self, records: list[ResourceRecord], now: float | None) -> None:
        for record in records:
            self._db.execute(
                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)",
                (
                    record.address,
                    record.kind,
                    record.status.value,
                    json.dumps(dict(record.attributes), sort_keys=True),
                    record.updated_at if now is None else now,
                ),
            )

    def replace(self, state: State) -> int:
        with self._tx():
            current = self._read()
            if current.resources or current.serial:
                raise StateError(f"state {self.path} is not empty (serial {current.serial})")
            self._put(list(state.resources.values()), None)
            self._db.executemany(
                "UPDATE meta SET value = ? WHERE key = ?",
                [(state.lineage, "lineage"), (str(state.serial), "serial")],
            )
        return state.serial

    def _bump(self) -> int:
        serial = int(self._db.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()[0])
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'serial'", (str(serial + 1),))
        return serial + 1

    # -- locking ----------------------------------------------------------------------------------

    def acquire(self, operation: str) -> LockInfo:
        mine = my_lock(operation)
        with self._tx():
            self._refuse_if_held(self._lock_row())
            self._db.execute("DELETE FROM lock")
            self._db.execute(
                "INSERT INTO lock VALUES (1, ?, ?, ?, ?, ?)",
                (mine.holder, mine.pid, mine.host, mine.acquired_at, mine.operation),
            )
        return mine

    def check_unlocked(self) -> None:
        """Fail fast (before any slow work) when another live process holds the lock."""
        self._refuse_if_held(self._lock_row())

    def _refuse_if_held(self, held: LockInfo | None) -> None:
        if held is not None and not _stale(held):
            raise locked_error(
                str(self.path), held, "if that process is gone, run `ferry state unlock`"
            )

    def release(self) -> None:
        with self._tx():
            self._db.execute(
                "DELETE FROM lock WHERE pid = ? AND host = ?", (os.getpid(), socket.gethostname())
            )

    def force_unlock(self) -> LockInfo | None:
        """Remove the lock of a process that is gone; a holder still running on this host is
        refused (as PostgreSQL does): unlocking under a running apply lets a second one in."""
        with self._tx():
            held = self._lock_row()
            if held is not None and held.pid != os.getpid() and not _stale(held):
                raise locked_error(
                    str(self.path), held, "it is running: stop it (Ctrl-C) instead of unlocking"
                )
            self._db.execute("DELETE FROM lock")
        return held

    def locked(self, operation: str) -> AbstractContextManager[LockInfo]:
        return holding(self, operation)


def _stale(lock: LockInfo) -> bool:
    """A lock left by a process of this host that no longer runs."""
    return lock.host == socket.gethostname() and start_time(lock.pid) is None
