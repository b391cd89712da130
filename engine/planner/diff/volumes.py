"""Volume changes (pure): create = full copy, update = delta sync (or a full re-copy when CBT is
off or was reset, with the reason), replace = a tainted copy redone, read = adopt a volume found
by its metadata; a volume a server booted from is never synced again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM, DesiredVolume
from engine.model.observed import ObservedVolume, SourceDisk, epoch
from engine.model.plan import Action, Change
from engine.model.state import (
    ResourceRecord,
    Status,
    changed_outside,
    holds_last_sync,
    resumable_delta,
)
from engine.planner.diff.common import CUTOVER_MODES
from engine.units import duration, exact, human, rate

POWERED_ON = "poweredOn"
# an adoption step: the lineage its found volume's `ferry_state` names (never a record's)
FOUND_LINEAGE = "lineage"
BOOTED = "a server was booted from it: never synced again"


def _volume(
    address: str,
    action: Action,
    reason: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    size: int | None = None,
    zeros: int | None = None,
) -> Change:
    return Change(
        address,
        "volume",
        action,
        reason,
        before,
        after,
        bytes=size,
        estimate=size is not None,
        zeros=zeros,
    )


WHOLE_EXTENT = (
    "https reads the whole extent (HTTP has no block status and without CBT nothing says "
    "where the disk holds data; zeros are skipped on write): enable_cbt: true reads only the "
    "allocated areas"
)


def reads_whole_extent(vm: DesiredVM) -> bool:
    """Does a full copy of `vm` read each disk's whole extent? The https reader without CBT:
    HTTP has no block status, and without CBT nothing says where the disk holds data (with it
    the allocated areas, changeId "*", are read)."""
    return vm.reader == "https" and not vm.source.cbt and not vm.enable_cbt


def full_bytes(disk: SourceDisk, vm: DesiredVM | None = None) -> int:
    """What a full copy reads at most: the disk's allocated bytes on its datastore when vSphere
    reports them (holes are skipped), else its capacity; its capacity when `vm`'s reader reads
    the whole extent (`reads_whole_extent`)."""
    if disk.allocated is None or (vm is not None and reads_whole_extent(vm)):
        return disk.capacity
    return min(disk.allocated, disk.capacity)


def holes(vm: DesiredVM, disk: SourceDisk, *, at: int = 0) -> int | None:
    """The bytes of `disk`'s holes a full copy from offset `at` writes as zeros onto a volume
    not known to read as zeros (one holding older bytes, or of a type not assumed zeroed): what
    it does not read of [at, capacity) (full_bytes bounds what it reads); None when that is
    nothing. They take time with the source off too (break-it 12n M2: a final full copy's
    ~1.9 TB of zeros on a 2 TB disk holding 100 GB were not in the downtime estimate)."""
    read = min(full_bytes(disk, vm), max(disk.capacity - at, 0))
    left = disk.capacity - at - read
    return left if left > 0 else None


def full_reason(vm: DesiredVM, reason: str) -> str:
    """A full copy's reason, saying when the reader reads the whole extent."""
    if not reads_whole_extent(vm):
        return reason
    said = "CBT is off" in reason  # "CBT is off: full copy", a resume's "CBT is off, so ..."
    return f"{reason}; {WHOLE_EXTENT}" if said else f"{reason}; CBT off: {WHOLE_EXTENT}"


