"""vCenter sessions: login with TLS verified (CA file or pinned SHA-1 thumbprint), logout.

The password is read from a file or handed in by the caller; it is never logged or put on argv.
Connection and login failures become VSphereError with a one-line cause.

A session that vCenter ends (a vCenter restart, an idle timeout, an administrator terminating it)
is not the end of an apply: every call that faults with NotAuthenticated logs in again and is
retried (pyVmomi's session-oriented stub), and a call that meets a connection error is retried
for up to RETRIES times RETRY_DELAY seconds. Each re-login is logged as a warning. A property
read vCenter answers with NotAuthenticated in `missingSet` (no fault, so the stub does not log
in) logs in again through `renew_session` (`read.collect`).
A vCenter that accepts connections and never answers (hung, or a wrong port behind a proxy)
fails the connect within CONNECT_TIMEOUT seconds, and any later request within REQUEST_TIMEOUT
(then retried as above), instead of holding ferry forever.
`SessionCookies` does the same for the session's cookie that the https reader's nbdkit sends:
it reads the session whenever nbdkit's cookie script asks (every few seconds while it reads) and
every COOKIE_CHECK seconds, and rewrites the cookie files when the cookie changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shlex
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartStubAdapter, VimSessionOrientedStub
from pyVmomi import vim

from engine.dataplane.nbdkit import write_secret
from engine.errors import UserError, VSphereError, one_line
from engine.proc import secret_env


@dataclass(frozen=True)
class VCenterTarget:
    """Where and how to log in. `password` is the secret itself and is kept out of repr."""

    host: str
    port: int
    user: str
    password: str
    cafile: Path | None = None
    thumbprint: str | None = None
    insecure: bool = False

    def __repr__(self) -> str:
        return f"VCenterTarget({self.user}@{self.host}:{self.port})"


def ssl_context(target: VCenterTarget) -> ssl.SSLContext:
    if target.insecure or target.thumbprint:
        # A pinned thumbprint is checked by check_thumbprint before login.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=str(target.cafile) if target.cafile else None)
    except FileNotFoundError as exc:
        raise UserError(f"the vCenter CA file {target.cafile} does not exist") from exc
    except (OSError, ssl.SSLError) as exc:
        raise UserError(
            f"the vCenter CA file {target.cafile} is not a PEM certificate file: "
            f"{getattr(exc, 'reason', None) or exc}"
        ) from exc


def server_thumbprint(host: str, port: int, timeout: float = 10.0) -> str:
    """SHA-1 thumbprint of the server's certificate, as vSphere prints it (AA:BB:...)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise VSphereError(f"cannot reach vCenter at {host}:{port}: {exc}") from exc
    if der is None:
        raise VSphereError(f"vCenter at {host}:{port} sent no certificate")
    digest = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def check_thumbprint(target: VCenterTarget) -> None:
    if target.thumbprint is None or target.insecure:
        return
    seen = server_thumbprint(target.host, target.port)
    if seen.replace(":", "").lower() != target.thumbprint.replace(":", "").lower():
        raise VSphereError(
            f"vCenter {target.host}:{target.port} presented thumbprint {seen}, "
            f"not the pinned {target.thumbprint}"
        )


RETRIES = 12
RETRY_DELAY = 2.5
CONNECT_TIMEOUT = 60.0  # s: vCenter's version document (a small static file) must come within
REQUEST_TIMEOUT = 300.0  # s: one SOAP request (tasks are polled, so each request is short)
log = logging.getLogger("ferry.vsphere")


