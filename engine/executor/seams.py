"""The two seams apply goes through, each with a production and a lab implementation:

- disk sources: where nbdkit reads a (VM, snapshot, disk) — `source.reader`: VDDK, vCenter's
  datastore file access over HTTPS (nbdkit's curl plugin), or a file (a datastore mount, or the
  lab's frozen snapshot file);
- devices: where an attached volume appears on the conversion host — /dev/disk/by-id (waited
  for, with udev settle) in production, the attachment's connection info in the lab.
"""

from __future__ import annotations

import mmap
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from pyVmomi import vim

from engine.dataplane.nbdkit import (
    COOKIE_RENEW,
    DiskSource,
    FileDiskSource,
    FilteredDiskSource,
    HttpsDiskSource,
    VddkDiskSource,
)
from engine.errors import DataplaneError
from engine.lab.disks import snapshot_file
from engine.lab.faults import RATE_BURST, read_faults
from engine.providers.openstack import volumes
from engine.providers.vsphere.session import (
    COOKIE_CHECK,
    SessionCookies,
    VCenterTarget,
    server_thumbprint,
    session_cookie,
    ssl_context,
)
from engine.providers.vsphere.snapshots import DiskInfo, vm_extent

DEVICE_TIMEOUT = 60.0


class Sources(Protocol):
    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource: ...

    def check(self) -> str | None:
        """Before an apply touches anything: can disks be read this way on this host? Raises
        DataplaneError with what to do when not; returns a line naming what it found (the VDDK
        library), or None."""

    def block_status(self) -> bool:
        """Does the reader say where the disk holds data (else a full copy reads what CBT's
        changeId "*" lists as allocated, or the whole extent)?"""

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        """Before a cutover powers its source off: can this reader open each of `disks` (the
        VM's current ones) now? Raises DataplaneError naming the disk and what to do; a reader
        that learns nothing more this way than its `check` does nothing."""