def volume_change(
    vm: DesiredVM,
    volume: DesiredVolume,
    disk: SourceDisk,
    record: ResourceRecord | None,
    observed: ObservedVolume | None,
    *,
    now: float | None = None,
    reverts: bool = False,
    unlabeled: bool = False,
) -> Change:
    """The change of one disk's volume; `now` (epoch seconds) dates a running VM's delta
    estimate (None: no time-based estimate); `reverts`: this state's conversion record holds a
    protection snapshot of the recorded volume that holds its last sync (reverts_first): the
    executor reverts the volume to it before its next write, undoing whatever wrote it since;
    `unlabeled`: the recorded volume exists but was not found by ferry's metadata (removed
    outside ferry): copied in full onto it (nothing says what it holds), said as such."""
    address = str(Address("vm", vm.name, "disk", volume.disk_key))
    after: dict[str, Any] = {
        "size_gib": volume.size_gib,
        "volume_type": volume.volume_type,
        "bootable": volume.bootable,
        "disk_key": volume.disk_key,
        "capacity": disk.capacity,  # bytes the plan saw: a saved plan checks them (apply)
    }
    zeros = ""
    if volume.unzeroed:  # only then: plans of zeroed volumes stay as they were
        after["zeroed"] = False
        zeros = f"; not assumed to read as zeros ({volume.unzeroed}): holes written as zeros"
    if record is None and observed is None:
        return _volume(
            address,
            Action.CREATE,
            full_reason(vm, f"new volume: full copy from a snapshot{zeros}"),
            None,
            after,
            size=full_bytes(disk, vm),
            zeros=holes(vm, disk) if volume.unzeroed else None,
        )
    if record is None:
        assert observed is not None
        return _adoption(address, observed, after)
    before = dict(record.attributes)
    if record.status is Status.TAINTED:
        why = str(before.get("tainted") or "the last copy failed (tainted)")
        return _volume(
            address,
            Action.REPLACE,
            full_reason(vm, f"{why}: copy again in full"),
            before,
            after,
            size=full_bytes(disk, vm),
            zeros=holes(vm, disk) if observed is not None or volume.unzeroed else None,
        )
    if observed is None and before.get("volume_id") and before.get("converted"):
        return _volume(  # production's since its cutover: never a new, unconverted copy
            address,
            Action.NOOP,
            f"cut over: recorded volume {before['volume_id']} is not found by its ferry "
            "metadata (deleted, or its metadata removed, outside ferry): never copied again",
            before,
            before,
        )
    if observed is None and before.get("volume_id"):
        return _recorded_gone(vm, disk, (address, before, after), zeros, unlabeled)
    if record.status is Status.IN_PROGRESS and before.get("copy") != "delta":
        grew = grown_since_copy(volume, disk, before, observed) or _changed_outside(
            before, observed, reverts
        )
        if grew:  # its resume would ask CBT what changed across the extend: start over
            why = f"the interrupted copy starts over from 0: {grew}"
            return _volume(
                address,
                Action.CREATE,
                full_reason(vm, why),
                before,
                {**after, "copy": "full"},
                size=full_bytes(disk, vm),
                zeros=holes(vm, disk) if observed is not None or volume.unzeroed else None,
            )
        why, rest, at = _resume(vm, disk, before)
        zeroed = at > 0 and bool(before.get("dst_is_zero"))  # as the copy it resumes began
        new = observed is None and not volume.unzeroed
        left = None if zeroed or new else holes(vm, disk, at=at)
        return _volume(address, Action.CREATE, why, before, after, size=rest, zeros=left)
    again = _full_again(volume, disk, record, (observed, reverts))
    if again is not None:
        why, extend = again
        return _volume(
            address,
            Action.UPDATE,
            full_reason(vm, why),
            before,
            {**after, "copy": "full", **extend},
            size=full_bytes(disk, vm),
            zeros=holes(vm, disk),
        )
    if record.status is Status.IN_PROGRESS:
        return _interrupted_delta(vm, disk, before, (address, after), now)
    copy, reason = sync_reason(vm, disk, before)
    if copy == "none":
        return _volume(address, Action.NOOP, reason, before, before)
    if copy == "full":
        full, why = full_bytes(disk, vm), full_reason(vm, reason)
        return _volume(address, Action.UPDATE, why, before, after, size=full, zeros=holes(vm, disk))
    size, how = delta_estimate(before, now, disk.capacity)
    return _volume(address, Action.UPDATE, f"{reason} ({how})", before, after, size=size)


def _recorded_gone(
    vm: DesiredVM,
    disk: SourceDisk,
    change: tuple[str, dict[str, Any], dict[str, Any]],
    zeros: str,
    unlabeled: bool,
) -> Change:
    """A recorded volume not found by ferry's metadata (`change`: the address, the record's
    attributes, the volume wanted; `zeros`: what the reason says of a type not assumed to read
    as zeros, "" for one that is): gone, so a full copy into a new one, or (`unlabeled`) there
    without ferry's metadata, so a full copy onto it (break-it 12o M2: it was said gone)."""
    address, before, after = change
    held = before["volume_id"]
    why = f"recorded volume {held} no longer exists: full copy from 0{zeros}"
    if unlabeled:
        why = (
            f"recorded volume {held} exists without ferry's metadata (ferry_vm, ferry_disk: "
            "removed outside ferry), so nothing says what it holds: full copy onto it from 0, "
            "holes written as zeros, its metadata set again"
        )
    return _volume(
        address,
        Action.CREATE,
        full_reason(vm, why),
        before,
        after,
        size=full_bytes(disk, vm),
        zeros=holes(vm, disk) if zeros or unlabeled else None,
    )