def _login(target: VCenterTarget) -> Any:
    """The stub's login method: the first login, and a logged re-login after a lost session."""
    logins = 0

    def login(soap_stub: Any) -> None:
        nonlocal logins
        content = vim.ServiceInstance("ServiceInstance", soap_stub).RetrieveContent()
        manager: Any = content.sessionManager
        try:
            if manager.currentSession:
                return
        except vim.fault.NotAuthenticated:  # vcsim says so where vCenter answers None
            pass
        manager.Login(target.user, target.password, None)
        logins += 1
        if logins > 1:
            log.warning(
                "vCenter %s:%s ended ferry's session: logged in again (login %d)",
                target.host,
                target.port,
                logins,
            )

    return login


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """New sockets time out after `seconds` meanwhile: pyVmomi's API version discovery (in
    SmartStubAdapter) opens its connections without a timeout of their own."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def connect(target: VCenterTarget) -> Any:
    """Log in and return the ServiceInstance (re-logging in by itself when needed). Raises
    VSphereError on a rejected login, a failed TLS verification, or a vCenter that cannot be
    reached or does not answer within CONNECT_TIMEOUT seconds."""
    check_thumbprint(target)
    try:
        with _socket_timeout(CONNECT_TIMEOUT):
            stub = SmartStubAdapter(
                host=target.host,
                port=target.port,
                sslContext=ssl_context(target),
                httpConnectionTimeout=REQUEST_TIMEOUT,
                connectionPoolTimeout=30,
            )
        si = vim.ServiceInstance(
            "ServiceInstance",
            VimSessionOrientedStub(stub, _login(target), RETRY_DELAY, RETRIES),
        )
        si.RetrieveContent()  # logs in now: a bad password fails here, not mid-apply
        return si
    except vim.fault.InvalidLogin as exc:
        raise VSphereError(
            f"vCenter {target.host}:{target.port} rejected the login for {target.user}"
        ) from exc
    except ssl.SSLError as exc:
        raise VSphereError(
            f"TLS verification of vCenter {target.host}:{target.port} failed: {exc.reason}"
        ) from exc
    except (OSError, vim.fault.HostConnectFault) as exc:
        raise VSphereError(f"cannot connect to vCenter {target.host}:{target.port}: {exc}") from exc


@contextmanager
def session(target: VCenterTarget) -> Iterator[Any]:
    """A logged-in ServiceInstance, logged out at the end."""
    si = connect(target)
    try:
        yield si
    finally:
        Disconnect(si)


def session_cookie(si: Any) -> str:
    """The session's cookie as an HTTP Cookie header value ('vmware_soap_session="..."'): what
    vCenter's datastore file access (/folder) takes. A secret: never log it or put it on argv.
    Raises VSphereError when the connection has no session."""
    stub = si._stub
    inner = getattr(stub, "soapStub", stub)  # VimSessionOrientedStub wraps the SOAP stub
    session_id = inner.GetSessionId() if hasattr(inner, "GetSessionId") else None
    if not session_id:
        raise VSphereError("the vCenter connection has no session cookie")
    return f'vmware_soap_session="{session_id}"'


def read_secret(block: dict[str, Any], what: str, env: dict[str, str]) -> str:
    """The password named by a spec block's password_file or password_env (never inline)."""
    if "password_file" in block:
        path = Path(str(block["password_file"]))
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise UserError(f"cannot read the {what} password file {path}: {exc.strerror}") from exc
        if not lines or not lines[0]:
            raise UserError(f"the {what} password file {path} is empty")
        return lines[0]
    name = str(block.get("password_env", ""))
    if not env.get(name):
        raise UserError(
            f"environment variable {name or '(none)'} holding the {what} password is not set"
        )
    secret_env(name)  # never passed on to a child process
    return env[name]


def target_from_spec(vcenter: dict[str, Any], env: dict[str, str]) -> VCenterTarget:
    """A VCenterTarget from a validated spec's source.vcenter block."""
    tls = vcenter.get("tls") or {}
    return VCenterTarget(
        host=str(vcenter["host"]),
        port=int(vcenter.get("port", 443)),
        user=str(vcenter["username"]),
        password=read_secret(vcenter, "vCenter", env),
        cafile=Path(tls["ca_file"]) if "ca_file" in tls else None,
        thumbprint=tls.get("thumbprint"),
        insecure=bool(tls.get("insecure", False)),
    )


