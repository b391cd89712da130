"""destination.output: image in the executor: a disk's sync written into its local file
(`disk_file` changes), with the copy engine a volume's sync uses — sparse (a new file reads as
zeros: holes are not written), checkpointed (a killed copy resumes from its last flushed
checkpoint, rewriting what changed since it began), CBT deltas from the recorded changeId,
verified as the VM's `verify` asks. No conversion host, no volume attach.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import engine.executor.apply as applier  # a cycle: it imports this module (resolved at call time)
from engine.addresses import Address
from engine.errors import VerifyError
from engine.executor import host
from engine.executor.cutover import content_epoch
from engine.executor.host import SyncJob, source_of
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.providers.vsphere.snapshots import DiskInfo

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
                Path(str(path)).unlink(missing_ok=True)
            self.a._write([], [change.address])
            return
        began = time.monotonic()
        snapshot, disks = ctx.snapshots[address.name]
        disk = disks[address.index or 0]
        path = Path(str((change.after or {})["path"]))
        vm = self.a._vm(address.name)
        known = dict(before) if path.exists() else {}  # the file gone: a full copy from 0
        if before and not known:
            ctx.say(address.name, f"{change.address}: {path} is gone: full copy from 0")
        # the volume logic decides full/delta/resume by a recorded target: the file is it
        probe = {**known, "volume_id": str(path)} if known else {}
        what = self.a._allocated(
            self.a._what_to_copy(change, probe, vm, snapshot, disk), vm, snapshot, disk
        )
        if what.why:
            ctx.say(address.name, f"{change.address}: {what.why}")
        _sized(path, disk.capacity)
        attrs = {**known, "path": str(path), "copy": what.kind, "copied_bytes": what.start_at}
        attrs.pop("tainted", None)
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
        source = ctx.sources.source(vm._moId, job.source["instance_uuid"], snapshot._moId, disk)
        calls = self._callbacks(change.address, attrs, disk)
        stats = host.copy_into(job, source, path, calls)
        digest = None
        if job.verify:
            try:
                digest = host.verify_copy(job, source, path, disk, ctx.stop)
            except VerifyError as exc:
                tainted = {**attrs, "tainted": f"verification failed: {exc}"}
                self.a._write([ResourceRecord(change.address, KIND, Status.TAINTED, tainted)], [])
                raise VerifyError(f"{exc}; marked tainted: the next plan copies it again") from exc
            with ctx.lock:
                ctx.digests[change.address] = (digest, job.verify)
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

        return host.Callbacks(checkpoint, rewritten, progress, self.a.ctx.stop)

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
        self.a._write([ResourceRecord(change.address, KIND, Status.READY, record)], [])
        if self.a.ctx.events is not None:
            self.a.ctx.events.emit(
                "synced",
                address=change.address,
                vm=address.name,
                kind=kind,
                bytes=record["last_sync"]["bytes"],
                seconds=record["last_sync"]["seconds"],
                read=stats.bytes_read,
                skipped=stats.bytes_skipped,
                volume_id=str(path),
                step_seconds=round(step, 3),
                sha256=digest,
                verified=record["last_sync"]["verified"],
            )
        self.a.ctx.say(address.name, applier.sync_line(change.address, kind, stats, step))


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