def _full_again(
    volume: DesiredVolume,
    disk: SourceDisk,
    record: ResourceRecord,
    seen: tuple[ObservedVolume | None, bool],
) -> tuple[str, dict[str, int]] | None:
    """Why a synced volume is copied in full again, and what its after gains (the GiB to
    extend from), or None: its disk grew (before an interrupted delta's redo too: that delta
    would span the extend), or something other than ferry changed it since its last sync
    (`seen`: the volume found, and whether a protection revert undoes that first)."""
    before = record.attributes
    grown, extend_from = _grown(volume, disk, before)
    if grown:
        return grown, ({} if extend_from is None else {"extend_from_gib": extend_from})
    outside = _changed_outside(before, *seen)  # READY, or an interrupted delta's record
    if outside:
        return f"{outside}: copy it in full, holes written as zeros", {}
    return None


def _changed_outside(
    before: Mapping[str, Any], observed: ObservedVolume | None, reverts: bool
) -> str:
    """Why the recorded volume may hold writes that are not ferry's (model.state.
    changed_outside), "" when nothing says so. Not when this state's protection snapshot of
    it (`reverts`) brings it back to its last sync first: that undoes what was written since
    (the executor's Protection.reverts). A protection snapshot of ferry's this state does not
    record (left by a cutover killed before its record) is dropped, never reverted to: the
    volume is copied in full (break-it 12m F2: the plan showed a delta, the cutover was
    refused at every apply)."""
    if observed is None or reverts:
        return ""
    why = changed_outside(before, observed.id, observed.updated_at, observed.stamp)
    was = before.get("volume_type")
    if why and was and observed.volume_type and observed.volume_type != was:
        why += f"; it was retyped from {was} to {observed.volume_type} since"
    return why


def _adoption(address: str, observed: ObservedVolume, after: dict[str, Any]) -> Change:
    """A volume found by metadata for a disk this state has no record of: adopted (read) at
    its changeId. One Cinder still holds a protection snapshot of ferry's for (and not
    converted) may have been written since by a cutover's conversion or an unconfirmed server
    (break-it 12h F3: a lost state's successor adopted it as a replica, deltas went on top of
    the guest's bytes, "No changes"): adopted without a changeId, so its next sync copies it in
    full."""
    found = (
        f"found {observed.origin} volume {observed.id} for this disk"
        f"{f' (of ferry state {observed.lineage})' if observed.lineage else ''}"
    )
    change_id = observed.change_id
    if observed.protected_by and not observed.converted:
        change_id = None
        found += (
            f"; Cinder holds ferry's protection snapshot {observed.protected_by} of it: a "
            "cutover may have written it since its changeId, so it is adopted without one and "
            "copied in full at its next sync"
        )
    lineage = {FOUND_LINEAGE: observed.lineage} if observed.lineage else {}
    return _volume(
        address,
        Action.READ,
        f"{found}: adopt it",
        None,
        {**after, "volume_id": observed.id, "change_id": change_id, **lineage},
    )


def adopted_lineage(change: Change, volume_id: str) -> str:
    """The ferry state lineage (`ferry_state`) the plan found `volume_id` with when `change`
    adopts it and writes it in the same step (adopt_then_sync: --adopt-lineage's lost state, in
    cutover mode or with no changeId to trust), "" for any other step or volume. The apply
    writes such a volume (it stamps this state's lineage on it first); a volume of any other
    lineage, or of that one for any other step, is another state's (break-it 12i F3: every
    adopt-and-copy was refused as "taken over since this plan was made")."""
    before = change.before or {}
    if change.kind != "volume" or change.action is not Action.UPDATE:
        return ""
    if before.get("volume_id") != volume_id:
        return ""
    return str(before.get(FOUND_LINEAGE) or "")


