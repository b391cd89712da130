"""destination.output: image in the executor: a disk's sync written into its local file
(`disk_file` changes), with the copy engine a volume's sync uses — sparse (a new file reads as
zeros: holes are not written), checkpointed (a killed copy resumes from its last flushed
checkpoint, rewriting what changed since it began), CBT deltas from the recorded changeId,
verified as the VM's `verify` asks. No conversion host, no volume attach.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NoReturn

from engine.addresses import Address
from engine.conversion import v2v
from engine.dataplane.copy import CopyStats
from engine.dataplane.nbdkit import DiskSource
from engine.errors import FerryError, OpenStackError, StoppedError, VerifyError
from engine.executor import host
from engine.executor.cutover_base import content_epoch
from engine.executor.host import SyncJob, source_of
from engine.executor.volume_ownership import check_found_lineage
from engine.executor.volume_steps import ToCopy
from engine.model.plan import Action, Change
from engine.model.state import VERIFIED_WHOLE, ResourceRecord, Status
from engine.planner.diff.lineage import LABEL, label_only
from engine.planner.diff.volumes import FOUND_LINEAGE
from engine.providers.openstack import compute, images, volumes
from engine.providers.openstack.read import STATE_KEY
from engine.providers.vsphere.snapshots import DiskInfo
from engine.units import duration, human

if TYPE_CHECKING:
    from engine.executor.apply import Applier

KIND = "disk_file"


class DiskFiles:
    """The Applier's `disk_file` node: one disk's sync into its file under work_dir."""

    def __init__(self, applier: Applier) -> None:
        self.a = applier

    def sync(self, change: Change) -> None:
        """Copy (full, resumed or delta) the disk at this apply's snapshot into the change's
        file; a DELETE removes the file. Raises DataplaneError, VerifyError (the file is
        recorded tainted: the next plan copies it again in full), StoppedError."""
        ctx = self.a.ctx
        address = Address.parse(change.address)
        record = ctx.store.read().resources.get(change.address)
        before = dict(record.attributes) if record else dict(change.before or {})
        if change.action in (Action.DELETE, Action.FORGET):
            path = before.get("path")
            if change.action is Action.DELETE and path:
                self._delete(change.address, Path(str(path)), before)
            self.a._write([], [change.address])
            return
        began = time.monotonic()
        snapshot, disks = ctx.snapshots[address.name]
        disk = disks[address.index or 0]
        path = planned_path(self.a, str((change.after or {})["path"]))
        vm = self.a._vm(address.name)
        if change.action is Action.VERIFY and before.get("change_id") == disk.change_id:
            self._compare(change, before, path, (vm, snapshot, disk))
            return
        if change.action is Action.VERIFY:
            ctx.say(
                address.name,
                f"{change.address}: changeId {before.get('change_id')} → {disk.change_id} since "
                "the plan: its delta is copied first, then the whole disk compared",
            )
            change = replace(change, action=Action.UPDATE)
        known, why = _known_file(before, path)
        if why:
            ctx.say(address.name, f"{change.address}: {why}: full copy from 0")
        # the volume logic decides full/delta/resume by a recorded target: the file is it
        probe = {**known, "volume_id": str(path)} if known else {}
        what = self.a._allocated(
            self.a._what_to_copy(change, probe, vm, snapshot, disk), vm, snapshot, disk
        )
        if known.get("converted_file"):  # a delta would keep the conversion's writes
            path.unlink(missing_ok=True)  # a new sparse file: holes stay holes (break-it 16 F5:
            # the old one's every byte was written, 6 GiB where the plan checked 2.2 GiB free)
            why = "the file was converted since its last sync: copied again in full"
            what = self.a._allocated(ToCopy("full", None, 0, True, why=why), vm, snapshot, disk)
        if what.why:
            ctx.say(address.name, f"{change.address}: {what.why}")
        _sized(path, disk.capacity)
        attrs = {**known, "path": str(path), "copy": what.kind, "copied_bytes": what.start_at}
        attrs.pop("tainted", None)
        attrs.pop("file_id", None)  # the file is being written: its identity is taken at the end
        if what.kind == "full":
            attrs["copy_change_id"] = what.began if what.rewrite else disk.change_id
            attrs["copy_capacity"] = disk.capacity
            attrs["dst_is_zero"] = what.dst_is_zero
        self.a._write([ResourceRecord(change.address, KIND, Status.IN_PROGRESS, attrs)], [])
        job = SyncJob(
            volume_id=str(path),
            host_id="",
            source=source_of(vm._moId, self.a.uuids[address.name] or "", snapshot._moId, disk),
            areas=what.areas,
            start_at=what.start_at,
            dst_is_zero=what.dst_is_zero,
            verify=self.a._verify_scope(address.name, what.kind),
            rewrite=what.rewrite,
        )
        job = replace(job, data=self.a.job_data(what, job.verify, (vm, snapshot, disk)))
        source = ctx.sources.source(vm._moId, job.source["instance_uuid"], snapshot._moId, disk)
        stats, digest = self._copy_and_verify(change.address, job, (source, path, disk), attrs)
        with ctx.lock:
            ctx.copied[change.address] = stats
        self._synced(
            change,
            path,
            disk,
            kind=what.kind,
            stats=stats,
            step=time.monotonic() - began,
            digest=digest,
        )

    def _delete(self, address: str, path: Path, before: dict[str, Any]) -> None:
        """A deleted disk's file `path` (recorded in `before`) removed when it is this
        state's (`_not_this_states`), else left in place with a line saying why (its record
        goes all the same). Raises OSError."""
        name = Address.parse(address).name
        why = _not_this_states(path, before, self.a.lineage)
        if why:
            self.a.ctx.say(name, f"{address}: {path} left in place: {why}; the record goes")
            return
        _removed(path, self.a.uuids.get(name) or "", self.a.lineage)

    def _compare(
        self, change: Change, before: dict[str, Any], path: Path, at: tuple[Any, Any, DiskInfo]
    ) -> None:
        """A verify step (--verify) of a file in sync: compared whole with the disk at this
        apply's snapshot, nothing copied; a mismatch (or not the file the last sync wrote)
        marks it tainted: the next plan copies it again in full. Raises VerifyError,
        DataplaneError, StoppedError."""
        vm, snapshot, disk = at
        address = Address.parse(change.address)
        ctx = self.a.ctx
        known, why = _known_file(before, path)
        source = source_of(vm._moId, self.a.uuids[address.name] or "", snapshot._moId, disk)
        data = self.a.data_areas(VERIFIED_WHOLE, vm, snapshot, disk)
        job = host.compare_job(str(path), "", source, data)  # a local file: compared here
        try:
            if why:
                raise VerifyError(f"verify: disk {disk.key}: {why}")
            result = self.a.on_host().compare("", job, ctx.stop.of(address.name), lambda _: None)
        except VerifyError as exc:
            self._taint(change.address, before, exc)
        self.a.compared(change.address, known, job, result, str(path))

    def _taint(self, address: str, attrs: dict[str, Any], exc: VerifyError) -> NoReturn:
        """A file that failed verification: recorded tainted with why (the next plan copies it
        again in full); the error says so."""
        tainted = {**attrs, "tainted": f"verification failed: {exc}"}
        self.a._write([ResourceRecord(address, KIND, Status.TAINTED, tainted)], [])
        raise VerifyError(f"{exc}; marked tainted: the next plan copies it again") from exc

    def _callbacks(self, address: str, attrs: dict[str, Any], disk: DiskInfo) -> host.Callbacks:
        """Checkpoints and a resume's rewrite recorded in the state; progress as events."""

        def checkpoint(mark: int) -> None:
            attrs["copied_bytes"] = mark
            self.a._write([ResourceRecord(address, KIND, Status.IN_PROGRESS, dict(attrs))], [])

        def rewritten() -> None:
            attrs["copy_change_id"] = disk.change_id
            self.a._write([ResourceRecord(address, KIND, Status.IN_PROGRESS, dict(attrs))], [])

        events = self.a.ctx.events

        def progress(covered: int, total: int) -> None:
            if events is not None:
                events.emit("copy", address=address, done=covered, total=total)

        stop = self.a.ctx.stop.of(Address.parse(address).name)
        return host.Callbacks(checkpoint, rewritten, progress, stop)

    def _copy_and_verify(
        self,
        address: str,
        job: SyncJob,
        where: tuple[DiskSource, Path, DiskInfo],
        attrs: dict[str, Any],
    ) -> tuple[CopyStats, str | None]:
        """The copy into the file and its verify as the job asks: (what it moved, the sha256
        or None). A stop counts what the copy moved until then (Applier.copy_stopped).

        Raises StoppedError, VerifyError (the record marked tainted), DataplaneError."""
        source, path, disk = where
        ctx = self.a.ctx
        try:
            stats = host.copy_into(job, source, path, self._callbacks(address, attrs, disk))
        except StoppedError as exc:
            self.a.copy_stopped(address, attrs, exc)
            raise
        if not job.verify:
            return stats, None
        try:
            digest = host.verify_copy(
                job, source, path, disk, ctx.stop.of(Address.parse(address).name)
            )
        except StoppedError as exc:  # copied in full, stopped while verifying
            self.a.copy_stopped(address, attrs, StoppedError(str(exc), stats.moved()))
            raise
        except VerifyError as exc:
            self._taint(address, attrs, exc)
        with ctx.lock:
            ctx.digests[address] = (digest, job.verify)
        return stats, digest

    def _synced(
        self,
        change: Change,
        path: Path,
        disk: DiskInfo,
        *,
        kind: str,
        stats: Any,
        step: float,
        digest: str | None,
    ) -> None:
        """The copy is complete and flushed: only now does the changeId advance."""
        address = Address.parse(change.address)
        after, before = change.after or {}, change.before or {}
        record = {
            "path": str(path),
            "disk_key": address.index,
            "change_id": disk.change_id,
            "size_gib": after.get("size_gib"),
            "capacity": disk.capacity,  # bytes: a grow within a GiB is seen too
            "bootable": after.get("bootable", False),
            "epoch": content_epoch(),
            "last_sync": {
                "kind": kind,
                "bytes": stats.bytes_read + stats.bytes_zeroed,
                "seconds": round(stats.seconds, 3),
                "read": stats.bytes_read,
                "skipped": stats.bytes_skipped,
                "step_seconds": round(step, 3),
                "at": time.time(),
                "previous_at": (before.get("last_sync") or {}).get("at"),
                "source_power": self.a.ctx.snapshot_power.get(address.name),
                "retries": stats.retries,
                "sha256": digest,
                "verified": self.a.ctx.digests.get(change.address, (None, None))[1],
            },
        }
        record["file_id"] = file_identity(path)  # the file this sync wrote, as it is now
        self.a._write([ResourceRecord(change.address, KIND, Status.READY, record)], [])
        self.a.announce_sync(change.address, stats, step, str(path), record["last_sync"])


