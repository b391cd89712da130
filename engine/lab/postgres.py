"""The lab's PostgreSQL: a private server for shared-state tests and the CI example.

It listens on a unix socket only (no TCP), in a 0700 directory owned by the server's user; the
password is random and kept in a libpq passfile (0600), so the DSN the lab hands out
(`FERRY_LAB_STATE_DSN`) holds no secret. PostgreSQL refuses to run as root: when the lab runs as
root the server runs as Debian's `postgres` user, with its data under /tmp (the lab directory's
parents may not be searchable by that user); `<lab>/postgres/datadir` names where.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from engine.errors import LabError
from engine.lab.processes import ProcessRecord, is_running, spawn

READY_TIMEOUT = 60.0
DATABASE = "ferry"
USER = "ferry"


def bindir() -> Path:
    """Debian's newest PostgreSQL server binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise LabError("PostgreSQL is not installed (Debian package postgresql): run scripts/setup")
    return found[-1].parent


def _server_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


class LabPostgres:
    def __init__(self, lab_root: Path) -> None:
        self.home = lab_root / "postgres"

    @property
    def passfile(self) -> Path:
        return self.home / "pgpass"

    @property
    def datadir(self) -> Path:
        return Path((self.home / "datadir").read_text().strip())

    @property
    def port(self) -> int:
        return int((self.home / "port").read_text())

    def dsn(self, database: str = DATABASE) -> str:
        return (
            f"host={self.datadir} port={self.port} dbname={database} user={USER} "
            f"passfile={self.passfile}"
        )

    def start(self, port: int, record: Callable[[ProcessRecord], None]) -> None:
        """initdb, start the server (recorded through `record`), create the ferry database."""
        self.home.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        data = Path(tempfile.mkdtemp(prefix="ferry-lab-pg-"))
        (self.home / "datadir").write_text(f"{data}\n")
        (self.home / "port").write_text(str(port))
        password = secrets.token_urlsafe(24)
        self._passfile(port, password)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        self._initdb(data, password, user)
        server = spawn(
            "postgres",
            [
                str(bindir() / "postgres"),
                "-D", str(data / "cluster"),
                "-p", str(port),
                "-k", str(data),
                "-c", "listen_addresses=",
                "-c", "unix_socket_permissions=0700",
            ],
            self.home / "postgres.log",
            user=user,
        )  # fmt: skip
        record(server)
        self._wait_ready(server, data, port)
        self._create_database()

    def _passfile(self, port: int, password: str) -> None:
        self.passfile.touch(mode=0o600)
        self.passfile.write_text(f"*:{port}:*:{USER}:{password}\n")

    def _initdb(self, data: Path, password: str, user: str | None) -> None:
        pwfile = data / "pw"
        pwfile.write_text(password)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        try:
            done = subprocess.run(
                [
                    str(bindir() / "initdb"),
                    "-D", str(data / "cluster"),
                    "-U", USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
                check=False,
                timeout=120,
                cwd=data,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise LabError(f"initdb failed: {done.stderr.strip()[-400:]}")

    def _wait_ready(self, server: ProcessRecord, data: Path, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if not is_running(server):
                log = (self.home / "postgres.log").read_text(errors="replace")[-400:]
                raise LabError(f"PostgreSQL exited while starting: {log}")
            if (data / f".s.PGSQL.{port}").exists():
                try:
                    psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                    return
                except psycopg.OperationalError:
                    pass
            if time.monotonic() > deadline:
                raise LabError(f"PostgreSQL not ready after {READY_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def _create_database(self) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def check(self) -> str:
        """A round trip through the server; raises LabError when it does not answer."""
        try:
            with psycopg.connect(self.dsn(), connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except (psycopg.Error, OSError) as exc:
            raise LabError(str(exc).strip().splitlines()[0]) from exc
        return f"PostgreSQL {row[0] if row else '?'} on {self.datadir}"

    def remove(self) -> None:
        """Delete the server's data (the server must be stopped)."""
        try:
            data = self.datadir
        except OSError:
            return
        if data.name.startswith("ferry-lab-pg-"):
            shutil.rmtree(data, ignore_errors=True)
