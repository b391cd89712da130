"""nbdkit servers: one per source disk, on a unix socket in a private 0700 directory.

The seam between "where the source disk's bytes come from" and the copy engine is `DiskSource`:
in production nbdkit's vddk plugin reads a VM's disk at a snapshot from ESXi, or its curl plugin
reads the disk's flat extent over vCenter's datastore file access (HTTPS); in the lab the file
plugin can serve the snapshot's frozen raw file. Both are served read-only, exit with their parent,
and are waited for properly (nbdkit writes its pidfile only once it accepts connections).
Secrets reach nbdkit through a 0600 file (``password=+FILE``, ``cookie=+FILE``, or a cookie
script that reads one), never argv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

from engine.errors import DataplaneError
from engine.proc import child_env

READY_TIMEOUT = 30.0


class DiskSource(Protocol):
    """Where a source disk's bytes come from, as nbdkit plugin arguments."""

    def plugin_args(self, private_dir: Path) -> list[str]:
        """nbdkit arguments naming the plugin and its parameters; secrets go into private_dir."""
        ...

    def describe(self) -> str:
        """A one-line, secret-free description for logs and errors."""
        ...


@dataclass(frozen=True)
class FileDiskSource:
    """A raw disk image file (the lab: a snapshot's frozen copy of a disk)."""

    path: Path
    filters: tuple[str, ...] = ()  # nbdkit filters in front of the file (the lab's fault drills)
    filter_args: tuple[str, ...] = ()

    def plugin_args(self, private_dir: Path) -> list[str]:
        if not self.path.is_file():
            raise DataplaneError(f"disk image {self.path} does not exist")
        return ["file", f"file={self.path}"]

    def describe(self) -> str:
        return f"file {self.path}"


@dataclass(frozen=True)
class VddkDiskSource:
    """A VM's disk at a snapshot, read from vSphere through VDDK (production)."""

    server: str
    user: str
    password: str = field(repr=False)
    thumbprint: str
    vm_moref: str
    snapshot_moref: str
    disk_file: str  # "[datastore] path/disk.vmdk" as the snapshot's backing names it
    libdir: Path
    transports: str = "file:nbdssl:nbd"
    compression: str = "skipz"

    def plugin_args(self, private_dir: Path) -> list[str]:
        secret = private_dir / "password"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.password)
        return [
            "vddk",
            f"libdir={self.libdir}",
            f"server={self.server}",
            f"user={self.user}",
            f"password=+{secret}",
            f"thumbprint={self.thumbprint}",
            f"vm=moref={self.vm_moref}",
            f"snapshot={self.snapshot_moref}",
            f"transports={self.transports}",
            f"compression={self.compression}",
            f"file={self.disk_file}",
        ]

    def describe(self) -> str:
        return (
            f"vddk {self.server} vm={self.vm_moref} snapshot={self.snapshot_moref} {self.disk_file}"
        )


COOKIE_RENEW = 2  # seconds: nbdkit runs the cookie script (which asks ferry) this often
READ_RETRIES = 4  # nbdkit's retry-request filter: a failed read or open is tried again this often
READ_RETRY_DELAY = 2  # seconds between those retries (whole seconds: the filter's unit)


class CookieKeeper(Protocol):
    """Keeps cookie files current (a vCenter session renewed when it ends)."""

    def keep(self, path: Path) -> None:
        """Write the current cookie to `path` (0600, created) and keep it current while its
        directory exists."""
        ...

    def script(self, path: Path) -> str:
        """nbdkit's cookie-script printing kept file `path`'s cookie once the keeper has
        checked the session; it names files, never the cookie."""
        ...


def write_secret(path: Path, text: str) -> None:
    """Replace `path` by a 0600 file holding `text`, atomically (a reader sees the old or the
    new content, never a part): written beside it, then renamed over it. Raises OSError."""
    new = path.with_name(path.name + ".new")
    new.unlink(missing_ok=True)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(new, path)


@dataclass(frozen=True)
class HttpsDiskSource:
    """A disk's flat extent read over vSphere's datastore file access (nbdkit's curl plugin).

    `url` is https://<vcenter>/folder/<dir>/<name>-flat.vmdk?dcPath=<dc>&dsName=<ds>; the
    request carries the SOAP session's cookie from a 0600 file in the server's private
    directory, never from argv. Without `keeper` the file holds `cookie` (``cookie=+FILE``);
    with one, the keeper writes the session's cookie there, and nbdkit runs the keeper's cookie
    script every `renew` seconds while it reads (``cookie-script``, ``cookie-script-renew``):
    the script has the keeper check the session (logged in again when vCenter ended it, the
    file rewritten) before it prints the file. Reads and opens that meet 401 meanwhile are
    tried again by nbdkit's retry-request filter, READ_RETRIES times every READ_RETRY_DELAY s
    (the script runs again in between), before the copy's own retries. TLS is verified against
    `cafile` (None: the system trust store); `insecure` turns verification off (labs only).
    HTTP has no block status: nbdkit reports the whole extent as data.
    """

    url: str
    cookie: str = field(repr=False)  # "vmware_soap_session=\"...\"" (a secret)
    cafile: Path | None = None
    insecure: bool = False
    timeout: int = 60  # seconds per HTTP request
    keeper: CookieKeeper | None = field(default=None, repr=False, compare=False)
    renew: int = COOKIE_RENEW  # seconds

    @property
    def filters(self) -> tuple[str, ...]:
        return ("retry-request",)

    @property
    def filter_args(self) -> tuple[str, ...]:
        # opens are retried too: the curl plugin's open is an HTTP request (HEAD) with the
        # cookie, and an NBD connection made right after a session ended meets 401 there (the
        # drill test_vcenter_ends_the_session_mid_apply: its copy's connections). A refused TLS
        # handshake or a missing file then fails after READ_RETRIES * READ_RETRY_DELAY s.
        return (f"retry-request-retries={READ_RETRIES}", f"retry-request-delay={READ_RETRY_DELAY}")

    def plugin_args(self, private_dir: Path) -> list[str]:
        secret = private_dir / "cookie"
        args = ["curl", f"url={self.url}"]
        if self.keeper is None:
            write_secret(secret, self.cookie)
            args.append(f"cookie=+{secret}")
        else:
            self.keeper.keep(secret)
            script = self.keeper.script(secret)
            args += [f"cookie-script={script}", f"cookie-script-renew={self.renew}"]
        args += ["followlocation=false", "protocols=https", f"timeout={self.timeout}"]
        if self.insecure:
            args.append("sslverify=false")
        elif self.cafile is not None:
            args.append(f"cainfo={self.cafile}")
        return args

    def describe(self) -> str:
        return f"https {self.url}"