def planned_path(applier: Applier, planned: str) -> Path:
    """Where this apply keeps the disk file a change names (`planned`): a plan made before its
    state existed (the first `ferry apply SPEC`, or `plan --out` on a new state: lineage "",
    which the apply's first write makes) names `<work_dir>/<uuid>/disk-K.raw`, with no state's
    folder yet; its file goes under the lineage the state has now, `<work_dir>/<lineage>/<uuid>/
    disk-K.raw`, where the next plan names it (break-it 16b F2). A plan of an existing state
    names its files as they are."""
    path = Path(planned)
    lineage = "" if applier.plan.state_lineage else applier.lineage
    return path.parent.parent / lineage / path.parent.name / path.name if lineage else path


def _removed(path: Path, uuid: str, lineage: str) -> None:
    """A deleted disk's file gone, with the qcow2 copy a killed upload left beside it, and the
    VM's folder `<work_dir>/[<lineage>/]<uuid>/` once it is empty (the VM's last file: break-it
    16 L3, --destroy left both), then the state's `<work_dir>/<lineage>/` once empty. Raises
    OSError."""
    path.unlink(missing_ok=True)
    path.with_suffix(".qcow2").unlink(missing_ok=True)
    if not uuid or path.parent.name != uuid:
        return
    with contextlib.suppress(OSError):  # not empty: another disk's delete removes it
        path.parent.rmdir()
        if lineage and path.parent.parent.name == lineage:
            path.parent.parent.rmdir()