def target_from_env(env: dict[str, str]) -> VCenterTarget:
    """A VCenterTarget from FERRY_VCENTER_* variables (what `ferry lab env` exports)."""
    missing = [n for n in ("FERRY_VCENTER_HOST", "FERRY_VCENTER_USER") if not env.get(n)]
    if missing:
        raise UserError(
            f"no spec given and {', '.join(missing)} not set: pass a spec, or "
            '`eval "$(ferry lab env)"` for the lab'
        )
    block: dict[str, Any] = {
        "host": env["FERRY_VCENTER_HOST"],
        "port": env.get("FERRY_VCENTER_PORT", "443"),
        "username": env["FERRY_VCENTER_USER"],
    }
    if env.get("FERRY_VCENTER_PASSWORD_FILE"):
        block["password_file"] = env["FERRY_VCENTER_PASSWORD_FILE"]
    else:
        block["password_env"] = "FERRY_VCENTER_PASSWORD"
    if env.get("FERRY_VCENTER_CAFILE"):
        block["tls"] = {"ca_file": env["FERRY_VCENTER_CAFILE"]}
    return target_from_spec(block, env)


COOKIE_CHECK = 10.0  # seconds between two reads of the session by SessionCookies when not asked
COOKIE_FRESH = 1.0  # seconds: a check this recent answers a cookie script's request
ASK_TIMEOUT = 20.0  # seconds a cookie script waits for ferry's check before reading the file

# The cookie script's helper (run by nbdkit's curl plugin with argv: socket, wait, cookie file):
# it asks ferry to check the session (ferry answers once the files hold the checked session's
# cookie), then prints its file. When ferry does not answer within the wait it prints the file
# as it is, so a slow vCenter delays reads by at most that long.
_ASK = """import socket, sys
ask = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ask.settimeout(float(sys.argv[2]))
try:
    ask.connect(sys.argv[1])
    ask.sendall(b"check\\n")
    ask.recv(16)
except OSError:
    pass
finally:
    ask.close()
with open(sys.argv[3]) as cookie:
    sys.stdout.write(cookie.read())
"""


def renew_session(si: Any) -> None:
    """Read the session of `si` (which keeps vCenter from ending it as idle); when vCenter ended
    it, log in again. vCenter reads an ended session as None, vcsim faults NotAuthenticated
    (the stub then logs in again by itself). Raises pyVmomi's faults when the login fails."""
    manager = si.content.sessionManager
    if manager.currentSession is None:
        si._stub._SetStateUnauthenticated()  # pyVmomi's session-oriented stub: log in anew
        _ = manager.currentSession  # the next call logs in


