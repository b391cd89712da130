"""A volume's steps: adopt, delete, verify-only compare, and the sync (full, resumed or CBT
delta) through the VM's conversion host, its record written only once the copy is complete and
flushed (../shared/DESIGN.md §5: a changeId advances only after its copy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from engine.addresses import Address
from engine.dataplane.cbt import Extent, total_bytes
from engine.dataplane.copy import CopyStats
from engine.errors import (
    ChangedOutsideError,
    ChangeTrackingError,
    OpenStackError,
    StoppedError,
    VerifyError,
)
from engine.executor import host
from engine.executor.cutover_base import content_epoch
from engine.executor.host import SyncJob, source_of
from engine.executor.remote import OnHost
from engine.executor.volume_ownership import VolumeOwnership
from engine.model.observed import epoch
from engine.model.plan import Action, Change
from engine.model.state import (
    RECORDED_HOST,
    UPDATED_AT,
    VERIFIED_AREAS,
    VERIFIED_WHOLE,
    ZERO_RATE,
    ResourceRecord,
    Status,
    resumable_delta,
    zero_rate,
)
from engine.planner.diff.attachments import SETTLE_SECONDS, repair_only
from engine.planner.diff.lineage import LABEL
from engine.planner.diff.volumes import FOUND_LINEAGE, adopted_lineage
from engine.providers.openstack import compute, volumes
from engine.providers.openstack.read import STATE_KEY
from engine.providers.vsphere.read import changed_areas
from engine.providers.vsphere.snapshots import DiskInfo
from engine.units import duration, exact, human, rate


@dataclass(frozen=True)
class ToCopy:
    """What one disk's sync copies: full | delta, the areas (None: the whole disk) from
    `start_at`, whether the volume reads as zeros there, the areas to rewrite first (a resumed
    copy: what changed since the snapshot it began from, changeId `began`), and why, when the
    executor copies other than the plan said (shown in the VM's log)."""

    kind: str
    areas: list[Extent] | None
    start_at: int
    dst_is_zero: bool
    rewrite: list[Extent] = field(default_factory=list)
    began: str | None = None
    why: str = ""
    data: list[Extent] | None = None  # where the disk holds data (a reader without block status)


def _resumed(done: int, rewrite: int, began: str) -> str:
    """The line of a delta continued from its checkpoint (`done` bytes into the disk)."""
    return (
        f"the interrupted delta resumes at {human(done)}: first the {human(rewrite)} "
        f"changed since the snapshot it read (changeId {began})"
    )


def _tainted_since(why: object) -> str:
    """The line of a volume whose record was marked tainted after the plan was made (a revert
    it needed failed in this apply's back-out, say): never a delta or a resume onto it."""
    return f"the volume is marked tainted ({why}): a full copy, not the planned delta"


class VolumeSteps(VolumeOwnership):
    """The Applier's volume steps (see the module)."""

    def _volume(self, change: Change) -> None:
        address = Address.parse(change.address)
        record = self.ctx.store.read().resources.get(change.address)
        before = dict(record.attributes) if record else dict(change.before or {})
        if change.action is Action.UPDATE and (change.after or {}).get(LABEL):
            self.label_volume(change.address, str(before["volume_id"]))  # nothing copied
            return
        self._repair_attachments(change)
        if repair_only(change):  # nothing to copy: the record stays as it was
            return
        if change.action is Action.READ:
            self._adopt(change, address)
            return
        if change.action in (Action.DELETE, Action.FORGET):
            if change.action is Action.DELETE and before.get("volume_id"):
                self.check_owned(change.address, str(before["volume_id"]), "deleted")
                self._delete_volume(str(before["volume_id"]), of=(change.address, before))
            self._write([], [change.address])
            return
        if before.get("volume_id"):
            volume_id = str(before["volume_id"])
            adopts = adopted_lineage(change, volume_id) if record is None else ""
            self.check_owned(change.address, volume_id, "written", adopts)
            if adopts:
                self._take_over(change, address, volume_id, adopts)
            before.pop(FOUND_LINEAGE, None)  # the found volume's, not a fact of the record
        snapshot, disks = self.ctx.snapshots[address.name]
        disk = disks[address.index or 0]
        if change.action is Action.VERIFY:
            self._compare(change, address, before, snapshot, disk)
            return
        self._sync(change, address, before, snapshot, disk)

    def _compare(
        self,
        change: Change,
        address: Address,
        before: dict[str, Any],
        snapshot: Any,
        disk: DiskInfo,
    ) -> None:
        """A verify step (--verify): the volume compared whole with this snapshot, nothing
        copied. A changeId that moved since the plan (the VM was written or ran) means the
        replica is behind that snapshot: its delta is copied first (verified whole, as every copy
        under --verify). A mismatch marks the volume tainted (the next plan replaces it).

        Raises VerifyError (they differ), DataplaneError, StoppedError."""
        stored = before.get("change_id")
        if not stored or disk.change_id != stored:
            self.ctx.say(
                address.name,
                f"{change.address}: changeId {stored} → {disk.change_id} since the plan: its "
                "delta is copied first, then the whole disk compared",
            )
            self._sync(replace(change, action=Action.UPDATE), address, before, snapshot, disk)
            return
        vm = self._vm(address.name)
        host_name, host_id = self.host_for(address.name)  # the host its syncs write on
        source = source_of(vm._moId, self.uuids[address.name] or "", snapshot._moId, disk)
        data = self.data_areas(VERIFIED_WHOLE, vm, snapshot, disk)
        job = host.compare_job(str(before["volume_id"]), host_id, source, data)
        self._settle(change.address, job.volume_id)
        untouched = not self.changed_outside(change.address, before)
        if untouched and before.get(UPDATED_AT):  # ferry's own attach moves it now
            unstamped = {k: v for k, v in before.items() if k != UPDATED_AT}
            self._write([ResourceRecord(change.address, "volume", Status.READY, unstamped)], [])
        try:
            stop = self.ctx.stop.of(address.name)
            result = self.on_host().compare(host_name, job, stop, self._say(address))
        except VerifyError as exc:
            self._taint(change.address, before, exc, job.volume_id)
        except Exception:
            if untouched:  # only ferry's attach and detach moved it: the next plan trusts it
                self._stamped(change.address, dict(before), job.volume_id, Status.READY)
            raise
        self.compared(change.address, before, job, result, f"volume {job.volume_id}")

    def compared(
        self,
        address: str,
        before: dict[str, Any],
        job: SyncJob,
        result: host.SyncResult,
        target: str,
    ) -> None:
        """A compare that found the copy equal (a volume, or image mode's file: `target` says
        which, for people): its digest kept for the report, its record READY with
        `last_verify`, the `verified` event and the line."""
        assert result.sha256 is not None
        with self.ctx.lock:
            self.ctx.digests[address] = (result.sha256, VERIFIED_WHOLE)
        checked = host.last_verify(job.source.get("change_id"), result)
        kind = self.changes[address].kind
        attrs = {**before, "last_verify": checked}
        if kind == "volume":  # equal to the source now, whatever touched it before
            attrs[UPDATED_AT] = volumes.updated_at(self.ctx.conn, job.volume_id)
        record = ResourceRecord(address, kind, Status.READY, attrs)
        self._write([record], [])
        name = Address.parse(address).name
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "verified",
                address=address,
                vm=name,
                sha256=result.sha256,
                volume_id=job.volume_id,
                seconds=round(result.seconds, 3),
            )
        self.ctx.say(name, host.compared_line(address, target, job, result))

    def _taint(
        self, address: str, attrs: dict[str, Any], exc: VerifyError, volume_id: str
    ) -> NoReturn:
        """A copy or compare that failed verification: the volume recorded tainted with why (the
        next plan replaces it: a full copy); the error says so. Its metadata stops naming a
        changeId too: a state rebuilt from the destination would adopt it as in sync."""
        tainted = {**attrs, "tainted": f"verification failed: {exc}"}
        self._write([ResourceRecord(address, "volume", Status.TAINTED, tainted)], [])
        volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_change_id": ""})
        raise VerifyError(f"{exc}; marked tainted: the next plan copies it again") from exc

    def _sync(
        self,
        change: Change,
        address: Address,
        before: dict[str, Any],
        snapshot: Any,
        disk: DiskInfo,
    ) -> None:
        began = time.monotonic()  # the step's wall time: volume, attach, copy, verify, detach
        vm = self._vm(address.name)
        volume_id = self._ensure_volume(change, address, before)
        recorded = str(before.get("volume_id") or "")
        replaced = bool(recorded) and volume_id != recorded
        if replaced:  # gone or in error: nothing of it is on the new one
            self.ctx.say(
                address.name,
                f"{change.address}: volume {recorded} was replaced by a new volume {volume_id}: "
                "full copy from 0 (no delta or resume onto it)",
            )
        known = {} if replaced else before  # what the volume holds, as recorded
        what = self._allocated(
            self._what_to_copy(change, known, vm, snapshot, disk), vm, snapshot, disk
        )
        if what.why:
            self.ctx.say(address.name, f"{change.address}: {what.why}")
        self._extend(change, address, volume_id)
        what = self._released(change.address, volume_id, what)
        if what.dst_is_zero and volumes.encrypted(self.ctx.conn, volume_id):
            what = replace(what, dst_is_zero=False)
            self.ctx.say(
                address.name,
                f"{change.address}: volume {volume_id} is encrypted: not assumed to read as "
                "zeros, holes written as zeros",
            )
        attrs = {**before, "volume_id": volume_id, "copy": what.kind, "copied_bytes": what.start_at}
        attrs[RECORDED_HOST] = self.host_for(address.name)[0]  # where a resume finds it attached
        attrs.pop("tainted", None)  # a replace starts afresh: the old failure is not its state
        attrs.pop(UPDATED_AT, None)  # ferry's own attach moves it now: re-read when synced
        # what a resume needs: which snapshot the bytes written are from
        attrs["copy_change_id"] = what.began if what.rewrite else disk.change_id
        if what.kind == "full":
            attrs["copy_capacity"] = disk.capacity  # a resume after the disk grew starts over
            attrs["dst_is_zero"] = what.dst_is_zero
        self._write([ResourceRecord(change.address, "volume", Status.IN_PROGRESS, attrs)], [])
        if what.kind == "full" and recorded and volume_id == recorded:
            # its old changeId stops being true with the first byte written: a state rebuilt
            # from the destination must not adopt a half-copied volume as in sync at it
            volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_change_id": ""})
        if what.kind == "full" and not what.dst_is_zero:
            self.ctx.say(
                address.name,
                f"{change.address}: volume {volume_id} not assumed to read as zeros: "
                "holes and zero runs written as zeros",
            )
        host_name, host_id = self.host_for(address.name)
        self._release_elsewhere(change.address, before, volume_id, host_name)
        job = SyncJob(
            volume_id=volume_id,
            host_id=host_id,
            source=source_of(vm._moId, self.uuids[address.name] or "", snapshot._moId, disk),
            areas=what.areas,
            start_at=what.start_at,
            dst_is_zero=what.dst_is_zero,
            verify=self._verify_scope(address.name, what.kind),
            rewrite=what.rewrite,
        )
        job = replace(job, data=self.job_data(what, job.verify, (vm, snapshot, disk)))
        job = replace(job, unchanged_since=self._as_sent(volume_id, host_id))
        result = self._copy(change.address, attrs, disk, job, host_name)
        self.ctx.say(address.name, f"{change.address}: read from {result.source}")
        with self.ctx.lock:
            self.ctx.copied[change.address] = result.stats()
            if result.sha256 is not None and result.verified is not None:
                self.ctx.digests[change.address] = (result.sha256, result.verified)
        step = time.monotonic() - began
        self._synced(change, attrs, disk, kind=what.kind, stats=result.stats(), step=step)

    def _as_sent(self, volume_id: str, host_id: str) -> str | None:
        """The volume's Cinder updated_at as the copy is sent, after ferry's own steps on it:
        the host writes it only if still so (host.unchanged). None (not checked) while it is
        attached to that host: an earlier task of ours holds it (an agent finishing the copy
        of an apply that was killed or lost its broker) and moves it when it lets go; attached
        there, nothing else could attach it."""
        now = volumes.seen(self.ctx.conn, volume_id)  # one GET for both
        return None if host_id in now.servers else now.updated_at

    def _released(self, address: str, volume_id: str, what: ToCopy) -> ToCopy:
        """The volume's protection snapshot released (reverted to where a conversion or an
        unconfirmed server wrote it since); a delta becomes a full copy when that revert could
        not happen, its snapshot gone from Cinder (break-it 12g F2: the delta went on top of
        the unconfirmed guest's writes, or the step failed at every apply)."""
        name = Address.parse(address).name
        if what.kind == "delta" and what.start_at and self.cutover.protects(name, volume_id):
            what = ToCopy("delta", what.areas, 0, False)  # a revert would undo the checkpoint
        lost = self.cutover.release_protection(name, volume_id)
        for snapshot_id in compute.drop_unrecorded_protection(self.ctx.conn, volume_id):
            self.ctx.say(
                name,
                f"{address}: protection snapshot {snapshot_id} of volume {volume_id} (left "
                "unrecorded by an interrupted cutover) deleted: the sync writes the volume",
            )
        if not lost or what.kind != "delta":
            return what
        why = "its protection snapshot is gone: what was written since stays, so a full copy"
        self.ctx.say(name, f"{address}: {why}")
        return ToCopy("full", None, 0, False, why=why)  # onto the volume's older bytes

    def copy_stopped(self, address: str, attrs: dict[str, Any], error: StoppedError) -> None:
        """A copy stopped (Ctrl-C): what it read and wrote until then counts in the apply's
        totals (summary line, apply_end), as a `copy_stopped` event {address, read, written,
        zeroed, skipped, checkpoint (bytes: where the next apply resumes)} and a line in the
        VM's log; the record keeps its checkpoint (`copied_bytes`)."""
        stats = CopyStats.of_stop(error)
        with self.ctx.lock:
            self.ctx.copied[address] = stats
        mark = int(attrs.get("copied_bytes") or 0)
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "copy_stopped",
                address=address,
                read=stats.bytes_read,
                written=stats.bytes_written,
                zeroed=stats.bytes_zeroed,
                skipped=stats.bytes_skipped,
                checkpoint=mark,
            )
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: stopped: {human(stats.bytes_read)} read, {human(stats.bytes_written)} "
            f"written, {human(stats.bytes_zeroed)} zeroed; checkpoint at {human(mark)}",
        )

    def _copy(
        self, address: str, attrs: dict[str, Any], disk: DiskInfo, job: SyncJob, host_name: str
    ) -> host.SyncResult:
        """`job` run on `host_name` (here or on its agent), its failures accounted: a copy that
        failed verification is tainted, one stopped or failed midway counts what it moved.
        Raises what the sync raised."""
        try:
            calls = self._callbacks(address, attrs, disk)
            return self._run_sync(job, address, calls, host_name)
        except VerifyError as exc:
            self._taint(address, attrs, exc, job.volume_id)
        except ChangedOutsideError:  # nothing written: the record keeps what was seen before
            if job.unchanged_since:
                attrs[UPDATED_AT] = job.unchanged_since
                kept = ResourceRecord(address, "volume", Status.IN_PROGRESS, dict(attrs))
                self._write([kept], [])
            raise
        except StoppedError as exc:
            self._stamped(address, attrs, job.volume_id, Status.IN_PROGRESS)
            self.copy_stopped(address, attrs, exc)
            raise
        except Exception:
            self._stamped(address, attrs, job.volume_id, Status.IN_PROGRESS)
            self._copy_failed(address)
            raise

    def _stamped(self, address: str, attrs: dict[str, Any], volume_id: str, status: Status) -> None:
        """A copy or compare stopped or failed midway, its volume detached by the host (its
        finally): the record (`attrs`, `status`: in progress for a copy, ready for a compare)
        keeps the volume's Cinder updated_at after that detach, so the next plan and the resume
        know whether anything attached the volume in between (model.state.changed_outside). Not
        recorded when it cannot be read or written: the step's own error is what is said (a
        resume then trusts its checkpoint, as before; a compared volume is copied in full). Nor
        while the volume is still attached (its host killed or silent, its agent still going:
        break-it 14c F2): a stamp then is not after ferry's own detach, which would move it and
        turn the resume into a copy from 0; like a kill -9, nothing recorded, the checkpoint
        trusted."""
        try:
            now = volumes.seen(self.ctx.conn, volume_id)  # one GET for both
            if now.servers:
                return
            if now.updated_at:
                attrs[UPDATED_AT] = now.updated_at
                self._write([ResourceRecord(address, "volume", status, dict(attrs))], [])
        except Exception:  # whatever this fails on, the step's own error is what is said
            return

    def _copy_failed(self, address: str) -> None:
        """A copy that failed midway (an agent or the broker lost, a read error): the data its
        last progress report said it read counts in the apply's totals (break-it 14 F8: a failed
        apply said "0 B of data copied" while its agents had moved data); a copy that reported
        none adds nothing."""
        with self.ctx.lock:
            read = self.ctx.read.get(address, 0)
            if read and address not in self.ctx.copied:
                self.ctx.copied[address] = CopyStats(bytes_read=read, bytes_written=read)

    def _run_sync(
        self, job: SyncJob, address: str, calls: host.Callbacks, host_name: str
    ) -> host.SyncResult:
        """In this process, or on `host_name`'s agent (its queue) when a broker is configured;
        a cutover's final sync, its source off, gives up on a host whose agent stops answering
        (Remote.urgent) and takes an urgent slot there (SyncJob.urgent: break-it 12o H1)."""
        parsed = Address.parse(address)
        on = self.on_host()
        if parsed.name in self.cutover.powered_off:
            job = replace(job, urgent=True)
            if on.remote is not None:
                on = replace(on, remote=replace(on.remote, urgent=True))
        return on.sync(host_name, job, calls, self._say(parsed))

    def on_host(self) -> OnHost:
        """Where host-bound steps run: here, or on the hosts' agents (execution.broker), each
        task carrying the lineage of this apply's state (an agent serves one state)."""
        remote = self.ctx.remote
        if remote is not None:
            remote = remote.of_state(self.lineage)
        return OnHost(host.Host(self.ctx.conn, self.ctx.sources, self.ctx.devices), remote)

    def _say(self, address: Address) -> Callable[[str], None]:
        """A line about `address` in its VM's log (an agent's: taken, started)."""
        return lambda line: self.ctx.say(address.name, f"{address}: {line}")

    def _callbacks(self, address: str, attrs: dict[str, Any], disk: DiskInfo) -> host.Callbacks:
        """The host's callbacks: checkpoints and a resume's rewrite recorded in the state (the
        record's copy_change_id moves to this snapshot once what changed since the copy began
        is written), progress as events, the apply's stop."""

        def checkpoint(mark: int) -> None:
            attrs["copied_bytes"] = mark
            self._write([ResourceRecord(address, "volume", Status.IN_PROGRESS, dict(attrs))], [])

        def rewritten() -> None:
            attrs["copy_change_id"] = disk.change_id
            self._write([ResourceRecord(address, "volume", Status.IN_PROGRESS, dict(attrs))], [])

        events = self.ctx.events

        def progress(covered: int, total: int) -> None:
            self.ctx.read[address] = covered
            if events is not None:
                events.emit("copy", address=address, done=covered, total=total)

        def written() -> None:
            if events is not None:
                events.emit("copy_written", address=address)
            self.ctx.release(address)  # the detach and the records need no copy slot

        stop = self.ctx.stop.of(Address.parse(address).name)
        return host.Callbacks(checkpoint, rewritten, progress, stop, written)

    def _what_to_copy(
        self, change: Change, before: dict[str, Any], vm: Any, snapshot: Any, disk: DiskInfo
    ) -> ToCopy:
        """A delta from the stored changeId, the resume of an interrupted full copy, or a full
        copy from 0 (onto a volume that reads as zeros only when it is new)."""
        stored = before.get("change_id")
        volume_known = bool(before.get("volume_id"))
        full = (change.after or {}).get("copy") == "full"  # e.g. the disk grew: CBT untrusted
        if before.get("tainted") and volume_known:
            return ToCopy("full", None, 0, False, why=_tainted_since(before["tainted"]))
        outside = self.changed_outside(change.address, before)
        if outside:  # also when it happened after the plan was made
            why = f"{outside}: a full copy, holes written as zeros (never a delta onto its writes)"
            return ToCopy("full", None, 0, False, why=why)
        if change.action is Action.UPDATE and stored and disk.change_id and not full:
            try:
                areas = changed_areas(vm, snapshot, disk.key, disk.capacity, str(stored))
            except ChangeTrackingError as exc:
                return ToCopy("full", None, 0, False, why=f"{exc}")
            return self._resume_delta(before, areas, (vm, snapshot, disk))
        if change.action is Action.CREATE and before.get("copy") == "full" and volume_known:
            if full:  # the plan starts it over (its disk grew since it began)
                return ToCopy("full", None, 0, False)
            return self._resume(before, vm, snapshot, disk)
        zeroed = (change.after or {}).get("zeroed", True)  # the plan: its type reads as zeros
        return ToCopy("full", None, 0, not volume_known and bool(zeroed))

    def _resume_delta(
        self, before: dict[str, Any], areas: list[Extent], at: tuple[Any, Any, DiskInfo]
    ) -> ToCopy:
        """A delta sync of `areas` (changed since the volume's changeId); when an earlier delta
        of this volume was interrupted (its record still says `copy: delta`, a checkpoint and
        the changeId of the snapshot it read), it continues from that checkpoint: below it the
        volume holds that snapshot's bytes, so only what changed since that snapshot is
        rewritten first (break-it 14 F7: a killed coordinator's, or any killed apply's, delta
        was read again from byte 0). Otherwise, or when CBT cannot say what changed since
        (reset, refused), the whole delta from 0. Raises nothing."""
        vm, snapshot, disk = at
        done = int(before.get("copied_bytes") or 0)
        began = str(before.get("copy_change_id") or "")
        plain = ToCopy("delta", areas, 0, False)
        if not resumable_delta(before, disk.change_id):
            return plain
        if disk.change_id == began:  # nothing written since that snapshot (the VM is off)
            return ToCopy("delta", areas, done, False, began=began, why=_resumed(done, 0, began))
        try:
            changed = changed_areas(vm, snapshot, disk.key, disk.capacity, began)
        except ChangeTrackingError:
            return plain
        why = _resumed(done, total_bytes(changed), began)
        return ToCopy("delta", areas, done, False, rewrite=changed, began=began, why=why)

    def _allocated(self, what: ToCopy, vm: Any, snapshot: Any, disk: DiskInfo) -> ToCopy:
        """A full copy of the whole disk from a reader without block status (https): where the
        disk holds data at the snapshot, the areas CBT lists as allocated (changeId "*"), in
        `data`: only they are read, the rest of the capacity is holes (skipped on a volume
        that reads as zeros, zeroed on older bytes), so read + zeroed + skipped is the capacity
        as with block status. Without CBT the whole extent is read."""
        whole = what.kind == "full" and what.areas is None
        if not whole or not disk.change_id or self.ctx.sources.block_status():
            return what
        try:
            areas = changed_areas(vm, snapshot, disk.key, disk.capacity, "*")
        except ChangeTrackingError:
            return what
        return replace(what, data=areas)

    def job_data(
        self, what: ToCopy, verify: str, at: tuple[Any, Any, DiskInfo]
    ) -> list[Extent] | None:
        """A sync job's `data`: the allocated areas `_allocated` found for a whole copy, else
        `data_areas` for its verify."""
        return what.data if what.data is not None else self.data_areas(verify, *at)

    def data_areas(
        self, verify: str, vm: Any, snapshot: Any, disk: DiskInfo
    ) -> list[Extent] | None:
        """Where the disk holds data at the snapshot, for a whole-disk verify through a reader
        without block status (https): the areas CBT lists as allocated (changeId "*"), so the
        source's unallocated areas are hashed as zeros unread, as block status lets the other
        readers do (a 2 GiB disk holding 40 MiB is not read whole over HTTPS). None (read
        everything) for another scope or reader, or without CBT."""
        if verify != VERIFIED_WHOLE or self.ctx.sources.block_status() or not disk.change_id:
            return None
        try:
            return changed_areas(vm, snapshot, disk.key, disk.capacity, "*")
        except ChangeTrackingError:
            return None

    def _resume(self, before: dict[str, Any], vm: Any, snapshot: Any, disk: DiskInfo) -> ToCopy:
        """An interrupted full copy, continued from its checkpoint so that it ends equal to
        *this* snapshot: what changed since the snapshot it began from (its copy_change_id) is
        rewritten first — over the whole disk, as writes in flight may have landed beyond the
        checkpoint. Without a changeId to ask CBT from (none recorded, CBT off now, reset, or
        refused), or when the disk grew since it began (CBT is not trusted across an extend),
        it starts over from 0 onto the volume's old bytes."""
        done = int(before.get("copied_bytes", 0))
        zero = bool(before.get("dst_is_zero", False))
        began = str(before.get("copy_change_id") or "")
        start_over = "the interrupted copy starts over from 0"
        capacity = before.get("copy_capacity")  # the disk's bytes when the copy began
        if isinstance(capacity, int) and disk.capacity > capacity:
            why = (
                f"disk {disk.key} grew from {exact(capacity)} to {exact(disk.capacity)} since it "
                "began, and CBT cannot be trusted across a disk extend (kb.vmware.com/kb/2090639)"
            )
            return ToCopy("full", None, 0, False, why=f"{start_over}: {why}")
        if not began:
            return ToCopy("full", None, 0, False, why=f"{start_over}: it recorded no changeId")
        if not disk.change_id:
            return ToCopy("full", None, 0, False, why=f"{start_over}: CBT is off")
        if disk.change_id == began:
            return ToCopy("full", None, done, zero, began=began)
        if epoch(began) != epoch(disk.change_id):
            why = f"CBT was reset (changeId epoch {epoch(began)} → {epoch(disk.change_id)})"
            return ToCopy("full", None, 0, False, why=f"{start_over}: {why}")
        try:
            changed = changed_areas(vm, snapshot, disk.key, disk.capacity, began)
        except ChangeTrackingError as exc:
            return ToCopy("full", None, 0, False, why=f"{start_over}: {exc}")
        why = (
            f"resumed at {human(done)} from a newer snapshot: first the "
            f"{human(total_bytes(changed))} changed since changeId {began}"
        )
        return ToCopy("full", None, done, zero, rewrite=changed, began=began, why=why)

    def _extend(self, change: Change, address: Address, volume_id: str) -> None:
        """A disk that grew: its volume is extended (Cinder) to the planned size before the copy."""
        size = (change.after or {}).get("size_gib")
        host_id = self.host_for(address.name)[1]  # a killed apply may have left it attached there
        if isinstance(size, int) and volumes.extend(self.ctx.conn, volume_id, size, host_id):
            self.ctx.say(
                address.name, f"{change.address}: volume {volume_id} extended to {size} GiB"
            )

    def _settle(self, address: str, volume_id: str) -> None:
        """Before a step attaches the volume: wait while Cinder attaches or detaches it (bounded:
        attachments.SETTLE_SECONDS), said in the VM's log when it had to."""
        waited = volumes.settle(self.ctx.conn, volume_id, SETTLE_SECONDS)
        if waited:
            self.ctx.say(
                Address.parse(address).name,
                f"{address}: volume {volume_id} was '{waited}' (Cinder at work, e.g. the host of "
                "an interrupted apply letting it go): waited for it to settle",
            )

    def _ensure_volume(self, change: Change, address: Address, before: dict[str, Any]) -> str:
        """The disk's volume, available: the recorded one, or a new one — recorded as soon as
        cinder names it, so an apply killed (or a cloud that loses the request) while it is being
        created finds it again instead of making another."""
        existing = str(before.get("volume_id") or "")
        if existing and volumes.exists(self.ctx.conn, existing):
            self._settle(change.address, existing)
            if volumes.usable(self.ctx.conn, existing):
                return existing
            self.ctx.say(address.name, f"{change.address}: volume {existing} is in error: replaced")
            self._delete_volume(existing, status="error")
        self._no_other_states(address)
        after = change.after or {}
        metadata = {
            "ferry_vm": self.uuids[address.name] or "",
            "ferry_disk": str(address.index),
            "ferry_converted": "false",
            STATE_KEY: self.lineage,
        }
        volume = volumes.create_volume(
            self.ctx.conn,
            f"{self.targets[address.name]}-{address.index}",
            int(after.get("size_gib", 1)),
            after.get("volume_type"),
            metadata,
            wait=False,
        )
        attrs = {**before, "volume_id": volume.id, "copy": "full", "copied_bytes": 0}
        attrs.pop(UPDATED_AT, None)  # the old volume's
        self._write([ResourceRecord(change.address, "volume", Status.IN_PROGRESS, attrs)], [])
        volume = volumes.wait_volume(self.ctx.conn, str(volume.id), "available")
        if after.get("bootable"):
            self.ctx.conn.block_storage.set_volume_bootable_status(volume, True)
        return str(volume.id)

    def _no_other_states(self, address: Address) -> None:
        """Before a new volume is made for the disk: no other ferry state manages one of it
        now (break-it 12k F5: a saved plan made before another state replicated the VM made a
        second set of volumes, every later sync done twice, neither state saying so). What a
        fresh plan says as a concern, said here in one line; nothing made. Raises
        OpenStackError."""
        uuid = self.uuids[address.name] or ""
        found = volumes.of_other_states(self.ctx.conn, uuid, int(address.index or 0), self.lineage)
        if found:
            listed = ", ".join(
                f"{v} (ferry state {lineage})" for v, lineage in sorted(found.items())
            )
            raise OpenStackError(
                f"volume {listed} of this disk is managed by another ferry "
                "state, made since the plan: no second volume made; run `ferry plan` again "
                "(plan with that state, or delete its volumes)"
            )

    def _verify_scope(self, name: str, kind: str) -> str:
        """What of this copy is verified: the whole disk, the areas a warm delta copied, or
        nothing (""). A cutover's final sync is always verified whole when verified at all."""
        scope = "full" if self.ctx.verify else self.verify.get(name, "off")
        if scope == "off":
            return ""
        if scope == "changed" and kind == "delta" and self.modes.get(name) == "replicate":
            return VERIFIED_AREAS
        return VERIFIED_WHOLE

    def _synced(
        self,
        change: Change,
        attrs: dict[str, Any],
        disk: DiskInfo,
        *,
        kind: str,
        stats: CopyStats,
        step: float,
    ) -> None:
        """The copy is complete and flushed: only now does the changeId advance. `step`: the
        step's wall time in seconds (stats.seconds is the copy's own part of it)."""
        volume_id = str(attrs["volume_id"])
        address = Address.parse(change.address)
        verified: tuple[str | None, str | None] = self.ctx.digests.get(change.address, (None, None))
        metadata = {"ferry_vm": self.uuids[address.name] or "", "ferry_disk": str(address.index)}
        metadata[STATE_KEY] = self.lineage
        if disk.change_id:
            metadata["ferry_change_id"] = disk.change_id
        volumes.set_metadata(self.ctx.conn, volume_id, metadata)
        stamp = volumes.updated_at(self.ctx.conn, volume_id)  # after ferry's last write of it
        after, before = change.after or {}, change.before or {}
        host = self.host_for(address.name)[0]  # the conversion host that wrote it
        record = {
            "volume_id": volume_id,
            RECORDED_HOST: host,
            "change_id": disk.change_id,
            "size_gib": after.get("size_gib"),
            "capacity": disk.capacity,  # bytes: a grow within a GiB is seen too
            "volume_type": after.get("volume_type"),
            "bootable": after.get("bootable", False),
            "epoch": content_epoch(),  # every write a new one: a conversion is of one epoch
            UPDATED_AT: stamp,
            "last_sync": {
                "kind": kind,
                "bytes": stats.bytes_read + stats.bytes_zeroed,
                "seconds": round(stats.seconds, 3),  # copying only: what throughput is over
                "read": stats.bytes_read,  # data moved (bytes zeroed are not a transfer)
                "skipped": stats.bytes_skipped,  # holes and zeros left alone
                "step_seconds": round(step, 3),
                "at": time.time(),
                "previous_at": (before.get("last_sync") or {}).get("at"),  # dates the change rate
                "source_power": self.ctx.snapshot_power.get(address.name),
                "retries": stats.retries,
                "sha256": verified[0],
                "verified": verified[1],  # whole disk | changed areas | None
                "host": host,
            },
        }
        zeroing = zero_rate(stats.bytes_zeroed, stats.seconds) or before.get(ZERO_RATE)
        if zeroing:
            record[ZERO_RATE] = zeroing
        self._write([ResourceRecord(change.address, "volume", Status.READY, record)], [])
        self.announce_sync(change.address, stats, step, volume_id, record["last_sync"])

    def announce_sync(
        self, address: str, stats: CopyStats, step: float, target: str, last_sync: dict[str, Any]
    ) -> None:
        """A finished sync told: the `synced` event (JSON stream, logs, report) and the line
        people read. `target` is what was written (a volume ID, or image mode's local file);
        `last_sync` the record's (kind, bytes, seconds, sha256, verified, host or none);
        `step` the step's wall time in seconds."""
        vm, kind = Address.parse(address).name, str(last_sync["kind"])
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "synced",
                address=address,
                vm=vm,
                kind=kind,
                bytes=last_sync["bytes"],
                seconds=last_sync["seconds"],
                read=stats.bytes_read,
                skipped=stats.bytes_skipped,
                volume_id=target,
                host=last_sync.get("host"),
                step_seconds=round(step, 3),
                sha256=last_sync["sha256"],
                verified=last_sync["verified"],
            )
        self.ctx.say(vm, sync_line(address, kind, stats, step))
        if last_sync.get("verified") and last_sync.get("sha256"):
            said = verify_line(address, str(last_sync["verified"]), str(last_sync["sha256"]))
            self.ctx.say(vm, said)


