"""State stores: where ferry records what it created, with lineage, serial and a lock.

Two backends with the same operations and guarantees: the embedded default, one SQLite file
(`statestore.sqlite`), and a shared PostgreSQL database for teams and CI runners that start
empty (`statestore.postgres`).

Where the state is (`locate`), first match wins:

1. `--state REF` on the command line: a file path, `env:NAME` (the PostgreSQL DSN in the
   environment variable NAME) or a `postgresql://` URL without a password;
2. the spec's `state:` block (`backend: postgres` with `dsn_env`, default FERRY_STATE_DSN; or
   `path`);
3. the environment: FERRY_STATE_DSN (PostgreSQL), then FERRY_STATE (a file path);
4. `./state/ferry.db`.

A DSN may carry a password only when it comes from the environment: never on argv or in the
spec. Logs and reports of a PostgreSQL state are written under `./state/` of the working
directory, those of a SQLite state beside its file; FERRY_LOG_DIR (a directory) moves the logs
(`StateLocation.log_dir`) and reports of either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from engine.errors import StateError, UserError
from engine.model.state import LockInfo, ResourceRecord, State
from engine.proc import secret_env

DEFAULT_PATH = Path("state") / "ferry.db"
LOG_DIR_ENV = "FERRY_LOG_DIR"  # moves the logs and reports of any state
DSN_ENV = "FERRY_STATE_DSN"
DEFAULT_SCHEMA = "ferry"


class StateStore(Protocol):
    @property
    def display(self) -> str:
        """Where this state is, for messages (never a secret)."""
        ...

    def read(self) -> State:
        """The whole state as of now."""
        ...

    def write(self, puts: list[ResourceRecord], deletes: list[str]) -> int:
        """Apply puts and deletes in one transaction; returns the new serial."""
        ...

    def acquire(self, operation: str) -> LockInfo:
        """Take the lock or raise StateLockedError naming the holder."""
        ...

    def check_unlocked(self) -> None:
        """Raise StateLockedError naming the holder when another live process holds the lock."""
        ...

    def release(self) -> None:
        """Drop our own lock."""
        ...

    def force_unlock(self) -> LockInfo | None:
        """Remove a lock whose holder is gone (the user's decision); returns what was removed."""
        ...

    def locked(self, operation: str) -> AbstractContextManager[LockInfo]:
        """The lock for the duration of a with-block."""
        ...

    def replace(self, state: State) -> int:
        """Make this (empty) store hold exactly `state`: lineage, serial and resources."""
        ...

    @property
    def outage(self) -> StateError | None:
        """Why this store cannot be written now (PostgreSQL: its connection lost and not made
        again in time, or its lock taken by another ferry meanwhile), else None."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class StateLocation:
    backend: Literal["sqlite", "postgres"]
    path: Path | None = None  # sqlite
    dsn: str | None = field(default=None, repr=False)  # postgres; may hold a password
    schema: str = DEFAULT_SCHEMA  # postgres schema holding ferry's tables
    display: str = ""

    @property
    def log_dir(self) -> Path:
        """Where the per-VM logs and the apply event logs live: $FERRY_LOG_DIR when set, else
        `logs/` beside a SQLite state's file, else `./state/logs` (PostgreSQL)."""
        moved = os.environ.get(LOG_DIR_ENV)
        if moved:
            return Path(moved)
        if self.path is not None:
            return self.path.parent / "logs"
        return Path("state") / "logs"

    @property
    def report_dir(self) -> Path:
        """Where `ferry report` writes report.html: $FERRY_LOG_DIR when set (beside the logs),
        else the parent of `log_dir` (the state's directory)."""
        return Path(os.environ[LOG_DIR_ENV]) if os.environ.get(LOG_DIR_ENV) else self.log_dir.parent

    @property
    def identity(self) -> str:
        """Equal for two locations of the same state, however each was named."""
        if self.path is not None:
            return str(self.path.resolve())
        return describe_dsn(self.dsn or "", self.schema)

    def exists(self) -> bool:
        """False only when a file state was never written (PostgreSQL is asked when opened)."""
        return self.path is None or self.path.exists()

    def open(self, *, create: bool = True) -> StateStore:
        if self.backend == "sqlite":
            assert self.path is not None
            return SqliteStateStore(self.path, create=create)
        assert self.dsn is not None
        from engine.statestore.postgres import PostgresStateStore  # noqa: PLC0415 (psycopg)

        return PostgresStateStore(self.dsn, schema=self.schema, display=self.display, create=create)


def sqlite_at(path: Path) -> StateLocation:
    return StateLocation("sqlite", path=path, display=str(path))


def postgres_at(dsn: str, schema: str = DEFAULT_SCHEMA, origin: str = "") -> StateLocation:
    return StateLocation(
        "postgres", dsn=dsn, schema=schema, display=describe_dsn(dsn, schema, origin)
    )


def locate(
    spec_state: Mapping[str, Any] | None, option: str | None, env: Mapping[str, str]
) -> StateLocation:
    """Where the state is: --state, then the spec's state block, then the environment.

    Raises UserError (a PostgreSQL state's DSN variable empty, a password on the command line,
    a bad FERRY_STATE_RETRY_SECONDS: said before anything is read or touched)."""
    where = _locate(spec_state, option, env)
    if where.backend == "postgres":
        from engine.statestore.postgres import retry_seconds  # noqa: PLC0415 (psycopg)

        retry_seconds(env)
    return where


def _locate(
    spec_state: Mapping[str, Any] | None, option: str | None, env: Mapping[str, str]
) -> StateLocation:
    block = dict(spec_state or {})
    schema = str(block.get("schema") or DEFAULT_SCHEMA)
    if option:
        return parse_ref(option, env, schema)
    if block.get("backend") == "postgres":
        name = str(block.get("dsn_env") or DSN_ENV)
        return _from_env(name, env, schema, "the spec's state.dsn_env")
    if block.get("path"):
        return sqlite_at(Path(block["path"]))
    if env.get(DSN_ENV):
        return _from_env(DSN_ENV, env, schema, DSN_ENV)
    return sqlite_at(Path(env.get("FERRY_STATE") or DEFAULT_PATH))


def parse_ref(ref: str, env: Mapping[str, str], schema: str = DEFAULT_SCHEMA) -> StateLocation:
    """A state named on the command line: a path, `env:NAME` or a password-less URL."""
    if ref.startswith("env:"):
        return _from_env(ref[4:], env, schema, ref)
    if ref.startswith(("postgresql://", "postgres://")):
        if urlsplit(ref).password is not None:
            raise UserError(
                "a state URL on the command line must not carry a password (other users can "
                "read argv): use env:NAME with the DSN in an environment variable, PGPASSWORD "
                "or a passfile (~/.pgpass)"
            )
        return postgres_at(ref, schema)
    return sqlite_at(Path(ref))


def _from_env(name: str, env: Mapping[str, str], schema: str, origin: str) -> StateLocation:
    dsn = env.get(name)
    if not dsn:
        raise UserError(f"the state is in PostgreSQL but ${name} is empty ({origin})")
    secret_env(name)  # a DSN may hold a password: never passed on to a child process
    return postgres_at(dsn, schema, f"${name}")


def describe_dsn(dsn: str, schema: str, origin: str = "") -> str:
    """user@host:port/dbname, schema — the DSN without its secrets."""
    import psycopg  # noqa: PLC0415 (imported by a PostgreSQL state only: 0.2 s)
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:  # a malformed DSN: reported when connecting
        return f"PostgreSQL ({origin or 'unparsable DSN'}), schema {schema}"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    where = f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"
    return f"{where} (schema {schema}{', from ' + origin if origin else ''})"


def default_location(env: Mapping[str, str]) -> StateLocation:
    return locate(None, None, env)


# The SQLite backend imports this module's siblings only; importing it here, after the
# definitions, keeps `from engine.statestore import locate` free of a cycle. The PostgreSQL
# backend (psycopg) is imported by a PostgreSQL state only.
from engine.statestore.sqlite import SqliteStateStore  # noqa: E402