class SessionCookies:
    """Keeps cookie files holding the current cookie of vCenter session `si` (the https
    reader's nbdkit reads them through its cookie script, `script(path)`). While it keeps any,
    a thread serves a unix socket in a private 0700 directory: each time nbdkit runs the cookie
    script (every cookie-script-renew seconds while it reads), the script asks there, and the
    thread calls `renew_session` (unless a check is less than `fresh` seconds old), rewrites
    every file (0600, atomically) when the cookie changed, then answers; the script prints its
    file. Unasked, the thread checks every `interval` seconds (keeping the session from idling
    out). So a session an administrator ends is logged in again at the next script run of any
    reading nbdkit, whatever the thread's interval, and the reads (and opens) that met 401
    meanwhile succeed when nbdkit's retry-request filter issues them again. A file whose
    directory is gone (its nbdkit stopped) is dropped; the thread, its socket and directory
    end with the last one. Neither the cookie nor the files' content is logged."""

    def __init__(
        self, si: Any, interval: float = COOKIE_CHECK, fresh: float = COOKIE_FRESH
    ) -> None:
        self._si = si
        self.interval = interval
        self.fresh = fresh
        self.renewals = 0  # times the files were rewritten with a new cookie
        self.checks = 0  # reads of the session made (asked or not)
        self._lock = threading.Lock()
        self._files: list[Path] = []
        self._cookie: str | None = None
        self._checked = -math.inf  # time.monotonic() when the last check began
        self._thread: threading.Thread | None = None
        self._socket: Path | None = None

    def keep(self, path: Path) -> None:
        """Write the session's cookie to `path` (0600) and keep it current while its
        directory exists. The session is checked first (logged in again if vCenter ended it):
        an nbdkit started with an ended session's cookie fails its first read (the lab's
        session-ending drill failed both disks' copies that way). Raises OSError when the
        keeper's socket cannot be made."""
        self._check_session()
        cookie = session_cookie(self._si)
        with self._lock:
            write_secret(path, cookie)
            self._files.append(path)
            if self._cookie != cookie:
                self._rewrite(cookie)
            if self._thread is None or not self._thread.is_alive():
                server = self._listen()
                self._thread = threading.Thread(
                    target=self._run, args=(server,), name="ferry-session-cookie", daemon=True
                )
                self._thread.start()

    def script(self, path: Path) -> str:
        """nbdkit's cookie-script for kept file `path`: ask this keeper for a checked session
        (waiting at most ASK_TIMEOUT seconds), then print the file. It names the socket and the
        file (its last word), never the cookie. Call after `keep(path)`."""
        with self._lock:
            sock = self._socket
        words = [sys.executable, "-I", "-S", "-c", _ASK, str(sock), str(ASK_TIMEOUT), str(path)]
        return "exec " + " ".join(shlex.quote(w) for w in words)

    def check(self) -> bool:
        """One check: renew the session if vCenter ended it; True when the cookie changed and
        the files were rewritten."""
        self._check_session()
        cookie = session_cookie(self._si)
        with self._lock:
            if cookie == self._cookie:
                return False
            self._rewrite(cookie)
            files = len(self._files)
        log.warning("vCenter session renewed: %d https reader cookie file(s) rewritten", files)
        return True

    def _check_session(self) -> None:
        self._checked = time.monotonic()
        self.checks += 1
        renew_session(self._si)

    def _rewrite(self, cookie: str) -> None:
        kept = []
        for path in self._files:
            try:
                write_secret(path, cookie)
            except FileNotFoundError:  # its nbdkit stopped meanwhile (its directory is gone)
                continue
            kept.append(path)
        self._files = kept
        if self._cookie is not None:
            self.renewals += 1
        self._cookie = cookie

    def _listen(self) -> socket.socket:
        """A listening unix socket in a new 0700 directory (its path in self._socket)."""
        directory = Path(tempfile.mkdtemp(prefix="ferry-session-"))
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(directory / "ask"))
            server.listen(16)
        except OSError:
            server.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._socket = directory / "ask"
        return server

    def _alive(self) -> bool:
        with self._lock:
            self._files = [path for path in self._files if path.parent.is_dir()]
            if not self._files:
                self._thread = None
            return bool(self._files)

    def _run(self, server: socket.socket) -> None:
        directory = Path(server.getsockname()).parent
        try:
            while self._alive():
                due = self._checked + self.interval - time.monotonic()
                server.settimeout(min(max(due, 0.01), 1.0))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    if time.monotonic() - self._checked >= self.interval:
                        self._safe_check()
                    continue
                with conn:
                    if time.monotonic() - self._checked >= self.fresh:
                        self._safe_check()
                    with contextlib.suppress(OSError):  # the script gave up waiting
                        conn.sendall(b"ok\n")
        finally:
            server.close()
            shutil.rmtree(directory, ignore_errors=True)

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception as exc:  # the next check tries again; the reads retry meanwhile
            log.warning("checking the vCenter session failed: %s", one_line(str(exc)))