def dump_plugin(plugin: str, *params: str) -> subprocess.CompletedProcess[str]:
    """`nbdkit PLUGIN [PARAMS] --dump-plugin` (loads the plugin, and VDDK for vddk), its
    output as text; at most 60 s. Raises DataplaneError when nbdkit cannot be run."""
    try:
        return subprocess.run(
            ["nbdkit", plugin, *params, "--dump-plugin"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataplaneError(f"cannot run nbdkit: {exc}") from exc


OPENVDDK_MARK = b"OpenVDDK"  # in OpenVDDK's libvixDiskLib.so (its name and version strings)


def vddk_library(dump: str, libdir: Path) -> str:
    """Which VDDK library `nbdkit vddk libdir=... --dump-plugin` loaded, from its output
    (`vddk_dll=` the library file, `vddk_library_version=` its major version): "OpenVDDK
    (FILE, VDDK API 8)" when the file (or its path) says OpenVDDK, else "VMware VDDK 8 (FILE)".
    Without `vddk_dll=` (nbdkit < 1.22) the file is not known: "VDDK 8 from LIBDIR"."""
    fields = dict(
        line.split("=", 1) for line in dump.splitlines() if line.startswith("vddk_") and "=" in line
    )
    version = fields.get("vddk_library_version", "").strip()
    dll = fields.get("vddk_dll", "").strip()
    if not dll:
        return f"VDDK {version or '(version unknown)'} from {libdir}"
    if _says_openvddk(Path(dll)):
        return f"OpenVDDK ({dll}, VDDK API {version or 'unknown'})"
    return f"VMware VDDK {version or '(version unknown)'} ({dll})"


def _says_openvddk(path: Path) -> bool:
    if "openvddk" in str(path.resolve()).lower():
        return True
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(OPENVDDK_MARK) != -1
    except (OSError, ValueError):  # unreadable, or empty
        return False


@dataclass(frozen=True)
class LabSources:
    lab_dir: Path

    def block_status(self) -> bool:
        return True  # nbdkit's file plugin: SEEK_DATA / SEEK_HOLE

    def check(self) -> None:
        if not (self.lab_dir / "disks").is_dir():
            raise DataplaneError(f"{self.lab_dir} holds no lab disks: is the lab up?")

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        return None  # files: check() saw the directory

    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource:
        filters, args = fault_filters(self.lab_dir, instance_uuid, disk.key)
        return FileDiskSource(
            snapshot_file(self.lab_dir / "disks", instance_uuid, snapshot_moref, disk.key),
            filters=filters,
            filter_args=args,
        )


def fault_filters(
    lab_dir: Path, instance_uuid: str, key: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The nbdkit filters and their parameters that the lab's fault drills put in front of
    disk `key` of VM `instance_uuid` (`ferry lab fault`: EIO at a rate, a delay per read, a
    read rate cap in MiB/s); none when it has no fault."""
    fault = read_faults(lab_dir).get(f"{instance_uuid}/{key}", {})
    filters: list[str] = []
    args: list[str] = []
    if fault.get("read_error_rate"):
        filters.append("error")
        args += ["error=EIO", f"error-pread-rate={fault['read_error_rate']}"]
    if fault.get("read_delay_ms"):
        filters.append("delay")
        args.append(f"rdelay={int(fault['read_delay_ms'])}ms")
    if fault.get("read_rate_mib"):
        filters.append("rate")  # rate= is in bits a second, for all connections together
        bits = round(float(fault["read_rate_mib"]) * 8 * 1024 * 1024)
        args += [f"rate={bits}", f"burstiness={RATE_BURST}"]
    return tuple(filters), tuple(args)


@dataclass(frozen=True)
class LabFaultSources:
    """A production reader (the https reader) in the lab: its disk sources get the filters of
    the lab's fault drills in front (fault_filters), so `ferry lab fault --read-delay` and
    `--read-errors` slow or fail the reads of /folder as they do the file reader's."""

    inner: Sources
    lab_dir: Path

    def block_status(self) -> bool:
        return self.inner.block_status()

    def check(self) -> str | None:
        return self.inner.check()

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        self.inner.probe(vm_moref, disks)

    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource:
        inner = self.inner.source(vm_moref, instance_uuid, snapshot_moref, disk)
        filters, args = fault_filters(self.lab_dir, instance_uuid, disk.key)
        return FilteredDiskSource(inner, filters, args) if filters else inner


@dataclass(frozen=True)
class VddkSources:
    target: VCenterTarget
    libdir: Path

    def block_status(self) -> bool:
        return True  # VDDK's QueryAllocatedBlocks

    def check(self) -> str:
        """nbdkit's vddk plugin loads VDDK from `libdir` (`--dump-plugin` loads the library);
        returns the line naming the library it loaded (`vddk_library`)."""
        done = dump_plugin("vddk", f"libdir={self.libdir}")
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise DataplaneError(
                f"nbdkit cannot read disks through VDDK from {self.libdir}: {why}. "
                "Debian's nbdkit has no vddk plugin: build it from nbdkit's source or use a "
                "distribution that ships it, and unpack VDDK or OpenVDDK there "
                "(docs/production.md, VDDK); nothing was changed"
            )
        return f"source.reader vddk: {vddk_library(done.stdout, self.libdir)}"

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        return None  # VDDK opens a disk only with a snapshot: nothing to open before one

    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource:
        thumbprint = self.target.thumbprint or server_thumbprint(self.target.host, self.target.port)
        return VddkDiskSource(
            self.target.host,
            self.target.user,
            self.target.password,
            thumbprint,
            vm_moref,
            snapshot_moref,
            disk.file_name,
            self.libdir,
        )


@dataclass(frozen=True)
class DatastorePathSources:
    """Cold migration from a local or NFS mount of the datastores (`source.vcenter.
    datastore_path`): a disk "[ds] dir/name.vmdk" is read from <root>/ds/<its flat extent>, the
    file the VM's layoutEx lists (usually dir/name-flat.vmdk), which the snapshot ferry took
    keeps frozen while it is read."""

    root: Path
    si: Any = field(default=None, repr=False)

    def block_status(self) -> bool:
        return True

    def check(self) -> None:
        if not self.root.is_dir():
            raise DataplaneError(
                f"source.vcenter.datastore_path {self.root} is not a directory on this host: "
                "mount the datastores there; nothing was changed"
            )

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        """Each disk's flat extent is a readable file under the mount (a datastore not mounted
        here, or mounted without read access, fails before the power-off). Raises
        DataplaneError naming the disk."""
        if self.si is None:
            raise DataplaneError("source.reader datastore_path needs a vCenter session")
        vm = vim.VirtualMachine(vm_moref, self.si._stub)
        for disk in disks:
            path = flat_extent(self.root, vm_extent(self.si, vm, disk.file_name))
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise DataplaneError(
                    f"disk {disk.key} ({disk.file_name}): cannot read {path} "
                    f"({exc.strerror or exc}): is its datastore mounted under "
                    "source.vcenter.datastore_path?"
                ) from exc

    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource:
        if self.si is None:
            raise DataplaneError("source.reader datastore_path needs a vCenter session")
        vm = vim.VirtualMachine(vm_moref, self.si._stub)
        return FileDiskSource(flat_extent(self.root, vm_extent(self.si, vm, disk.file_name)))


@dataclass(frozen=True)
class HttpsSources:
    """vSphere's datastore file access: a disk "[ds] dir/name.vmdk" at a snapshot is read from
    https://<vcenter>/folder/<extent>?dcPath=<datacenter>&dsName=ds, its flat extent as the
    VM's layoutEx lists it (usually dir/name-flat.vmdk),
    which ferry's snapshot keeps frozen (guest writes go to the snapshot's delta disk) while it
    is read. Exact only when ferry's snapshot is the VM's only one (the plan refuses others) and
    the disk is a flat one. Authenticated with the apply's SOAP session cookie (a 0600 file
    that `cookies` keeps current: a session vCenter ends mid-copy is logged in again and nbdkit's
    cookie script rereads the file every `renew` seconds), TLS verified against the spec's CA
    file (or the system trust store)."""

    target: VCenterTarget
    si: Any = field(repr=False)
    cookie_check: float = COOKIE_CHECK  # seconds between two checks of the session
    renew: int = COOKIE_RENEW  # seconds between two reads of the cookie file by nbdkit
    cookies: SessionCookies = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cookies", SessionCookies(self.si, self.cookie_check))

    def block_status(self) -> bool:
        return False

    def check(self) -> None:
        """nbdkit's curl plugin is there, and TLS can be verified the way curl does: against a
        CA (a pinned SHA-1 thumbprint is a VDDK notion curl has no option for)."""
        if self.target.thumbprint and not self.target.insecure:
            raise DataplaneError(
                "source.reader https verifies vCenter's certificate against a CA, not a pinned "
                "thumbprint: set source.vcenter.tls.ca_file (the CA or self-signed certificate "
                "vCenter presents); nothing was changed"
            )
        if self.target.cafile is not None and not self.target.cafile.is_file():
            raise DataplaneError(
                f"the vCenter CA file {self.target.cafile} does not exist; nothing was changed"
            )
        done = dump_plugin("curl")
        if done.returncode != 0:
            raise DataplaneError(
                "nbdkit has no curl plugin (source.reader https needs it): install Debian's "
                "nbdkit (or nbdkit-plugin-curl); nothing was changed"
            )

    def probe(self, vm_moref: str, disks: list[DiskInfo]) -> None:
        """A HEAD request with the session's cookie on each disk's flat extent, as the copy's
        nbdkit curl plugin opens it: a session without the Datastore.Browse privilege (403), a
        path to the datastore that a proxy or firewall blocks, an extent /folder does not serve
        (404) fail here, before the power-off, not in the copy after it (break-it 15 F9).
        Raises DataplaneError naming the disk and the answer."""
        vm = vim.VirtualMachine(vm_moref, self.si._stub)
        datacenter = datacenter_path(vm)
        context = ssl_context(self.target)
        for disk in disks:
            url = folder_url(self.target, datacenter, vm_extent(self.si, vm, disk.file_name))
            request = urllib.request.Request(
                url, method="HEAD", headers={"Cookie": session_cookie(self.si)}
            )
            try:
                with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT, context=context):
                    pass
            except urllib.error.HTTPError as exc:
                raise DataplaneError(_refused_line(disk, exc.code)) from exc
            except OSError as exc:  # refused, reset, TLS, timed out
                raise DataplaneError(
                    f"disk {disk.key}: vCenter's datastore file access cannot be reached "
                    f"({_reason(exc)}): source.reader https reads disks there"
                ) from exc

    def source(
        self, vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
    ) -> DiskSource:
        vm = vim.VirtualMachine(vm_moref, self.si._stub)
        return HttpsDiskSource(
            folder_url(self.target, datacenter_path(vm), vm_extent(self.si, vm, disk.file_name)),
            session_cookie(self.si),
            self.target.cafile,
            self.target.insecure,
            keeper=self.cookies,
            renew=self.renew,
        )


PROBE_TIMEOUT = 30  # seconds for a HEAD on /folder


def _refused_line(disk: DiskInfo, status: int) -> str:
    """The line for an HTTP `status` /folder answered for `disk`'s extent (vSphere's datastore
    file access: 401/403 when the session lacks Datastore.Browse on the datastore, 404 when the
    file is not there)."""
    why = {
        401: "the session is not authorized there",
        403: "the session's user lacks the Datastore.Browse privilege on its datastore",
        404: "vCenter serves no such file (the disk's flat extent, as layoutEx lists it)",
    }.get(status, "source.reader https cannot read it")
    return (
        f"disk {disk.key} ({disk.file_name}): vCenter's datastore file access answered HTTP "
        f"{status}: {why} (docs/production.md, vCenter privileges)"
    )


def _reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


def folder_url(target: VCenterTarget, datacenter: str, extent: str) -> str:
    """The datastore file access URL of file `extent` ("[ds] dir/name-flat.vmdk", a flat extent
    as layoutEx lists it): https://host:port/folder/dir/name-flat.vmdk?dcPath=<datacenter>&
    dsName=ds. Raises DataplaneError when `extent` is not a datastore path."""
    datastore, relative = _split_datastore_path(extent)
    query = urlencode({"dcPath": datacenter, "dsName": datastore}, quote_via=quote)
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"https://{host}:{target.port}/folder/{quote(relative)}?{query}"


def datacenter_path(obj: Any) -> str:
    """The inventory path of the datacenter holding `obj` ("DC0", "Region-A/DC0"), as dcPath
    names it. Raises DataplaneError when `obj` is in no datacenter."""
    node = obj
    while node is not None and not isinstance(node, vim.Datacenter):
        node = _above(node)
    if node is None:
        raise DataplaneError(f"{obj} is in no datacenter")
    names = [str(node.name)]
    parent = node.parent
    while parent is not None and isinstance(parent.parent, vim.Folder):  # below the root folder
        names.append(str(parent.name))
        parent = parent.parent
    return "/".join(reversed(names))


def _above(entity: Any) -> Any:
    """The entity above `entity` on its way to its datacenter: its `parent`, or for a VM in a
    vApp, which vSphere leaves without one, its `parentVApp` (a VirtualApp: a resource pool
    whose `parent` chain leads to the datacenter's hostFolder; pyVmomi's VirtualMachine.
    parentVApp; break-it 15b N3: "is in no datacenter"). None above the root folder."""
    parent = entity.parent
    if parent is None and isinstance(entity, vim.VirtualMachine | vim.VirtualApp):
        return entity.parentVApp
    return parent


def _split_datastore_path(file_name: str) -> tuple[str, str]:
    if not file_name.startswith("[") or "]" not in file_name:
        raise DataplaneError(f"{file_name!r} is not a datastore path like '[ds] dir/disk.vmdk'")
    datastore, rest = file_name[1:].split("]", 1)
    return datastore, rest.strip()


def flat_extent(root: Path, extent: str) -> Path:
    """<root>/<datastore>/<dir>/<file> for extent "[datastore] dir/file" (as layoutEx lists
    it). Raises DataplaneError when that file is not there."""
    datastore, relative = _split_datastore_path(extent)
    path = root / datastore / relative
    if not path.is_file():
        raise DataplaneError(
            f"{extent} is not at {path}: is the datastore {datastore!r} mounted under {root}, "
            "and is the disk a flat (NFS or local) one?"
        )
    return path


class Devices(Protocol):
    def device(self, conn: Any, volume_id: str, server_id: str) -> Path: ...


class ConnectionInfoDevices:
    """The lab: the cinder attachment's connection info names the device (the volume's file)."""

    def device(self, conn: Any, volume_id: str, server_id: str) -> Path:
        info = volumes.connection_info(conn, volume_id, server_id)
        path = info.get("device_path")
        if not path or not Path(path).exists():
            raise DataplaneError(f"attachment of volume {volume_id} names no device: {info}")
        return Path(path)


@dataclass(frozen=True)
class LabDevices:
    """The lab's device seam: the attachment's connection info, except for the volume of a disk
    that a fault drill filled (`ferry lab fault --device-full`): /dev/full, where every write
    fails with ENOSPC; or made lossy (`--device-lossy`): /dev/null, where writes are lost."""

    lab_dir: Path

    def device(self, conn: Any, volume_id: str, server_id: str) -> Path:
        path = ConnectionInfoDevices().device(conn, volume_id, server_id)
        metadata = conn.block_storage.get_volume(volume_id).metadata or {}
        name = f"{metadata.get('ferry_vm')}/{metadata.get('ferry_disk')}"
        fault = read_faults(self.lab_dir).get(name, {})
        if fault.get("device_full"):
            return Path("/dev/full")
        if fault.get("device_lossy"):
            return Path("/dev/null")
        return path


@dataclass(frozen=True)
class ByIdDevices:
    """Production: the attached volume's link in /dev/disk/by-id, under any name a KVM guest
    gives it: virtio-blk shows the first 20 characters of the volume id as the serial,
    virtio-scsi (hw_disk_bus=scsi) the whole id (or its first 20 characters on older QEMU).
    Waited for with `udevadm settle` until `timeout`; a clear error names what was looked for."""

    root: Path = Path("/dev/disk/by-id")
    timeout: float = DEVICE_TIMEOUT

    def candidates(self, volume_id: str) -> list[Path]:
        short = volume_id[:20]
        names = [f"virtio-{short}"]
        for serial in dict.fromkeys((volume_id, short)):
            names += [f"scsi-0QEMU_QEMU_HARDDISK_{serial}", f"scsi-SQEMU_QEMU_HARDDISK_{serial}"]
        return [self.root / name for name in names]

    def device(self, conn: Any, volume_id: str, server_id: str) -> Path:
        links = self.candidates(volume_id)
        deadline = time.monotonic() + self.timeout
        while True:
            found = next((link for link in links if link.exists()), None)
            if found is not None:
                return found.resolve()
            if time.monotonic() > deadline:
                raise DataplaneError(
                    f"volume {volume_id} did not appear in {self.root} within "
                    f"{self.timeout:.0f} s (looked for {links[0].name} and "
                    f"{links[1].name}): is this apply running on the conversion host "
                    f"{server_id}?"
                )
            _settle()
            time.sleep(0.2)


def _settle() -> None:
    """Let udev finish its queue (new links); a host without udevadm just waits."""
    try:
        subprocess.run(["udevadm", "settle", "--timeout=5"], check=False, capture_output=True)
    except OSError:
        time.sleep(0.3)
