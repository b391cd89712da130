"""A TCP proxy on 127.0.0.1 in front of a PostgreSQL server's unix socket, for the tests of a
lost state connection: `cut()` drops every connection through it and refuses new ones (a
failover that has not ended, a network cut) until `restore()`."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from engine.statestore.postgres import lock_key


class PgProxy:
    def __init__(self, dsn: str, home: Path) -> None:
        """`dsn`: the server's (host = its socket directory, port, passfile); `home`: where the
        proxy's own passfile goes."""
        parts = conninfo_to_dict(dsn)
        self._target = str(Path(str(parts["host"])) / f".s.PGSQL.{parts['port']}")
        self._parts = parts
        self._home = home
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._guard = threading.Lock()
        self.port = 0
        self.accepted = 0  # connections made through the proxy so far

    def start(self) -> str:
        """Listen; returns the DSN through the proxy (its own passfile, no secret in it)."""
        self._listen()
        password = Path(str(self._parts["passfile"])).read_text().strip().rsplit(":", 1)[1]
        passfile = self._home / "pgpass"
        passfile.write_text(f"127.0.0.1:{self.port}:*:{self._parts['user']}:{password}\n")
        passfile.chmod(0o600)
        return (
            f"host=127.0.0.1 port={self.port} dbname={self._parts['dbname']} "
            f"user={self._parts['user']} passfile={passfile}"
        )

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._listener is not listener:  # cut meanwhile
                client.close()
                return
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(self._target)
            except OSError:
                client.close()
                continue
            with self._guard:
                self._open += [client, server]
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        """Every connection dropped, new ones refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()  # the accept loop ends on it within 0.1 s
        with self._guard:
            for sock in self._open:
                _shut(sock)
            self._open.clear()

    def restore(self) -> None:
        """Accept again, on the same port."""
        self._listen()

    def close(self) -> None:
        self.cut()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def holder_backend(dsn: str, schema: str, *, missing_ok: bool = False) -> int:
    """The server process holding the schema's advisory lock (0: nobody, when `missing_ok`)."""
    key = lock_key(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
    if row is None and missing_ok:
        return 0
    assert row is not None, "nobody holds the lock"
    return int(row[0])


def terminate(dsn: str, pid: int) -> None:
    """pg_terminate_backend, waiting (up to 5 s) until that session has ended."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
    assert row is not None and row[0]