def _interrupted_delta(
    vm: DesiredVM,
    disk: SourceDisk,
    before: Mapping[str, Any],
    at: tuple[str, dict[str, Any]],
    now: float | None,
) -> Change:
    """An interrupted delta sync (`at`: its address and the volume's attributes wanted): resumed
    at its checkpoint when CBT can say what changed since the snapshot it read (the executor's
    VolumeSteps._resume_delta, model.state.resumable_delta); else planned as a disk whose last
    sync completed is (sync_reason): a full copy with its reason and size when CBT is off, was
    reset since (the changeId's epoch) or no changeId is recorded, else the delta redone whole.
    The full copy is planned as such (`copy: full`: the executor asks CBT nothing), so a
    cutover's plan warns of it and counts it in the downtime (break-it 12i F2: "redo the
    interrupted delta" with no size, then 603 MiB copied in full with the source off)."""
    address, after = at
    since = f"the interrupted delta since changeId {before.get('change_id')}"
    size, how = delta_estimate(before, now, disk.capacity)
    if vm.source.cbt and resumable_delta(before, disk.change_id):
        done = int(before.get("copied_bytes") or 0)
        why = f"resume {since} at {human(done)}, after what changed since the snapshot it read"
        return _volume(address, Action.UPDATE, why, dict(before), after, size=size)
    copy, reason = sync_reason(vm, disk, before)
    if copy == "full":
        why = full_reason(vm, f"{since} cannot be resumed or redone: {reason}")
        full, size = {**after, "copy": "full"}, full_bytes(disk, vm)
        zeros = holes(vm, disk)
        return _volume(address, Action.UPDATE, why, dict(before), full, size=size, zeros=zeros)
    return _volume(address, Action.UPDATE, f"redo {since} ({how})", dict(before), after, size=size)


def _grown(
    volume: DesiredVolume, disk: SourceDisk, before: Mapping[str, Any]
) -> tuple[str, int | None]:
    """Why a synced disk that grew since its last sync is copied in full ("" when it did not),
    and the volume's GiB to extend from (None: the grow fits in the volume's GiB): by its bytes
    (`capacity`, recorded at each sync since this ferry: a grow within the same GiB leaves the
    volume's size as it was), else by its volume's GiB (older records). A converted (cut-over)
    volume is done with.

    Grown: CBT is not trusted across a disk extend (VMware KB 2090639, Broadcom 310751:
    QueryChangedDiskAreas misses sectors after an extend past a 128 GB boundary on ESXi
    4.x/5.x; the workaround is a CBT reset), so a full copy."""
    if before.get("converted"):
        return "", None
    was, capacity = before.get("size_gib"), before.get("capacity")
    extend_from = was if isinstance(was, int) and volume.size_gib > was else None
    if isinstance(capacity, int) and disk.capacity > capacity:  # to the byte: "2.0 GiB" hides a MiB
        grew = f"disk {disk.key} grew from {exact(capacity)} to {exact(disk.capacity)}"
    elif extend_from is not None:  # its size before is known only as its volume's GiB
        grew = f"disk {disk.key} grew past its {was} GiB volume to {exact(disk.capacity)}"
    else:
        return "", None
    untrusted = "(CBT cannot be trusted across a disk extend)"
    if extend_from is None:
        return f"{grew}: copy it in full {untrusted}", None
    extend = f"extend the volume from {extend_from} to {volume.size_gib} GiB (Cinder extend)"
    return f"{grew}: {extend}, then copy it in full {untrusted}", extend_from


def converted_gone(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    found: Mapping[int, ObservedVolume],
    volume_ids: frozenset[str] | None,
) -> tuple[Concern, ...]:
    """An error concern per converted volume of a cut-over VM (output: volume) that is gone from
    Cinder (deleted outside ferry; `found`: the VM's volumes found by metadata, by disk key;
    `volume_ids`: every volume of the project, None when not read: one listed there only lost
    its metadata, and its server still has it).
    It was production's: a new copy of the source would be unconverted, without what the server
    wrote since the cutover, and the server (or the one its drift boots again) would run from
    it (found by a helper reviewing image mode: the plan copied it in full into a new volume,
    no concern). ferry does not rebuild production from the source."""
    out = []
    for volume in vm.volumes:
        record = records.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
        attrs = record.attributes if record else {}
        if record is None or not attrs.get("converted") or volume.disk_key in found:
            continue
        if volume_ids is not None and str(attrs.get("volume_id")) in volume_ids:
            continue
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "volume-gone",
                f"disk {volume.disk_key}'s converted volume {attrs.get('volume_id')}, the cut-"
                "over server's since the cutover, is gone from Cinder (deleted outside ferry): "
                "ferry does not make production again from the source (a new copy would be "
                "unconverted and lack what the server wrote since); restore the volume from a "
                "backup, or plan --destroy and migrate the VM again",
            )
        )
    return tuple(out)


