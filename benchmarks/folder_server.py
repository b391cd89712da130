"""A local stand-in for vCenter's datastore file access (/folder) for the benchmarks: one file
served over HTTPS (a self-signed certificate made with openssl) with HTTP range requests, only
to requests carrying the session cookie, as vSphere answers nbdkit's curl plugin. Python's
threaded server (one thread per connection, TLS in OpenSSL with the GIL released), so its own
cost is part of what the https reader's numbers show."""

from __future__ import annotations

import argparse
import re
import secrets
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

CHUNK = 1024**2


class FolderServer:
    """Serves `path` at https://127.0.0.1:<port>/folder/<name>-flat.vmdk?dcPath=DC0&dsName=ds;
    `url`, `cookie` (the header value) and `cafile` are what HttpsDiskSource needs."""

    def __init__(self, path: Path, workdir: Path) -> None:
        self.path, self.workdir = path, workdir
        self.cookie = f'vmware_soap_session="{secrets.token_hex(16)}"'
        self.cafile = workdir / "cert.pem"
        key = workdir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(self.cafile), "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cafile, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(path, self.cookie))
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"https://127.0.0.1:{port}/folder/{self.path.stem}-flat.vmdk?dcPath=DC0&dsName=ds"

    def __enter__(self) -> FolderServer:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(path: Path, cookie: str) -> type[BaseHTTPRequestHandler]:
    size = path.stat().st_size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _range(self) -> tuple[int, int] | None:
            if self.headers.get("Cookie") != cookie:
                self.send_error(401)
                return None
            found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if not found:
                return 0, size
            start = int(found[1])
            end = min(int(found[2]) + 1, size) if found[2] else size
            return start, end

        def _head(self, start: int, end: int, ranged: bool) -> None:
            self.send_response(206 if ranged else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()

        def do_HEAD(self) -> None:
            if (span := self._range()) is not None:
                self._head(*span, ranged="Range" in self.headers)

        def do_GET(self) -> None:
            if (span := self._range()) is None:
                return
            start, end = span
            self._head(start, end, ranged="Range" in self.headers)
            with path.open("rb") as f:
                f.seek(start)
                left = end - start
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    self.wfile.write(data)
                    left -= len(data)

    return Handler


def main() -> None:
    """By hand: serve FILE until Ctrl-C, printing its URL and CA file (not its cookie)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ferry-folder-") as tmp,
        FolderServer(args.file, Path(tmp)) as server,
    ):
        print(f"{server.url} (CA {server.cafile}); Ctrl-C ends it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
