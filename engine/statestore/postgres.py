"""Shared state in PostgreSQL: the SQLite store's tables in one PostgreSQL schema, the same
guarantees (every change one transaction that bumps the serial), and a lock that cannot go
stale.

The lock is a session-level advisory lock on a key derived from the schema name: PostgreSQL
releases it when the holder's connection ends, however the holder died (kill -9, a lost
machine). A row in `lock` describes the holder (operation, pid, host, time) so a second apply,
from any machine, fails fast naming it.

One connection per store, shared by apply's worker threads and serialized by a lock; it holds
the advisory lock for as long as the apply runs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg
from psycopg import sql

from engine.errors import NoStateError, StateError
from engine.model.state import LockInfo, ResourceRecord, State, Status
from engine.statestore.common import (
    FORMAT_VERSION,
    holding,
    locked_error,
    my_lock,
    state_of,
)

CONNECT_TIMEOUT = 10
_TABLES = (
    "CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.resources ("
    " address TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,"
    " attributes JSONB NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {s}.lock ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, pid INTEGER NOT NULL,"
    " host TEXT NOT NULL, acquired_at DOUBLE PRECISION NOT NULL, operation TEXT NOT NULL)",
)


def lock_key(schema: str) -> int:
    """The advisory lock's bigint key for a schema (stable across ferry versions)."""
    digest = hashlib.sha256(f"ferry-state:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresStateStore:
    def __init__(
        self, dsn: str, *, schema: str = "ferry", display: str = "", create: bool = True
    ) -> None:
        self.schema = schema
        self._display = display or f"PostgreSQL schema {schema}"
        self._key = lock_key(schema)
        self._lock = threading.RLock()
        self._holding = False
        try:
            self._db = psycopg.connect(
                dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT, application_name="ferry"
            )
        except psycopg.Error as exc:
            raise StateError(f"cannot connect to state {self._display}: {_reason(exc)}") from exc
        try:
            if not create and not self._exists():
                raise NoStateError(f"no state in {self._display}")
            with self._tx():
                self._init()
        except psycopg.Error as exc:
            self._db.close()
            raise StateError(f"cannot open state {self._display}: {_reason(exc)}") from exc
        except StateError:
            self._db.close()
            raise

    def _exists(self) -> bool:
        row = self._db.execute(
            "SELECT to_regclass(format('%%I.meta', %s::text)) IS NOT NULL", (self.schema,)
        ).fetchone()
        return bool(row and row[0])

    @property
    def display(self) -> str:
        return self._display

    def _q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=sql.Identifier(self.schema))

    def _init(self) -> None:
        # Two first runs at once: the transaction-level lock orders them.
        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (self._key ^ 1,))
        self._db.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
        for statement in _TABLES:
            self._db.execute(self._q(statement))
        meta = self._meta()
        if not meta:
            self._db.cursor().executemany(
                self._q("INSERT INTO {s}.meta VALUES (%s, %s)"),
                [
                    ("format_version", str(FORMAT_VERSION)),
                    ("lineage", str(uuid.uuid4())),
                    ("serial", "0"),
                ],
            )
        elif int(meta["format_version"]) > FORMAT_VERSION:
            raise StateError(
                f"state {self._display} has format {meta['format_version']}, newer than this "
                f"ferry understands ({FORMAT_VERSION}): upgrade ferry"
            )

    def _meta(self) -> dict[str, str]:
        rows = self._db.execute(self._q("SELECT key, value FROM {s}.meta")).fetchall()
        return {str(k): str(v) for k, v in rows}

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._db.transaction():
            yield

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise StateError(f"cannot {doing} state {self._display}: {_reason(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading ----------------------------------------------------------------------------------

    def read(self) -> State:
        with self._errors("read"), self._tx():
            return self._read()

    def _read(self) -> State:
        meta = self._meta()
        rows = self._db.execute(
            self._q(
                "SELECT address, kind, status, attributes, updated_at FROM {s}.resources"
                " ORDER BY address"
            )
        ).fetchall()
        resources = {
            r[0]: ResourceRecord(r[0], r[1], Status(r[2]), r[3], float(r[4])) for r in rows
        }
        return state_of(meta, resources, self._lock_row())

    def _lock_row(self) -> LockInfo | None:
        row = self._db.execute(
            self._q("SELECT holder, pid, host, acquired_at, operation FROM {s}.lock WHERE id = 1")
        ).fetchone()
        return LockInfo(row[0], row[1], row[2], float(row[3]), row[4]) if row else None

    # -- writing ----------------------------------------------------------------------------------

    def write(self, puts: list[ResourceRecord], deletes: list[str]) -> int:
        with self._errors("write"), self._tx():
            self._put(puts, time.time())
            if deletes:
                self._db.execute(
                    self._q("DELETE FROM {s}.resources WHERE address = ANY(%s)"), (deletes,)
                )
            return self._bump()

    def _put(self, records: list[ResourceRecord], now: float | None) -> None:
        if not records:
            return
        self._db.cursor().executemany(
            self._q(
                "INSERT INTO {s}.resources VALUES (%s, %s, %s, %s::jsonb, %s)"
                " ON CONFLICT (address) DO UPDATE SET kind = EXCLUDED.kind,"
                " status = EXCLUDED.status, attributes = EXCLUDED.attributes,"
                " updated_at = EXCLUDED.updated_at"
            ),
            [
                (
                    r.address,
                    r.kind,
                    r.status.value,
                    json.dumps(dict(r.attributes), sort_keys=True),
                    r.updated_at if now is None else now,
                )
                for r in records
            ],
        )

    def _bump(self) -> int:
        row = self._db.execute(
            self._q(
                "UPDATE {s}.meta SET value = (value::bigint + 1)::text WHERE key = 'serial'"
                " RETURNING value"
            )
        ).fetchone()
        assert row is not None
        return int(row[0])

    def replace(self, state: State) -> int:
        with self._errors("write"), self._tx():
            current = self._read()
            if current.resources or current.serial:
                raise StateError(f"state {self._display} is not empty (serial {current.serial})")
            self._put(list(state.resources.values()), None)
            self._db.cursor().executemany(
                self._q("UPDATE {s}.meta SET value = %s WHERE key = %s"),
                [(state.lineage, "lineage"), (str(state.serial), "serial")],
            )
        return state.serial

    # -- locking ----------------------------------------------------------------------------------

    def _try_advisory(self) -> bool:
        row = self._db.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        return bool(row and row[0])

    def _unlock_advisory(self) -> None:
        self._db.execute("SELECT pg_advisory_unlock(%s)", (self._key,))

    def acquire(self, operation: str) -> LockInfo:
        mine = my_lock(operation)
        with self._errors("lock"), self._lock:
            if self._holding or not self._try_advisory():
                raise self._refusal()
            self._holding = True
            with self._tx():
                self._db.execute(self._q("DELETE FROM {s}.lock"))
                self._db.execute(
                    self._q("INSERT INTO {s}.lock VALUES (1, %s, %s, %s, %s, %s)"),
                    (mine.holder, mine.pid, mine.host, mine.acquired_at, mine.operation),
                )
        return mine

    def _refusal(self) -> StateError:
        held = self._lock_row()
        if held is None:  # between the other's lock and its row: name its session at least
            held = LockInfo("another ferry", self._holder_backend(), "?", time.time(), "?")
        return locked_error(
            self._display,
            held,
            "PostgreSQL releases the lock when that process's connection ends",
        )

    def _holder_backend(self) -> int:
        high, low = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        row = self._db.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (high, low),
        ).fetchone()
        return int(row[0]) if row else 0

    def check_unlocked(self) -> None:
        with self._errors("lock"), self._lock:
            if self._holding:
                return
            if not self._try_advisory():
                raise self._refusal()
            self._unlock_advisory()

    def release(self) -> None:
        with self._errors("unlock"), self._lock:
            if not self._holding:
                return
            with self._tx():
                self._db.execute(self._q("DELETE FROM {s}.lock"))
            self._unlock_advisory()
            self._holding = False

    def force_unlock(self) -> LockInfo | None:
        """Remove the description of a lock nobody holds; a live holder cannot be unlocked from
        here (its connection holds the lock: stop that process)."""
        with self._errors("unlock"), self._lock:
            if not self._holding and not self._try_advisory():
                raise self._refusal()
            try:
                with self._tx():
                    held = self._lock_row()
                    self._db.execute(self._q("DELETE FROM {s}.lock"))
            finally:
                if not self._holding:
                    self._unlock_advisory()
                self._holding = False
        return held

    def locked(self, operation: str) -> AbstractContextManager[LockInfo]:
        return holding(self, operation)


def _reason(exc: BaseException) -> str:
    """libpq's first line (never the DSN: psycopg does not echo it)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