def shrunk(vm: DesiredVM, records: Mapping[str, ResourceRecord]) -> tuple[Concern, ...]:
    """An error concern per disk smaller than at its last sync (by its recorded bytes, else
    its volume's GiB): Cinder cannot shrink a volume, and a delta cannot cut bytes off."""
    out = []
    disks = {d.key: d for d in vm.source.disks}
    for volume in vm.volumes:
        record = records.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
        attrs = record.attributes if record else {}
        was, capacity = attrs.get("size_gib"), attrs.get("capacity")
        now = disks[volume.disk_key].capacity if volume.disk_key in disks else None
        if attrs.get("converted"):
            continue
        if isinstance(was, int) and volume.size_gib < was:
            if isinstance(capacity, int):
                sizes = f"from {exact(capacity)} to {exact(now or 0)}"
            else:  # its size before is known only as its volume's
                sizes = f"below its {was} GiB volume to {exact(now or 0)}"
            why = "ferry cannot shrink its volume (Cinder extends only)"
        elif isinstance(capacity, int) and now is not None and now < capacity:
            sizes = f"from {exact(capacity)} to {exact(now)}"  # within its volume's GiB
            why = "its replica still holds the bytes past the disk's new end"
        else:
            continue
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "disk-shrunk",
                f"disk {volume.disk_key} shrank {sizes}: {why}; give the disk its size "
                "back, or destroy the replica and copy it again",
            )
        )
    return tuple(out)


def removed_disks(vm: DesiredVM, records: Mapping[str, ResourceRecord]) -> list[Change]:
    """A delete per replica of a disk the source VM no longer has."""
    present = {d.key for d in vm.source.disks}
    out = []
    for address, record in sorted(records.items()):
        parsed = Address.parse(address)
        if record.kind != "volume" or parsed.index is None or parsed.index in present:
            continue
        out.append(
            Change(
                address,
                "volume",
                Action.DELETE,
                f"disk {parsed.index} was removed from the source VM: delete its replica volume",
                dict(record.attributes),
                None,
            )
        )
    return out


def grown_since_copy(
    volume: DesiredVolume,
    disk: SourceDisk,
    before: Mapping[str, Any],
    observed: ObservedVolume | None,
) -> str:
    """Why an interrupted full copy cannot resume because its disk grew since it began ("" when
    it did not): the copy recorded the disk's capacity (`copy_capacity`, bytes) when it began,
    or (a record from before that) its volume is smaller than the disk now. The resume would
    ask CBT what changed since a changeId taken before the extend, and CBT cannot be trusted
    across a disk extend (VMware KB 2090639: QueryChangedDiskAreas misses changed sectors after
    an extend on ESXi 4.x/5.x), as for a plain grow (a full copy)."""
    began = before.get("copy_capacity")
    if isinstance(began, int) and disk.capacity > began:
        grew = f"disk {disk.key} grew from {exact(began)} to {exact(disk.capacity)} since it began"
    elif observed is not None and observed.size_gib < volume.size_gib:
        grew = f"disk {disk.key} grew past its {observed.size_gib} GiB volume since it began"
    else:
        return ""
    extend = ""
    if observed is not None and observed.size_gib < volume.size_gib:
        extend = f"; the volume is extended to {volume.size_gib} GiB (Cinder extend)"
    return (
        f"{grew}, and CBT cannot be trusted across a disk extend (kb.vmware.com/kb/2090639){extend}"
    )