def _not_this_states(path: Path, before: dict[str, Any], lineage: str) -> str:
    """Why --destroy must not delete the recorded file `path` ("" when it may): a file under
    the state's own `<work_dir>/<lineage>/` is this state's alone; one elsewhere (an older
    ferry's `<work_dir>/<uuid>/disk-K.raw`, which two states sharing a work_dir both wrote:
    break-it 16b F2, a rehearsal's --destroy deleted the real state's replica) only while it
    is still the file this state's last sync or conversion wrote (`file_id`, `converted_id`)."""
    if lineage and path.parent.parent.name == lineage:
        return ""
    try:
        found = file_identity(path)
    except FileNotFoundError:
        return ""
    if found in {before.get("file_id"), before.get("converted_id")}:
        return ""
    return (
        f"it is outside this state's folder ({lineage}) and not the file this state last "
        "wrote (another ferry state sharing the work_dir may have written it since)"
    )


def file_identity(path: Path) -> str:
    """Which file `path` is, and since when unchanged: 'device:inode:mtime_ns:size' (as make
    and rsync tell files apart). A file replaced, restored or written by something else since
    has another. Raises OSError."""
    found = path.stat()
    return f"{found.st_dev}:{found.st_ino}:{found.st_mtime_ns}:{found.st_size}"