def verify_line(address: str, verified: str, digest: str) -> str:
    """A verified sync's outcome, for people (break-it 12o L5: `apply --verify` said nothing of
    it), e.g. 'vm.web01.disk[2000]: verified: equal to the source disk at its snapshot over the
    whole disk (sha256 hash list 9f2c04d1e2ab…)'."""
    return (
        f"{address}: verified: equal to the source disk at its snapshot over the {verified} "
        f"(sha256 hash list {digest[:12]}…)"
    )


def sync_line(address: str, kind: str, stats: CopyStats, step: float) -> str:
    """What a sync did, for people: the step's wall time (`step`, seconds: volume, attach, copy,
    verify, detach), the data read and its rate over the copy's own seconds, zeros written and
    holes skipped apart (they move no data), e.g. 'vm.web01.disk[2000]: full copy in 16.0 s:
    41.9 MiB read (209.7 MiB/s while copying), 0 B zeroed, 19.9 GiB of holes skipped'."""
    moved = f"{human(stats.bytes_read)} read"
    if stats.seconds > 0 and stats.bytes_read:
        moved += f" ({rate(stats.bytes_read / stats.seconds)} while copying)"
    parts = [moved, f"{human(stats.bytes_zeroed)} zeroed"]
    if stats.bytes_skipped:
        parts.append(f"{human(stats.bytes_skipped)} of holes skipped")
    return f"{address}: {kind} copy in {duration(step)}: {', '.join(parts)}"