def _resume(vm: DesiredVM, disk: SourceDisk, before: Mapping[str, Any]) -> tuple[str, int, int]:
    """An interrupted full copy: (why, bytes estimate, the offset it copies from: 0 when it
    starts over). It resumes from its checkpoint when CBT
    can say what changed since the snapshot it began from (copy_change_id), and copies that too;
    otherwise it starts over from 0 (DESIGN §5.7). A running VM's changeId moves only at stun
    points (a snapshot), so an unchanged live changeId proves nothing for it: what changed is
    measured at the apply's new snapshot."""
    done = int(before.get("copied_bytes", 0))
    began, live = before.get("copy_change_id"), disk.change_id
    over = "the interrupted copy starts over from 0"
    unknown = "so what changed since it began is unknown"
    if not vm.source.cbt:
        return full_reason(vm, f"{over}: CBT is off, {unknown}"), full_bytes(disk, vm), 0
    if not began:
        return f"{over}: it recorded no changeId, {unknown}", full_bytes(disk, vm), 0
    if live is not None and epoch(live) != epoch(began):
        return (
            f"{over}: CBT was reset (changeId epoch {epoch(began)} → {epoch(live)})",
            full_bytes(disk, vm),
            0,
        )
    rest = min(full_bytes(disk, vm), max(disk.capacity - done, 0))
    # vSphere reports a disk's allocated bytes as one number (layoutEx), not where they lie:
    # the part above the checkpoint is bounded by them, not measured (break-it 12e item 7:
    # ~289.9 MiB planned, 137.4 MiB read above a 618.0 MiB checkpoint)
    bound = (
        f"; {human(rest)} is an upper bound: the disk's allocated bytes, of which only those "
        "past the checkpoint are read"
        if rest < disk.capacity - done
        else ""
    )
    if live == began and vm.source.power_state != POWERED_ON:
        return f"resume the interrupted copy ({human(done)} already written){bound}", rest, done
    measured = "" if live != began else " (the VM is running: measured at the new snapshot)"
    return (
        f"resume the interrupted copy ({human(done)} already written) and copy what changed "
        f"since changeId {began}, where it began{measured}{bound}",
        rest,
        done,
    )


def sync_reason(vm: DesiredVM, disk: SourceDisk, before: Mapping[str, Any]) -> tuple[str, str]:
    """How a recorded, ready volume syncs: ('none' | 'delta' | 'full', why). CBT off on a disk
    synced at a changeId (turned off since): enable_cbt turns it on again in a new epoch, whose
    changeIds cannot be compared with the stored one (the apply's changed block query faults
    and copies in full), so a full copy, planned as one."""
    stored, live = before.get("change_id"), disk.change_id
    if before.get("converted"):
        return "none", "cut over"
    if not vm.source.cbt and not vm.enable_cbt:
        return "full", "CBT is off: full copy"
    if not stored:
        return "full", "no changeId recorded: full copy"
    if not vm.source.cbt:
        return "full", (
            f"CBT is off (turned off since changeId {stored}; enable_cbt turns it on again in "
            "a new epoch): full copy"
        )
    if live is not None and epoch(live) != epoch(stored):
        return "full", f"CBT was reset (changeId epoch {epoch(stored)} → {epoch(live)}): full copy"
    if vm.mode in CUTOVER_MODES:
        return "delta", f"final delta since changeId {stored}, after the source is powered off"
    if live is not None and live == stored:
        if vm.source.power_state == POWERED_ON:
            return "delta", (
                f"delta sync since changeId {stored}: the VM is running and its changeId moves "
                "only at stun points, so its writes since are unknown until measured"
            )
        return "none", f"in sync at changeId {stored} (the VM is not running)"
    return "delta", f"delta sync since changeId {stored}"


def delta_estimate(
    before: Mapping[str, Any], now: float | None, capacity: int | None = None
) -> tuple[int | None, str]:
    """Bytes the next delta will likely move, and how that was estimated.

    With the last delta's bytes and the seconds between the sync before it and it (`at` and
    `previous_at`, epoch seconds), and `now`: that change rate (bytes/s) times the seconds since the
    last sync, never more than the disk's `capacity` (bytes; break-it 12m F4: ~8.1 GiB for a
    4 GiB disk). Else what the last delta moved, labelled as such ("last delta: 3.0 MiB"), not as
    a prediction; None (unknown, shown without a size) before any delta was measured."""
    last = before.get("last_sync") or {}
    if last.get("kind") != "delta":
        return None, "size unknown until a first delta is measured"
    moved = int(last.get("bytes", 0))
    at, previous = last.get("at"), last.get("previous_at")
    if now is not None and isinstance(at, int | float) and isinstance(previous, int | float):
        interval = float(at) - float(previous)
        if interval > 0:
            per_second = moved / interval
            size = round(per_second * max(now - float(at), 0.0))
            how = (
                f"estimate: {rate(per_second)} changed between the last syncs, times "
                f"{duration(max(now - float(at), 0.0))} since the last sync"
            )
            if capacity is not None and size > capacity:
                return capacity, f"{how}, at most the disk's {human(capacity)}"
            return size, how
    return moved, f"last delta: {human(moved)}; no change rate measured yet, so shown as its size"


