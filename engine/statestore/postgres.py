"""Shared state in PostgreSQL: the SQLite store's tables in one PostgreSQL schema, the same
guarantees (every change one transaction that bumps the serial), and a lock that cannot go
stale.

The lock is a session-level advisory lock on a key derived from the schema name: PostgreSQL
releases it when the holder's connection ends, however the holder died (kill -9, a lost
machine). A row in `lock` describes the holder (operation, pid, host, time) so a second apply,
from any machine, fails fast naming it.

One connection per store, shared by apply's worker threads and serialized by a lock; it holds
the advisory lock for as long as the apply runs.

A lost connection (a failover, a pgbouncer or idle-TCP reset, a network blip; break-it 12c
item 6) is ridden out: the open, reads and writes reconnect with backoff for up to
RETRY_SECONDS (FERRY_STATE_RETRY_SECONDS) and are retried. The advisory lock died with the old
session: it is taken again, and the lock row must still be this store's own, or another ferry
locked the state in between and this store stops (StateLockedError: never two appliers). A
write is one transaction that also records its token (meta `last_write`): retried after a
connection lost around its COMMIT, it is not applied twice. libpq's TCP keepalives and
tcp_user_timeout find a dead peer that sends nothing (an idle connection reset by a firewall);
a DSN may list several hosts with target_session_attrs=read-write so that a reconnect finds the
new primary.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from engine.errors import (
    NoStateError,
    StateError,
    StateLockedError,
    StateUnreachableError,
    UserError,
)
from engine.model.state import LockInfo, ResourceRecord, State, Status
from engine.statestore.common import (
    FORMAT_VERSION,
    holding,
    locked_error,
    my_lock,
    state_of,
)

CONNECT_TIMEOUT = 10  # seconds per connection attempt
RETRY_SECONDS = 30.0  # how long a lost connection is retried before the state is unreachable
RETRY_ENV = "FERRY_STATE_RETRY_SECONDS"
HEARTBEAT_SECONDS = 10.0  # while the lock is held: a lost connection is found and the lock
# taken again within this, not at the next write (a conversion may write nothing for minutes)
BACKOFF = (0.2, 4.0)  # first and longest wait between reconnection attempts, seconds
# libpq: a peer that went away without a word is found in about a minute, not hours (TCP
# keepalives after 30 s idle, every 10 s, 3 lost; tcp_user_timeout: data unacknowledged, ms)
KEEPALIVES = "keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3"
TCP_USER_TIMEOUT = "tcp_user_timeout=60000"
# SQLSTATE classes of a connection that is gone or going: connection exception (08), operator
# intervention (57P: admin/crash shutdown, cannot connect now), read-only transaction (25006:
# the server is a standby now, after a failover)
LOST_STATES = ("08", "57P", "25006")
# libpq's words for a refused connection that trying again does not mend
REFUSALS = ("authentication failed", "pg_hba.conf", "does not exist", "no password supplied")
T = TypeVar("T")
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
        self._dsn = dsn
        self._mine: LockInfo | None = None  # the lock row this store wrote when it took the lock
        self._retry_seconds = retry_seconds(os.environ)
        self._outage: StateUnreachableError | None = None  # given up on, until a reconnect works
        self._taken: StateLockedError | None = None  # the lock lost to another ferry: stopped
        self._beat = threading.Event()  # set: the heartbeat ends
        self._db = self._first_connection()

        def init() -> None:
            if not create and not self._exists():
                raise NoStateError(f"no state in {self._display}")
            with self._tx():
                self._init()

        try:
            self._resilient("open", init)  # a connection lost meanwhile: made again, retried
        except StateError:
            self._db.close()
            raise

    def _first_connection(self) -> psycopg.Connection[TupleRow]:
        """The store's connection, tried again with backoff for up to the retry window: a
        failover or a network blip at open is ridden out as one later is (before:
        the open alone was not retried). A refusal no retry mends (authentication, a missing
        database or role) fails at once.

        Raises StateError."""
        started = time.monotonic()
        wait = BACKOFF[0]
        while True:
            try:
                return self._connect()
            except psycopg.Error as exc:
                left = self._retry_seconds - (time.monotonic() - started)
                final = any(word in str(exc) for word in REFUSALS)
                if final or left <= 0:
                    tried = (
                        ""
                        if final or not self._retry_seconds
                        else (f" (tried for {self._retry_seconds:g} s)")
                    )
                    raise StateError(
                        f"cannot connect to state {self._display}{tried}: {_reason(exc)}"
                    ) from exc
                time.sleep(min(wait, left))
                wait = min(wait * 2, BACKOFF[1])

    def _connect(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            make_conninfo(self._dsn, **_settings(self._dsn)),
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="ferry",
        )

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
            self._beat.set()
            self._db.close()

    def _heartbeat(self, stop: threading.Event) -> None:
        """While the lock is held: a round trip every HEARTBEAT_SECONDS, so that a lost
        connection is made again and the lock taken again soon (another apply would otherwise
        find the state unlocked until this store's next read or write)."""
        while not stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                if stop.is_set() or not self._holding:
                    return
                try:
                    self._resilient("lock", lambda: self._db.execute("SELECT 1"))
                except StateLockedError:
                    return  # another ferry holds it: the next read or write says so
                except StateError:
                    continue  # unreachable: tried again at the next beat

    # -- a lost connection ------------------------------------------------------------------------

    def _resilient(self, doing: str, op: Callable[[], T]) -> T:
        """`op` (idempotent) run on the connection; a lost connection is made again with backoff
        and `op` retried, for up to the retry window (once only after an outage given up on).

        Raises StateUnreachableError when the connection cannot be made again in time,
        StateLockedError when another ferry locked the state meanwhile, StateError for any
        other database error."""
        with self._lock:
            if self._taken is not None:
                raise self._taken
            started = time.monotonic()
            wait = BACKOFF[0]
            while True:
                try:
                    if self._db.closed or self._db.broken:
                        self._reconnect()
                    result = op()
                except psycopg.Error as exc:
                    if not self._lost(exc):
                        raise StateError(
                            f"cannot {doing} state {self._display}: {_reason(exc)}"
                        ) from exc
                    left = self._retry_seconds - (time.monotonic() - started)
                    if self._outage is not None or left <= 0:
                        raise self._give_up(exc) from exc
                    time.sleep(min(wait, left))
                    wait = min(wait * 2, BACKOFF[1])
                    continue
                self._outage = None
                return result

    def _lost(self, exc: psycopg.Error) -> bool:
        """The connection is gone (or the server is a standby now): worth a reconnect."""
        if self._db.closed or self._db.broken:
            return True
        code = getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, psycopg.OperationalError) and code.startswith(LOST_STATES)

    def _give_up(self, exc: psycopg.Error) -> StateUnreachableError:
        if self._outage is None:
            since = time.strftime("%H:%M:%S UTC", time.gmtime())
            self._outage = StateUnreachableError(
                f"state {self._display} unreachable: the connection was lost and not made again "
                f"in {self._retry_seconds:g} s (since {since}: {_reason(exc)})",
                brief=f"state {self._display} unreachable since {since}",
            )
        return self._outage

    def _reconnect(self) -> None:
        """A new connection; the advisory lock taken again when this store held it, only if the
        lock row is still this store's (nobody locked the state in between). A session that
        still holds it (the old one not yet ended, or a plan's moment-long check) is waited
        for, within the retry window.

        Raises psycopg.Error (retried) or StateLockedError (this store stops)."""
        with suppress(psycopg.Error):
            self._db.close()
        self._db = self._connect()
        if not self._holding:
            return
        started = time.monotonic()
        while not self._try_advisory():
            held = self._lock_row()
            waited = time.monotonic() - started
            if held != self._mine or waited > self._retry_seconds:
                raise self._lock_taken(held)
            time.sleep(BACKOFF[0])
        held = self._lock_row()
        if held != self._mine:
            self._unlock_advisory()
            raise self._lock_taken(held)

    def _lock_taken(self, held: LockInfo | None) -> StateLockedError:
        who = (
            f"{held.holder} (pid {held.pid} on {held.host})"
            if held is not None and held != self._mine
            else "another ferry (it has released it since)"
        )
        self._holding = False
        self._taken = StateLockedError(
            f"state {self._display}: the connection was lost and, before it was made again, "
            f"{who} locked the state: this apply stops writing it (two applies never run on "
            "one state)"
        )
        return self._taken

    @property
    def outage(self) -> StateError | None:
        """Why this store cannot be written now (unreachable, or its lock taken), else None."""
        return self._taken or self._outage

    # -- reading ----------------------------------------------------------------------------------

    def read(self) -> State:
        def op() -> State:
            with self._tx():
                return self._read()

        return self._resilient("read", op)

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
        token = uuid.uuid4().hex
        now = time.time()
        tried = False

        def op() -> int:
            nonlocal tried
            if tried:  # the connection was lost: was the COMMIT applied before it went?
                done = self._committed(token)
                if done is not None:
                    return done
            tried = True
            with self._tx():
                self._put(puts, now)
                if deletes:
                    self._db.execute(
                        self._q("DELETE FROM {s}.resources WHERE address = ANY(%s)"), (deletes,)
                    )
                self._db.execute(
                    self._q(
                        "INSERT INTO {s}.meta VALUES ('last_write', %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                    ),
                    (token,),
                )
                return self._bump()

        return self._resilient("write", op)

    def _committed(self, token: str) -> int | None:
        """The serial of the write `token` when it is the last one committed, else None."""
        meta = self._meta()
        return int(meta["serial"]) if meta.get("last_write") == token else None

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

        def op() -> None:
            if self._holding or not self._try_advisory():
                raise self._refusal()
            with self._tx():
                self._db.execute(self._q("DELETE FROM {s}.lock"))
                self._db.execute(
                    self._q("INSERT INTO {s}.lock VALUES (1, %s, %s, %s, %s, %s)"),
                    (mine.holder, mine.pid, mine.host, mine.acquired_at, mine.operation),
                )
            self._mine = mine
            self._holding = True

        self._resilient("lock", op)
        self._beat = threading.Event()
        threading.Thread(
            target=self._heartbeat, args=(self._beat,), name="ferry-state-heartbeat", daemon=True
        ).start()
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
        """Drop the lock. A connection already lost took the advisory lock with it: nothing to
        do then (its row describes nobody; the next acquire replaces it)."""
        with self._lock:
            if not self._holding:
                return
            self._holding = False
            self._beat.set()
            if self._db.closed or self._db.broken:
                return
            try:
                with self._tx():
                    self._db.execute(self._q("DELETE FROM {s}.lock"))
                self._unlock_advisory()
            except psycopg.Error as exc:
                if not self._lost(exc):
                    raise StateError(
                        f"cannot unlock state {self._display}: {_reason(exc)}"
                    ) from exc

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


def retry_seconds(env: Mapping[str, str]) -> float:
    """How long a lost connection is retried (FERRY_STATE_RETRY_SECONDS, default 30 s; 0: not
    retried).

    Raises UserError for a value that is not a finite number of seconds >= 0 (it fell back to
    30 s in silence)."""
    given = env.get(RETRY_ENV, "").strip()
    if not given:
        return RETRY_SECONDS
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(
            f"{RETRY_ENV}={given!r} is not a number of seconds >= 0 (how long a lost state "
            f"connection is retried; default {RETRY_SECONDS:g}, 0: not retried)"
        )
    return seconds


def _settings(dsn: str) -> dict[str, str]:
    """libpq's keepalive settings the DSN does not set itself (the DSN's own win)."""
    given = conninfo_to_dict(dsn)
    wanted = dict(item.split("=") for item in f"{KEEPALIVES} {TCP_USER_TIMEOUT}".split())
    return {k: v for k, v in wanted.items() if k not in given}


def _reason(exc: BaseException) -> str:
    """libpq's first line (never the DSN: psycopg does not echo it)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