def _known_file(before: dict[str, Any], path: Path) -> tuple[dict[str, Any], str]:
    """The record a sync into `path` may build on, and why not ('' when it may, or there is
    none): the file must be the one the record names and, after a complete sync, still the
    file that sync wrote (break-it 12c: a work_dir changed since, or an older copy that came
    back at the same path when a mount returned, took a delta onto the wrong bytes)."""
    if not before:
        return {}, ""
    if not path.exists():
        return {}, f"{path} is gone"
    recorded = before.get("path")
    if recorded and PurePath(str(recorded)) != PurePath(str(path)):
        return {}, f"the last sync went to {recorded}, not {path}"
    wrote = before.get("file_id")  # a complete sync's (a copy under way drops it)
    if wrote and not before.get("converted_file") and file_identity(path) != wrote:
        return {}, f"{path} is not the file the last sync wrote (replaced or changed since)"
    return dict(before), ""


def _sized(path: Path, capacity: int) -> None:
    """The disk's file exists with at least `capacity` bytes (sparse: a new one reads as zeros;
    a grown disk's file grows, its old bytes kept). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < capacity:
            os.ftruncate(fd, capacity)
    finally:
        os.close(fd)


class ImageCutover:
    """The cutover nodes of an image VM: the conversion of its files (virt-v2v-in-place on this
    machine), each converted file uploaded to Glance (`image`), a volume made from each image
    (`image_volume`); the server node (Cutover.server) boots from those volumes."""

    def __init__(self, applier: Applier) -> None:
        self.a = applier

    def _records(self) -> dict[str, ResourceRecord]:
        return dict(self.a.ctx.store.read().resources)

    def _attrs(self, address: str) -> dict[str, Any]:
        record = self._records().get(address)
        return dict(record.attributes) if record else {}

    def _file_record(self, name: str, key: int) -> ResourceRecord:
        address = str(Address("vm", name, "disk", key))
        record = self._records().get(address)
        if record is None or record.status is not Status.READY or record.kind != KIND:
            raise FerryError(f"{address} is not copied: the cutover needs every disk's file")
        if not record.attributes.get("path"):  # a lost state's adoption: cut over, no file
            raise FerryError(f"{address} has no file in this state (adopted as cut over)")
        return record

    def _mark(self, name: str, key: int, **attrs: Any) -> None:
        record = self._file_record(name, key)
        self.a._write(
            [replace(record, attributes={**record.attributes, **attrs})],
            [],
        )

    def conversion(self, change: Change) -> None:
        """virt-v2v-in-place on the VM's files (all disks, in boot order); each file's content
        epoch moves, and the file is marked converted: a later sync copies it again in full
        (CBT's delta would keep the conversion's writes). Raises ConversionError."""
        address = Address.parse(change.address)
        name = address.name
        if change.action in (Action.DELETE, Action.FORGET):
            self.a.cutover._power_back_on(name, self._attrs(change.address))
            self.a._write([], [change.address])
            return
        after = dict(change.after or {})
        keys = [int(d["key"]) for d in after["disks"]]
        paths = [Path(str(self._file_record(name, k).attributes["path"])) for k in keys]
        attrs = {**self._attrs(change.address), **after, "epochs": {}}
        self.a._write([ResourceRecord(change.address, "conversion", Status.IN_PROGRESS, attrs)], [])
        if after.get("tool"):
            left = "the files are as the last sync left them"
            self.a.cutover.go_ahead(name, "the conversion", left)
            for key in keys:  # from here on the files may hold the conversion's writes
                self._mark(name, key, converted_file=True)
            guest = v2v.guest_of(self.a.targets.get(name, name), paths, after)
            log = self.a.cutover._log(name)
            self.a.ctx.say(
                name, f"{Address('vm', name)}: converting its files with virt-v2v-in-place "
                f"(log {log})"
            )  # fmt: skip
            options = v2v.Options(
                firstboot=tuple(Path(p) for p in after.get("firstboot") or ()),
                debug=bool(after.get("debug")),
                cancel=self.a.ctx.stop.of(name),
            )
            attrs["seconds"] = round(v2v.convert(guest, log, options), 1)
            for key in keys:
                self._mark(name, key, epoch=content_epoch())
        attrs["epochs"] = {str(k): self._file_record(name, k).attributes.get("epoch") for k in keys}
        for key, path in zip(keys, paths, strict=True):  # what an upload must find (the image's)
            self._mark(name, key, converted_id=file_identity(path))
        attrs["at"] = time.time()
        self.a._write([ResourceRecord(change.address, "conversion", Status.READY, attrs)], [])
        self.a.ctx.say(
            name,
            f"{change.address}: converted in {duration(attrs['seconds'])}"
            if after.get("tool")
            else f"{change.address}: no conversion (convert: false)",
        )

    def image(self, change: Change) -> None:
        """Upload the converted file (qemu-img convert first for qcow2); an image ferry
        uploaded before for this disk is reused when whole, else replaced. --destroy deletes
        it. Raises OpenStackError, ConversionError (qemu-img)."""
        conn = self.a.ctx.conn
        name = Address.parse(change.address).name
        before = self._attrs(change.address) or dict(change.before or {})
        if change.action in (Action.DELETE, Action.FORGET):
            if change.action is Action.DELETE and before.get("image_id"):
                self.check_image_owned(change.address, str(before["image_id"]))
                images.delete(conn, [str(before["image_id"])])
            self.a._write([], [change.address])
            return
        after = dict(change.after or {})
        if change.action is Action.UPDATE:
            if after.pop(LABEL, None):
                self._label_image(change.address, str(before["image_id"]))
            if not label_only(change):
                self._properties(change, before, after)
            return
        if change.action is Action.READ:  # a lost state adopts a server's image as it is
            self._adopted(change, "image", "image_id")
            return
        path = planned_path(self.a, str(after["file"]))
        after["file"] = str(path)
        self._check_converted_file(change.address, path)
        stop = self.a.ctx.stop.of(name)
        upload, disk_format = images.upload_file(path, str(after["disk_format"]), stop)
        if disk_format != after["disk_format"]:
            self.a.ctx.say(
                name,
                f"{change.address}: its qcow2 copy is not smaller than the disk's "
                f"{human(path.stat().st_size)} (fully allocated): the raw file is uploaded "
                "(Cinder refuses an image larger than its volume)",
            )
            after["disk_format"] = disk_format
        # this state's older upload(s) of the disk, deleted once the new one is active (kept
        # in the record until then: a killed apply's next upload still knows them)
        replaces = [str(i) for i in before.get("replaces") or ()]
        replaces += [str(before["image_id"])] if before.get("image_id") else []
        attrs = {**after, "replaces": replaces}
        self.a._write([ResourceRecord(change.address, "image", Status.IN_PROGRESS, attrs)], [])
        began, size = time.monotonic(), upload.stat().st_size
        try:
            image_id, uploaded = images.upload(
                conn,
                upload,
                str(after["name"]),
                str(after["disk_format"]),
                after["properties"],
                lineage=self.a.lineage,
                stop=stop,
                replaces=replaces,
            )
        finally:
            if upload != path:
                upload.unlink(missing_ok=True)
        took = time.monotonic() - began
        attrs = {**after, "image_id": image_id}
        if uploaded:  # the plan's upload rate (estimates.measured)
            attrs["upload"] = {"bytes": size, "seconds": round(took, 3)}
        self.a._write([ResourceRecord(change.address, "image", Status.READY, attrs)], [])
        how = "uploaded" if uploaded else "found (same sha512) and reused"
        self.a.ctx.say(name, f"{change.address}: image {image_id} {how} in {duration(took)}")

    def _made_before(self, address: str, image_id: str, recorded: str) -> str:
        """The volume an interrupted apply of this state made from image `image_id` for this
        disk, to be used instead of a new one (break-it 16g L1: a re-run after Ctrl-C or a kill
        deleted the recorded one and made it again, or made a second one beside the one it had
        not recorded yet): `recorded` (an in-progress record's) when it is one, else the oldest
        found by ferry's metadata (images.volumes_made) that no record names; not in error, not
        attached. The others of this state for the disk that no other record names and nothing
        attaches (made from an older image, in error, duplicates) are deleted. "" when there is
        none. Raises OpenStackError."""
        parsed = Address.parse(address)
        uuid = self.a.uuids[parsed.name] or ""
        found = images.volumes_made(self.a.ctx.conn, uuid, parsed.index or 0, self.a.lineage)
        named = {
            str(r.attributes.get("volume_id"))
            for a, r in self._records().items()
            if a != address and r.attributes.get("volume_id")
        }
        free = [v for v in found if str(v.id) not in named and not (v.attachments or [])]
        usable = [
            v
            for v in free
            if images.made_from(v) == image_id and v.status not in volumes.VOLUME_FAILED
        ]
        chosen = next((v for v in usable if str(v.id) == recorded), None) or next(
            iter(usable), None
        )
        for left in (v for v in free if v is not chosen):
            self.a.ctx.say(
                parsed.name,
                f"{address}: volume {left.id} an interrupted apply made ({left.status}, from image "
                f"{images.made_from(left) or '?'}) is deleted",
            )
            failed = left.status in volumes.VOLUME_FAILED  # else awaited: Cinder deletes no
            self.a._delete_volume(str(left.id), "error" if failed else "available")  # copying one
        return str(chosen.id) if chosen is not None else ""

    def _resumed(self, address: str, after: dict[str, Any], volume_id: str, image_id: str) -> None:
        """The volume an interrupted apply made from the image (`_made_before`) recorded, then
        waited for until Cinder has copied the image into it (available), and recorded made.
        Raises OpenStackError (it went to error: the next apply deletes it, makes a new one)."""
        attrs = {**after, "volume_id": volume_id}
        self.a._write([ResourceRecord(address, "image_volume", Status.IN_PROGRESS, attrs)], [])
        began = time.monotonic()
        volumes.wait_volume(self.a.ctx.conn, volume_id, "available", timeout=3600.0)
        attrs["image_id"] = image_id
        self.a._write([ResourceRecord(address, "image_volume", Status.READY, attrs)], [])
        self.a.ctx.say(
            Address.parse(address).name,
            f"{address}: volume {volume_id} an interrupted apply made from image {image_id} "
            f"found and used (not made again; waited {duration(time.monotonic() - began)})",
        )

    def _adopted(self, change: Change, kind: str, id_key: str) -> None:
        """An image or a volume made from one, found by ferry's metadata beside the server a
        lost state adopts (engine.planner.diff.image_adoption.adopts): this state's lineage
        stamped on it (`ferry_state`: the image's property, the volume's metadata; from then on
        another state's plan neither adopts nor deletes it, as with volume mode's adopted
        volumes) and recorded as the plan found it, nothing made or uploaded. Raises OpenStackError,
        StateError."""
        after = dict(change.after or {})
        found = str(after.pop(FOUND_LINEAGE, None) or "")
        conn, object_id = self.a.ctx.conn, str(after[id_key])
        now = (images.managed_by if kind == "image" else volumes.managed_by)(conn, object_id)
        check_found_lineage(object_id, found, now, self.a.lineage)
        if kind == "image":
            images.set_properties(conn, object_id, {STATE_KEY: self.a.lineage})
        else:
            volumes.set_metadata(conn, object_id, {STATE_KEY: self.a.lineage})
        self.a._write([ResourceRecord(change.address, kind, Status.READY, after)], [])
        what = "image" if kind == "image" else "volume"
        self.a.ctx.say(
            Address.parse(change.address).name,
            f"{change.address}: adopted {what} {after[id_key]}",
        )

    def _label_image(self, address: str, image_id: str) -> None:
        """Stamp this state's lineage (`ferry_state`) on an image it records that carries none
        (uploaded by an older ferry: engine.planner.diff.lineage), metadata only. Raises
        OpenStackError (another state took it over since the plan)."""
        images.set_properties(
            self.a.ctx.conn, image_id, {STATE_KEY: self.a.lineage}, lineage=self.a.lineage
        )
        self.a.ctx.say(
            Address.parse(address).name,
            f"{address}: image {image_id} labelled with this state's lineage",
        )

    def check_image_owned(self, address: str, image_id: str) -> None:
        """Right before a step deletes an image this state records: its `ferry_state` must
        still name this state (or nothing). An image another ferry state took over since the
        plan was made (--adopt-lineage, or by hand) is that state's. Raises OpenStackError;
        nothing is done to it."""
        other = images.managed_by(self.a.ctx.conn, image_id)
        if other and other != self.a.lineage:
            raise OpenStackError(f"{address}: {images.handed_line(image_id, other, 'deleted')}")

    def _check_converted_file(self, address: str, path: Path) -> None:
        """The file an image is uploaded from is the one its conversion left (the disk file
        record's `converted_id`, taken when the conversion ended): one changed or replaced
        since (a restored older copy, a stray write) is never uploaded as "the disk as
        converted" (break-it 16 F1: re-uploaded after its image was deleted, a server booted
        from bytes neither the source's nor the conversion's). A record from before ferry
        kept that identity is not checked. Raises FerryError."""
        parsed = Address.parse(address)
        record = self._records().get(str(Address("vm", parsed.name, "disk", parsed.index)))
        converted = (record.attributes if record else {}).get("converted_id")
        if converted and file_identity(path) != converted:
            raise FerryError(
                f"{address}: {path} is not the file its conversion left (changed or replaced "
                "since): not uploaded; put the converted file back, or plan --destroy and "
                "migrate the VM again"
            )

    def _properties(self, change: Change, before: dict[str, Any], after: dict[str, Any]) -> None:
        """A recorded image's properties set to the plan's (Glance image update); those it no
        longer has removed, and the Nova keys the plan unsets (`unset`: Glance holds them, ferry
        does not set them: added by hand). An image another ferry state manages now is left as
        it is. Raises OpenStackError."""
        image_id = str(before["image_id"])
        wanted = {str(k): str(v) for k, v in after["properties"].items()}
        unset = [str(k) for k in after.pop("unset", None) or ()]
        gone = [k for k in before.get("properties") or {} if k not in wanted] + unset
        changed = images.set_properties(
            self.a.ctx.conn, image_id, wanted, gone, lineage=self.a.lineage
        )
        attrs = {**before, **after, "image_id": image_id}
        self.a._write([ResourceRecord(change.address, "image", Status.READY, attrs)], [])
        self.a.ctx.say(
            Address.parse(change.address).name,
            f"{change.address}: image {image_id} properties updated "
            f"({', '.join(changed) or 'already as planned'})",
        )

    def _image_metadata(self, change: Change, before: dict[str, Any]) -> None:
        """The boot volume made from an image: its image metadata set to the plan's, the keys it
        no longer has removed (Cinder). Raises OpenStackError."""
        after = dict(change.after or {})
        after.pop(LABEL, None)
        unset = [str(k) for k in after.pop("unset", None) or ()]
        volume_id = str(before["volume_id"])
        self.a.check_owned(change.address, volume_id, "written")
        metadata = {str(k): str(v) for k, v in (after.get("image_metadata") or {}).items()}
        if metadata:
            compute.set_image_metadata(self.a.ctx.conn, volume_id, metadata)
        compute.unset_image_metadata(self.a.ctx.conn, volume_id, unset)
        attrs = {**before, **after, "volume_id": volume_id}
        self.a._write([ResourceRecord(change.address, "image_volume", Status.READY, attrs)], [])
        self.a.ctx.say(
            Address.parse(change.address).name,
            f"{change.address}: volume {volume_id} image metadata updated "
            f"({', '.join([*metadata, *unset])})",
        )

    def volume(self, change: Change) -> None:
        """A volume made from the disk's image (recorded as soon as Cinder names it); one a
        killed apply made from that image, recorded or not (`_made_before`), is waited for and
        used instead of a second one; an update sets the boot volume's image metadata. Raises
        OpenStackError."""
        conn = self.a.ctx.conn
        address = Address.parse(change.address)
        before = self._attrs(change.address) or dict(change.before or {})
        if change.action is Action.UPDATE:
            if (change.after or {}).get(LABEL):
                self.a.label_volume(change.address, str(before["volume_id"]))
            if not label_only(change):
                self._image_metadata(change, before)
            return
        if change.action is Action.READ:  # a lost state adopts a server's volume as it is
            self._adopted(change, "image_volume", "volume_id")
            return
        old = str(before.get("volume_id") or "")
        if change.action in (Action.DELETE, Action.FORGET, Action.REPLACE):
            if old and change.action is not Action.FORGET:
                self.a.check_owned(change.address, old, "deleted")
                self.a._delete_volume(old)
            if change.action in (Action.DELETE, Action.FORGET):
                self.a._write([], [change.address])
                return
            old = ""
        after = dict(change.after or {})
        image = self._attrs(str(after["image"]))
        if not image.get("image_id"):
            raise FerryError(f"{change.address}: {after['image']} is not uploaded")
        found = self._made_before(change.address, str(image["image_id"]), old)
        if found:
            self._resumed(change.address, after, found, str(image["image_id"]))
            return

        def created(volume_id: str) -> None:
            attrs = {**after, "volume_id": volume_id}
            self.a._write(
                [ResourceRecord(change.address, "image_volume", Status.IN_PROGRESS, attrs)], []
            )

        began = time.monotonic()
        volume_id = images.volume_from_image(
            conn,
            str(image["image_id"]),
            name=f"{self.a.targets[address.name]}-{address.index}",
            size_gib=int(after["size_gib"]),
            volume_type=after.get("volume_type"),
            metadata={
                "ferry_image_vm": self.a.uuids[address.name] or "",
                "ferry_image_disk": str(address.index),
                STATE_KEY: self.a.lineage,  # as every volume ferry makes: whose it is
            },
            created=created,
        )
        took = time.monotonic() - began
        attrs = {**after, "volume_id": volume_id, "image_id": image["image_id"]}
        # the plan's rate of volumes made from images (estimates.measured): GiB per second
        attrs["made"] = {"bytes": int(after["size_gib"]) * 1024**3, "seconds": round(took, 3)}
        self.a._write([ResourceRecord(change.address, "image_volume", Status.READY, attrs)], [])
        self.a.ctx.say(
            address.name,
            f"{change.address}: volume {volume_id} made from image {image['image_id']} in "
            f"{duration(took)}",
        )