def settled(change: Change) -> Change:
    """A volume a server booted from: adopted as it is (found) or left alone (recorded)."""
    if change.action in (Action.READ, Action.NOOP):
        return change
    before = dict(change.before or {})
    return Change(
        change.address,
        "volume",
        Action.NOOP,
        BOOTED,
        before,
        before,
    )


def adopt_then_sync(vm: DesiredVM, change: Change) -> Change:
    """A cutover cannot boot from a volume adopted as it is: adopt it and copy the final delta
    in the same step (a full copy when it carries no changeId). In any mode, a found volume
    without a changeId never completed a sync (one an apply killed before its record was
    written left, say): adopted as it is, "Apply complete" would leave it empty until the next
    apply; it is adopted and copied in full in the same step."""
    if change.action is not Action.READ:
        return change
    found = dict(change.after or {})
    since = found.get("change_id")
    if vm.mode not in CUTOVER_MODES and since:
        return change
    return Change(
        change.address,
        "volume",
        Action.UPDATE,
        f"{change.reason}, then "
        + (f"the final delta since changeId {since}" if since else "a full copy (no changeId)"),
        {k: found[k] for k in ("volume_id", "change_id", FOUND_LINEAGE) if found.get(k)},
        {k: v for k, v in found.items() if k not in ("volume_id", "change_id", FOUND_LINEAGE)},
        bytes=None
        if since
        else next(full_bytes(d, vm) for d in vm.source.disks if d.key == found["disk_key"]),
        estimate=True,
    )


VERIFY_REASON = "compare the volume with a new snapshot (--verify): both read whole, {size}"


def verify_step(vm: DesiredVM, change: Change) -> Change:
    """`--verify`: a replica for which nothing is planned (in sync, not cut over) becomes a
    verify step: compared whole with a new snapshot of the source (sha256 of both; a changeId
    that moved by then is synced first). Any other change is returned as it is (a copy is
    verified whole anyway under --verify; a cut-over volume is never compared)."""
    before = dict(change.before or {})
    if change.kind != "volume" or change.action is not Action.NOOP or before.get("converted"):
        return change
    if not before.get("volume_id") and not before.get("path"):  # a volume's, or a file's
        return change
    key = Address.parse(change.address).index
    disk = next((d for d in vm.source.disks if d.key == key), None)
    wanted = next((v for v in vm.volumes if v.disk_key == key), None)
    if disk is None or wanted is None:
        return change
    after = {
        "size_gib": wanted.size_gib,
        "volume_type": wanted.volume_type,
        "bootable": wanted.bootable,
        "disk_key": key,
        "capacity": disk.capacity,
    }
    return Change(
        change.address,
        "volume",
        Action.VERIFY,
        VERIFY_REASON.format(size=human(disk.capacity)),
        before,
        after,
    )


def retyped(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    found: Mapping[int, ObservedVolume] | None = None,
) -> tuple[Concern, ...]:
    """A warning per replica volume of a type the spec no longer maps its disk to (break-it
    12c item 14: volume_type_map changed, e.g. to an encrypted type, and the replica silently
    stayed of the old one): ferry does not retype volumes; the warning says how. Its type is
    the one Cinder names (`found`: the VM's volumes found by metadata, by disk key), else its
    record's: a record names the type the spec mapped at its last sync (break-it 12k F6: one
    sync under the new map and the warning was gone, the volume still of the old type). A
    volume a server was booted from (converted) is production's and left out."""
    out = []
    for volume in vm.volumes:
        record = records.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
        attrs = record.attributes if record is not None and record.kind == "volume" else {}
        there = (found or {}).get(volume.disk_key)
        held = there.volume_type if there and there.id == attrs.get("volume_id") else None
        had = held or attrs.get("volume_type")
        if not had or not volume.volume_type or had == volume.volume_type or attrs.get("converted"):
            continue
        out.append(
            Concern(
                ConcernLevel.WARNING,
                "volume-type-changed",
                f"disk {volume.disk_key}'s volume {attrs.get('volume_id')} is of type {had}, the "
                f"spec now maps it to {volume.volume_type}: ferry does not retype a volume; "
                f"`openstack volume retype {attrs.get('volume_id')} {volume.volume_type}` (its "
                "next sync is then a full copy: a retype moves the volume's Cinder updated_at, "
                "and ferry cannot tell a retype's migration from other writes), or delete it and "
                "plan again (a full copy too)",
            )
        )
    return tuple(out)


