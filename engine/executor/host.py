"""The host-bound steps: what a `ferry agent` on each conversion host runs
(../shared/DESIGN.md §8), and the coordinator runs in-process when no broker is configured.

- `sync`: attach the volume to the conversion host, find its device, copy the source disk
  into it, verify, detach (`SyncJob` → `SyncResult`); the volume's `ferry_updated_at` stamp
  is cleared before the attach and set after the detach (`detach_stamped`);
- `compare`: a volume (attached and detached here) or a local file (image mode) compared whole
  with the source disk, nothing copied: `--verify` (`SyncJob` → `SyncResult`);
- `convert`: a guest's volumes attached, converted in place by virt-v2v-in-place, detached
  (`ConvertJob` → `ConvertResult`).

Inputs and outputs are plain, JSON-serialisable data; progress goes back through callbacks.
These steps decide nothing about *what* to copy or convert (the coordinator, executor.apply,
does) and write no state.
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.conversion import v2v
from engine.dataplane.blkhash import AnyOf
from engine.dataplane.cbt import Extent, total_bytes
from engine.dataplane.copy import (
    CopyOptions,
    CopyStats,
    check_source_size,
    copy,
    digest,
    file_digest,
    first_difference,
)
from engine.dataplane.nbdkit import DiskSource, NbdkitServer
from engine.errors import ChangedOutsideError, ConversionError, StoppedError, VerifyError
from engine.executor.seams import Devices, Sources
from engine.model.state import STAMP_KEY, VERIFIED_AREAS, VERIFIED_WHOLE
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo
from engine.units import duration, human


@dataclass(frozen=True)
class SyncJob:
    """One disk's sync on one conversion host, as plain data (`to_json` / `from_json`).

    - source: {vm_moref, instance_uuid, snapshot_moref, key, capacity (bytes), file_name, thin,
      change_id}: the disk at the snapshot it is read from;
    - areas: [(offset, length), ...] in bytes to copy (None: the whole disk), from `start_at`;
    - rewrite: areas copied first, with zeros written explicitly, because the volume holds older
      bytes there (what changed below a resumed copy's checkpoint since the copy began);
    - dst_is_zero: the volume reads as zeros at `areas` beyond `start_at` (holes not written);
    - verify: "" (off), VERIFIED_WHOLE or VERIFIED_AREAS (the digest over `areas` only);
    - data: where the disk holds data at the snapshot, for a whole-disk copy or verify through a
      reader without block status (the https reader: CBT's allocated areas, changeId "*"); the
      source is read only there, elsewhere copied and hashed as zeros, unread (None: read where
      block status says, or everything);
    - unchanged_since: the volume's Cinder updated_at when the coordinator sent the job (None:
      not checked): the host writes nothing into a volume changed since (break-it 12m F7: a
      test boot while the copy waited in an agent's queue), ChangedOutsideError;
    - urgent: its VM's source is off (a cutover's final sync): it takes one of the host's urgent
      slots, never waiting behind other VMs' copies (break-it 12o H1).
    """

    volume_id: str
    host_id: str
    source: dict[str, Any]
    areas: list[Extent] | None = None
    start_at: int = 0
    dst_is_zero: bool = False
    verify: str = ""
    rewrite: list[Extent] = field(default_factory=list)
    data: list[Extent] | None = None
    unchanged_since: str | None = None
    urgent: bool = False

    def disk(self) -> DiskInfo:
        s = self.source
        return DiskInfo(
            int(s["key"]),
            int(s["capacity"]),
            str(s["file_name"]),
            bool(s["thin"]),
            s["change_id"],
            tuple(str(p) for p in s.get("parents") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncJob:
        def extents(value: Any) -> list[Extent]:
            return [(int(o), int(n)) for o, n in value]

        return cls(
            volume_id=str(data["volume_id"]),
            host_id=str(data["host_id"]),
            source=dict(data["source"]),
            areas=None if data.get("areas") is None else extents(data["areas"]),
            start_at=int(data.get("start_at", 0)),
            dst_is_zero=bool(data.get("dst_is_zero", False)),
            verify=str(data.get("verify", "")),
            rewrite=extents(data.get("rewrite") or []),
            data=None if data.get("data") is None else extents(data["data"]),
            unchanged_since=data.get("unchanged_since"),
            urgent=bool(data.get("urgent", False)),  # absent: sent by an older coordinator
        )


def source_of(
    vm_moref: str, instance_uuid: str, snapshot_moref: str, disk: DiskInfo
) -> dict[str, Any]:
    """A SyncJob's `source` for `disk` of a VM at a snapshot: plain JSON values (lists, not
    tuples), so a job equals itself after a trip through the broker."""
    return {
        "vm_moref": vm_moref,
        "instance_uuid": instance_uuid,
        "snapshot_moref": snapshot_moref,
        **asdict(disk),
        "parents": list(disk.parents),
    }


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: bytes read from the source, written, zeroed explicitly and skipped
    (zeros on a zero destination), reads retried, seconds, the verified sha256 (None when
    not verified) with what it covers, where it read, and the seconds it waited for one of
    the host's slots before it moved a byte (an agent's max_parallel; not in `seconds`)."""

    bytes_read: int
    bytes_written: int
    bytes_zeroed: int
    bytes_skipped: int
    retries: int
    seconds: float
    sha256: str | None = None
    verified: str | None = None
    source: str = ""  # where the bytes were read (DiskSource.describe(): no secrets)
    waited: float = 0.0  # seconds spent waiting for a slot on the host

    def stats(self) -> CopyStats:
        return CopyStats(
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            bytes_zeroed=self.bytes_zeroed,
            bytes_skipped=self.bytes_skipped,
            retries=self.retries,
            seconds=self.seconds,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncResult:
        """The result an agent sent (`to_json`); fields this ferry does not know (an agent of
        a newer ferry's) are left out rather than failing the step."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Callbacks:
    """How the host reports back: `checkpoint(offset)` (everything below it is on the device),
    `rewritten()` (the rewrite areas are written and flushed), `progress(done, total)` (data
    bytes), `cancel` (set: stop at the next flushed checkpoint, StoppedError) and `written()`
    (the copy's bytes are on the volume, flushed and verified as asked: what is left is the
    detach, so the copy's slot may go to the next one)."""

    checkpoint: Callable[[int], None] = lambda _: None
    rewritten: Callable[[], None] = lambda: None
    progress: Callable[[int, int], None] = lambda _done, _total: None
    cancel: threading.Event = field(default_factory=threading.Event)
    written: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Host:
    """A conversion host's seams: the cloud connection (attach/detach), where disks are read
    from, where attached volumes appear, and its slots (an agent's: `max_parallel` copies,
    compares or conversions move bytes at once; its attaches and detaches run beside them, as
    Forklift's scheduler counts disk transfers; None: the walker's pool is the only bound)."""

    conn: Any
    sources: Sources
    devices: Devices
    slots: threading.BoundedSemaphore | None = None
    # the slots of urgent steps (a cutover's, its source off: SyncJob.urgent, conversions), as
    # many, used by them only: they never wait behind other VMs' copies (break-it 12o H1)
    urgent_slots: threading.BoundedSemaphore | None = None


SLOT_WAIT = 1.0  # seconds between a waiting step's checks that it was asked to stop


def acquire_or_stop(
    lock: threading.Lock | threading.BoundedSemaphore,
    cancel: threading.Event | None,
    stopped: str,
    every: float = SLOT_WAIT,
) -> None:
    """Wait for `lock`, checking `cancel` every `every` seconds. Raises StoppedError(`stopped`)
    (nothing was done yet) when it is set meanwhile."""
    while not lock.acquire(timeout=every):
        if cancel is not None and cancel.is_set():
            raise StoppedError(stopped)


@contextmanager
def slot(host: Host, cancel: threading.Event, what: str, urgent: bool = False) -> Iterator[None]:
    """One of `host`'s slots (`urgent`: of its urgent slots) held while `what` (e.g. "the copy
    into volume V") moves bytes. Raises StoppedError (nothing moved) when `cancel` is set while
    it waits."""
    slots = host.urgent_slots if urgent else host.slots
    if slots is None:
        yield
        return
    acquire_or_stop(slots, cancel, f"stopped while {what} waited for a slot on the conversion host")
    try:
        yield
    finally:
        slots.release()


def unchanged(conn: Any, job: SyncJob) -> None:
    """Right before the host attaches the job's volume: it is as the coordinator saw it when it
    sent the job (`unchanged_since`, Cinder's updated_at; None: it was attached to this host
    then, and the volume's own stamp after that task's detach is checked, when it has one),
    unless it is attached to this host already (an earlier delivery of the job attached it,
    then its agent was killed: a redelivery resumes; attached here, nothing else could attach
    it), or its value is the stamp a ferry host wrote right after its own detach (that delivery
    detached, then its agent died). Raises ChangedOutsideError (nothing written),
    OpenStackError (not readable)."""
    now = volumes.seen(conn, job.volume_id)  # one GET for all
    if job.host_id in now.servers:
        return
    # sent while attached here (an earlier task of ours held it): since then that task let go,
    # its stamp says the value right after its own detach ("" or none: unknown, trusted)
    stamp = now.metadata.get(STAMP_KEY) or None
    since = job.unchanged_since or stamp
    # a value equal to the stamp was last moved by a ferry host's own detach, which attached
    # only after this same check passed: a delivery of this job whose agent detached, then died
    # before its ack, is taken again here (the measurement's test_agents flake: refused)
    if since is not None and now.updated_at not in (since, stamp):
        raise ChangedOutsideError(
            f"volume {job.volume_id} changed outside ferry after its copy was sent (Cinder "
            f"updated_at {since} → {now.updated_at}: attached or written by "
            "something else while the copy waited for its host): nothing written; plan again "
            "(it copies the volume in full)"
        )


def detach_stamped(conn: Any, host_id: str, volume_id: str) -> None:
    """A sync's or compare's own detach, then the volume's Cinder updated_at right after it
    stamped on the volume (volumes.stamp, model.state.STAMP_KEY): whoever plans next knows it
    even when the coordinator recorded nothing (it lost the broker or was killed while this
    host still held the volume: break-it 12n H1), stopped, failed or done alike. Raises
    OpenStackError (the detach; no stamp then)."""
    volumes.detach(conn, host_id, volume_id)
    volumes.stamp(conn, volume_id)


def sync(job: SyncJob, host: Host, calls: Callbacks) -> SyncResult:
    """Attach `job.volume_id` to `job.host_id`, copy (rewrite areas first, then the areas from
    `start_at`), verify as asked, detach (also after a failure).

    Raises DataplaneError (read/write failures), VerifyError (digests differ), StoppedError
    (cancelled: the last checkpoint given is flushed)."""
    disk = job.disk()
    s = job.source
    source = host.sources.source(
        str(s["vm_moref"]), str(s["instance_uuid"]), str(s["snapshot_moref"]), disk
    )
    unchanged(host.conn, job)
    volumes.unstamp(host.conn, job.volume_id)  # cut off before the detach: no stamp vouches
    volumes.attach(host.conn, job.host_id, job.volume_id)
    try:
        device = host.devices.device(host.conn, job.volume_id, job.host_id)
        began = time.monotonic()
        with slot(host, calls.cancel, f"the copy into volume {job.volume_id}", job.urgent):
            waited = time.monotonic() - began
            stats = _copy_job(job, source, device, calls)
            try:
                sha256 = _verify(job, source, device, disk, calls.cancel) if job.verify else None
            except StoppedError as exc:  # copied in full, stopped while verifying
                raise StoppedError(str(exc), stats.moved()) from exc
        calls.written()
    finally:
        detach_stamped(host.conn, job.host_id, job.volume_id)
    return SyncResult(
        stats.bytes_read,
        stats.bytes_written,
        stats.bytes_zeroed,
        stats.bytes_skipped,
        stats.retries,
        round(stats.seconds, 3),
        sha256,
        job.verify or None,
        source.describe(),
        round(waited, 3),
    )


def compare_job(
    target: str, host_id: str, source: dict[str, Any], data: list[Extent] | None
) -> SyncJob:
    """The job of a `--verify` compare: `target` (a volume ID on server `host_id`, or with
    `host_id` "" a local file's path: image mode) compared whole with `source` (`source_of`);
    `data` as SyncJob's (where the disk holds data, for a reader without block status)."""
    return SyncJob(target, host_id, source, verify=VERIFIED_WHOLE, data=data)


def compare(job: SyncJob, host: Host, cancel: threading.Event) -> SyncResult:
    """Compare `job.volume_id` whole with the source disk at the job's snapshot (the copy's
    verify, nothing copied): a volume is attached to `job.host_id` first and detached after
    (also after a failure); with `host_id` "" it is a local file's path (image mode), read as
    it is. For a replica nothing else was planned for (`--verify`).

    Raises VerifyError (they differ: it names the volume or file and the first differing
    offset), DataplaneError (read failures), StoppedError (cancelled)."""
    disk = job.disk()
    s = job.source
    source = host.sources.source(
        str(s["vm_moref"]), str(s["instance_uuid"]), str(s["snapshot_moref"]), disk
    )
    whole = SyncJob(job.volume_id, job.host_id, job.source, verify=VERIFIED_WHOLE, data=job.data)
    began = time.monotonic()
    if not job.host_id:  # a local file
        sha256 = _verify(whole, source, Path(job.volume_id), disk, cancel)
        return SyncResult(0, 0, 0, 0, 0, round(time.monotonic() - began, 3), sha256, VERIFIED_WHOLE)
    volumes.unstamp(host.conn, job.volume_id)
    volumes.attach(host.conn, job.host_id, job.volume_id)
    try:
        device = host.devices.device(host.conn, job.volume_id, job.host_id)
        with slot(host, cancel, f"the compare of volume {job.volume_id}"):
            sha256 = _verify(whole, source, device, disk, cancel)
    finally:
        detach_stamped(host.conn, job.host_id, job.volume_id)
    seconds = round(time.monotonic() - began, 3)
    return SyncResult(0, 0, 0, 0, 0, seconds, sha256, VERIFIED_WHOLE)


def last_verify(change_id: str | None, result: SyncResult) -> dict[str, Any]:
    """A compare's `last_verify` record: {at (epoch seconds), change_id, sha256, seconds}."""
    return {
        "at": time.time(),
        "change_id": change_id,
        "sha256": result.sha256,
        "seconds": result.seconds,
    }


def compared_line(address: str, target: str, job: SyncJob, result: SyncResult) -> str:
    """What a compare found, for people: '<address>: <target> equals disk K at snapshot S
    (sha256 …, 2 GiB compared in 3.1 s)'."""
    disk = job.disk()
    return (
        f"{address}: {target} equals disk {disk.key} at snapshot {job.source['snapshot_moref']} "
        f"(sha256 {result.sha256}, {human(disk.capacity)} compared in "
        f"{duration(result.seconds)})"
    )


@dataclass(frozen=True)
class ConvertJob:
    """A guest's conversion on one conversion host, as plain data (`to_json` / `from_json`):
    its volumes (in the conversion's disk order) attached to server `host_id`, the guest's
    name, the conversion change's `conversion` ({disks: [{key, controller_key}], macs,
    firmware, memory_mb, vcpus, guest_id, firstboot (the spec's paths, where the coordinator
    read them), debug}), `log_name`, the file (without .log) the tool's output is appended to
    in the host's log directory, and `scripts`, the first-boot scripts' contents
    (`firstboot_scripts`): an agent's host need not hold the spec's files."""

    host_id: str
    volume_ids: list[str]
    name: str
    conversion: dict[str, Any]
    log_name: str
    scripts: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvertJob:
        return cls(
            host_id=str(data["host_id"]),
            volume_ids=[str(v) for v in data["volume_ids"]],
            name=str(data["name"]),
            conversion=dict(data["conversion"]),
            log_name=str(data["log_name"]),
            scripts=[{str(k): str(v) for k, v in s.items()} for s in data.get("scripts") or []],
        )


def firstboot_scripts(paths: Sequence[str]) -> list[dict[str, str]]:
    """The first-boot scripts at `paths` (on the machine running the apply, where the spec
    is) as [{name: the file's name, data: its bytes in base64}], in order, for a ConvertJob.

    Raises ConversionError naming a script that cannot be read (moved or deleted since the
    plan)."""
    scripts = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConversionError(
                f"first-boot script {path}: cannot be read ({exc.strerror or exc}): the "
                "conversion needs it (conversion.firstboot)"
            ) from exc
        scripts.append({"name": Path(path).name, "data": base64.b64encode(data).decode()})
    return scripts


@contextmanager
def written_scripts(scripts: list[dict[str, str]]) -> Iterator[tuple[Path, ...]]:
    """The job's first-boot scripts written to a private temporary directory on this host
    (each in a folder of its own, so its name is kept and two of one name do not clash,
    mode 0700); their paths, in order. Removed when the block ends."""
    if not scripts:
        yield ()
        return
    with tempfile.TemporaryDirectory(prefix="ferry-firstboot-") as tmp:
        paths = []
        for index, script in enumerate(scripts):
            folder = Path(tmp) / str(index)
            folder.mkdir()
            path = folder / script["name"]
            path.write_bytes(base64.b64decode(script["data"]))
            path.chmod(0o700)
            paths.append(path)
        yield tuple(paths)


@dataclass(frozen=True)
class ConvertResult:
    """A conversion done: the tool's seconds, and where its output is (a path on the host)."""

    seconds: float
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def convert(
    job: ConvertJob,
    host: Host,
    log_dir: Path,
    cancel: threading.Event,
    started: Callable[[str], None] = lambda _: None,
) -> ConvertResult:
    """Attach the job's volumes to `job.host_id`, convert the guest in place with
    virt-v2v-in-place (its output appended to `<log_dir>/<log_name>.log`), detach them (also
    after a failure). `started(line)` is told once the tool is about to run.

    Raises ConversionError (the tool failed, is missing, or a Windows guest lacks virtio-win),
    StoppedError (`cancel` set: the tool was stopped), OpenStackError (attach/detach)."""
    after = job.conversion
    if str(after.get("guest_id") or "").startswith("windows"):
        v2v.check_windows_drivers()
    log = log_dir / f"{job.log_name}.log"
    attached: list[str] = []
    try:
        paths = []
        for volume_id in job.volume_ids:
            volumes.attach(host.conn, job.host_id, volume_id)
            attached.append(volume_id)
            paths.append(host.devices.device(host.conn, volume_id, job.host_id))
        guest = v2v.guest_of(job.name, paths, after)
        with (
            slot(host, cancel, f"the conversion of {job.name}", urgent=True),  # source off
            written_scripts(job.scripts) as firstboot,
        ):
            started(f"converting with virt-v2v-in-place (log {log})")
            options = v2v.Options(
                firstboot=firstboot,
                debug=bool(after.get("debug")),
                cancel=cancel,  # Ctrl-C: stopped, then restored like a failed conversion
            )
            return ConvertResult(v2v.convert(guest, log, options), str(log))
    finally:
        for volume_id in attached:
            volumes.detach(host.conn, job.host_id, volume_id)


def _copy_job(job: SyncJob, source: DiskSource, device: Path, calls: Callbacks) -> CopyStats:
    """The rewrite areas, then the areas from `start_at`, into `device`: what both moved.

    Raises StoppedError (cancelled: `moved` counts both copies' bytes until the stop),
    DataplaneError."""
    total = CopyStats()
    try:
        return _copy_parts(job, source, device, calls, total)
    except StoppedError as exc:
        _add(total, CopyStats.of_stop(exc))
        raise StoppedError(str(exc), total.moved()) from exc


def _copy_parts(
    job: SyncJob, source: DiskSource, device: Path, calls: Callbacks, total: CopyStats
) -> CopyStats:
    """_copy_job's copies, each added to `total` once it completed."""
    disk = job.disk()
    with NbdkitServer(source) as server:
        check_source_size(server.uri, disk.capacity, f"disk {disk.key}'s {source.describe()}")
        if job.rewrite:
            _add(total, _rewrite(job, server.uri, device, calls))
            calls.rewritten()
        options = CopyOptions(
            dst_is_zero=job.dst_is_zero,
            start_at=job.start_at,
            checkpoint=calls.checkpoint,
            on_bytes=calls.progress,
            cancel=calls.cancel,
        )
        data = job.data if job.areas is None else None  # a whole copy: read where data is
        _add(total, copy(server.uri, device, job.areas, options, data))
    return total


def _rewrite(job: SyncJob, uri: str, device: Path, calls: Callbacks) -> CopyStats:
    """A resume's first copy: the areas changed below its checkpoint since the copy began.

    Raises StoppedError saying the checkpoint the next apply resumes from (`start_at`, which
    the record keeps: the copy's own "stopped at" is an offset inside these areas, 0 B for the
    first; break-it 12d item 7c), DataplaneError."""
    options = CopyOptions(dst_is_zero=False, on_bytes=calls.progress, cancel=calls.cancel)
    try:
        return copy(uri, device, job.rewrite, options)
    except StoppedError as exc:
        raise StoppedError(
            f"stopped while rewriting the {human(total_bytes(job.rewrite))} changed below the "
            f"checkpoint; resumes from the checkpoint at {human(job.start_at)} of "
            f"{human(job.disk().capacity)}, rewriting those areas first",
            exc.moved,
        ) from exc


def _add(total: CopyStats, more: CopyStats) -> None:
    total.bytes_read += more.bytes_read
    total.bytes_written += more.bytes_written
    total.bytes_zeroed += more.bytes_zeroed
    total.bytes_skipped += more.bytes_skipped
    total.requests += more.requests
    total.retries += more.retries
    total.seconds += more.seconds


def _verify(
    job: SyncJob, source: DiskSource, device: Path, disk: DiskInfo, stop: threading.Event
) -> str:
    """The digest (engine.dataplane.blkhash) of the source and the device over the whole disk
    or the job's areas, read at once; a stop mid-verify raises StoppedError (the copy stays
    unrecorded and is verified next time). When they differ, both are read again to name the
    first differing offset."""
    areas = job.areas if job.verify == VERIFIED_AREAS else None
    assert job.verify in (VERIFIED_WHOLE, VERIFIED_AREAS), job.verify
    with NbdkitServer(source) as server:
        check_source_size(server.uri, disk.capacity, f"disk {disk.key}'s {source.describe()}")
        want, got = _digests(job, server.uri, (device, disk.capacity, areas), stop)
        if got == want:
            return got
        at = first_difference(server.uri, device, disk.capacity, areas=areas, cancel=stop)
    raise VerifyError(
        f"verify: disk {disk.key} (volume {job.volume_id}) differs from the source "
        f"{_where(at)}: {_how(device, disk.capacity, areas, (got, want))}"
    )


def _digests(
    job: SyncJob,
    uri: str,
    device: tuple[Path, int, list[Extent] | None],
    stop: threading.Event,
) -> tuple[str, str]:
    """(the source's digest at `uri`, the device's) over the same bytes (`device`: its path,
    the disk's capacity in bytes, the areas or None for the whole disk), both read at once:
    the source over the network, the volume from its device, each its own resource, so a
    verify lasts the longer of the two, not their sum. Either failing stops the other; `stop`
    set: StoppedError. Raises DataplaneError, OSError (the device)."""
    path, capacity, areas = device
    halt = threading.Event()
    either = AnyOf(stop, halt)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-device") as pool:
        theirs = pool.submit(file_digest, path, capacity, areas=areas, cancel=either)
        theirs.add_done_callback(lambda f: halt.set() if f.exception() else None)
        try:
            want = digest(uri, areas=areas, data=job.data, cancel=either)
        except StoppedError:
            if halt.is_set() and not stop.is_set():  # the device's read failed: say that
                theirs.result()
            raise
        except BaseException:
            halt.set()
            raise
        return want, theirs.result()


def _where(at: int | None) -> str:
    if at is None:
        return "(read again: no byte differs)"
    return f"at offset {at} ({human(at)})" if at else "at offset 0"


def _how(device: Path, capacity: int, areas: list[Extent] | None, digests: tuple[str, str]) -> str:
    """Why a verify failed, for people: a device that ends before the disk does (a lost or
    short volume: /dev/null reads nothing) says where it ends, not the sha256 of what little it
    read (break-it 12d item 7d: "at offset 0 (0 B): sha256 … e3b0c44298fc…", the hash of
    nothing); else both sha256s."""
    end = _end(device)
    if end < capacity:
        return (
            f"the volume's device ends at {human(end)} of the disk's "
            f"{human(capacity)}: nothing past its end was kept"
        )
    over = "the areas copied" if areas is not None else "the whole disk"
    got, want = digests
    return f"sha256 hash list over {over} {got[:12]}…, the source's {want[:12]}…"


def _end(device: Path) -> int:
    """Where a file or block device ends (bytes): /dev/null's end is 0."""
    with device.open("rb") as f:
        return f.seek(0, os.SEEK_END)


# the copy and verify of a sync onto any writable path (output: image writes local files)
copy_into = _copy_job
verify_copy = _verify