@dataclass(frozen=True)
class FilteredDiskSource:
    """Another DiskSource with nbdkit filters in front of its own (outermost first): the lab's
    fault drills (a slow or failing source host) on any reader, e.g. the https reader's curl
    plugin behind the delay filter. Reads then go through `filters`, then `source`'s filters
    (the https reader's retry-request), then its plugin."""

    source: DiskSource
    extra_filters: tuple[str, ...]
    extra_args: tuple[str, ...] = ()

    @property
    def filters(self) -> tuple[str, ...]:
        return (*self.extra_filters, *getattr(self.source, "filters", ()))

    @property
    def filter_args(self) -> tuple[str, ...]:
        return (*self.extra_args, *getattr(self.source, "filter_args", ()))

    def plugin_args(self, private_dir: Path) -> list[str]:
        return self.source.plugin_args(private_dir)

    def describe(self) -> str:
        return self.source.describe()


STALE_AFTER = 600.0  # seconds: a private directory with no live nbdkit this old is a dead ferry's
_swept: list[bool] = []  # once per process


def sweep_stale(root: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the private directories (`ferry-nbd-*`) a killed ferry left behind: the secrets
    in them (a vCenter session cookie, a password file) outlive it otherwise (break-it 15: a
    kill -9 left live session cookies in /tmp, readable by the same user). Only this user's,
    whose nbdkit (its pidfile) no longer runs (nbdkit ends with ferry: --exit-with-parent), and
    unchanged for STALE_AFTER seconds (one being set up has no pidfile yet). Returns them."""
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob("ferry-nbd-*"):
        try:
            info = path.stat()
        except OSError:
            continue
        young = (now if now is not None else time.time()) - info.st_mtime < STALE_AFTER
        if info.st_uid != os.getuid() or young or _running(path / "nbdkit.pid"):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _running(pidfile: Path) -> bool:
    """The process its pidfile names still runs (a process of another user counts)."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError) as exc:
        return isinstance(exc, PermissionError)
    return True


class NbdkitServer:
    """A running read-only nbdkit serving one DiskSource; use as a context manager."""

    def __init__(
        self,
        source: DiskSource,
        filters: list[str] | None = None,
        filter_args: list[str] | None = None,
    ) -> None:
        self.source = source
        self.filters = [*getattr(source, "filters", ()), *(filters or [])]
        # key=value parameters of the filters
        self.filter_args = [*getattr(source, "filter_args", ()), *(filter_args or [])]
        if not _swept:  # a killed ferry's secrets go with the first server of this one
            _swept.append(True)
            sweep_stale()
        self._dir = Path(tempfile.mkdtemp(prefix="ferry-nbd-"))  # created 0700
        self.socket = self._dir / "nbd.sock"
        self._pidfile = self._dir / "nbdkit.pid"
        self._log = self._dir / "nbdkit.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"nbd+unix:///?socket={self.socket}"

    @property
    def pid(self) -> int | None:
        """The running nbdkit's PID (None when stopped)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def argv(self) -> list[str]:
        filters = [f"--filter={f}" for f in self.filters]
        return [
            "nbdkit",
            "--readonly",
            "--exit-with-parent",
            "--foreground",
            "--unix",
            str(self.socket),
            "--pidfile",
            str(self._pidfile),
            *filters,
            *self.source.plugin_args(self._dir),
            *self.filter_args,
        ]

    def start(self) -> NbdkitServer:
        argv = self.argv()
        with self._log.open("wb") as log:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    env=child_env(),  # no secret of ferry's in /proc/PID/environ
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # A terminal's Ctrl-C reaches ferry only, which ends each copy at a checkpoint
                    # (nbdkit quitting under it would fail reads); --exit-with-parent still ends
                    # nbdkit with ferry, kill -9 included.
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                self.stop()
                raise DataplaneError("nbdkit is not installed: run scripts/setup") from exc
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._pidfile.exists():
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                detail = self._log.read_text(errors="replace").strip().splitlines()[-3:]
                self.stop()
                raise DataplaneError(
                    f"nbdkit did not start for {self.source.describe()}: " + " | ".join(detail)
                )
            time.sleep(0.01)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NbdkitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