def not_verified(vm: DesiredVM, changes: list[Change]) -> tuple[Concern, ...]:
    """`--verify`: an info concern per volume it leaves alone because a server booted from it
    (or its guest was converted): it holds the guest's own writes since, by design."""
    settled = sorted(
        Address.parse(c.address).index or 0
        for c in changes
        if c.kind == "volume"
        and c.action is Action.NOOP
        and (c.reason == BOOTED or (c.before or {}).get("converted"))
    )
    if not settled:
        return ()
    disks = ", ".join(f"disk[{k}]" for k in settled)
    return (
        Concern(
            ConcernLevel.INFO,
            "verify-skipped",
            f"--verify skips {disks}: cut over (converted, or a server booted from it): the "
            "volume holds the guest's own writes since, it is no longer compared with the source",
        ),
    )


def full_in_window(vm: DesiredVM, changes: list[Change]) -> tuple[Concern, ...]:
    """A warning per replicated disk a cutover's final sync copies in full (tainted, CBT off or
    reset, grown, its volume gone, an interrupted full copy's rest) rather than as a delta: it
    is read while the source is off, and the plan says how much and why (counted in the
    downtime estimate, zeros written too). A tainted disk's re-copy in the window was announced
    as a delta-sized step only (break-it 12d item 7b: "~46.9 MiB", "downtime ~1 min", a 2 TB
    disk would be hours unannounced)."""
    if vm.mode not in CUTOVER_MODES:
        return ()
    out = []
    for change in changes:
        if change.kind != "volume" or change.before is None or not full_copy(change):
            continue  # a disk never synced before: a cold migration's copy, as planned
        key = Address.parse(change.address).index
        size = "its size unknown" if change.bytes is None else f"~{human(change.bytes)} to read"
        if change.zeros:
            size += f" and {human(change.zeros)} of holes to write as zeros"
        out.append(
            Concern(
                ConcernLevel.WARNING,
                "full-copy-in-downtime",
                f"disk {key}'s final sync is a full copy while the source is off ({size}, "
                f"counted in the downtime estimate): {change.reason}",
            )
        )
    return tuple(out)


def unmeasured_in_window(vm: DesiredVM, changes: list[Change]) -> tuple[Concern, ...]:
    """An info line when a cutover's final sync holds deltas whose size the plan does not know
    (no delta of the disk measured yet, or an interrupted delta resumed: bytes None): the
    downtime estimate leaves them out, and says so instead of a silent 0 (break-it 12i minor,
    15c F-D: a resumed delta shown "~0 B" read 32-34 MiB)."""
    if vm.mode not in CUTOVER_MODES:
        return ()
    keys = [
        str(Address.parse(c.address).index)
        for c in changes
        if c.kind == "volume" and c.action is Action.UPDATE and c.bytes is None
        and not full_copy(c)
    ]  # fmt: skip
    if not keys:
        return ()
    return (
        Concern(
            ConcernLevel.INFO,
            "final-delta-unmeasured",
            f"the final delta of disk(s) {', '.join(keys)} has no measured size (no delta of "
            "it synced yet, or an interrupted one resumed): the downtime estimate leaves it "
            "out; a replicate sync before the window measures it",
        ),
    )


def full_copy(change: Change) -> bool:
    """A volume change that copies (the rest of) a whole disk, not what changed."""
    if change.action in (Action.CREATE, Action.REPLACE):
        return True
    if change.action is not Action.UPDATE:
        return False
    return (change.after or {}).get("copy") == "full" or "full copy" in change.reason


def reverts_first(records: Mapping[str, ResourceRecord], name: str, record: ResourceRecord) -> bool:
    """Does VM `name`'s conversion record hold a protection snapshot of the volume `record`
    names that holds its last sync (model.state.holds_last_sync)? Then its next write first
    reverts the volume to it (the executor's Protection.reverts, the same rule)."""
    conversion = records.get(str(Address("vm", name, "conversion")))
    volume_id = str(record.attributes.get("volume_id") or "")
    if conversion is None or not volume_id:
        return False
    if volume_id not in dict(conversion.attributes.get("protection") or {}):
        return False
    return holds_last_sync(conversion.attributes, volume_id, record.attributes.get("change_id"))
