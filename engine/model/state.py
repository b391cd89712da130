"""Recorded state, as plain data: what ferry created or copied, per address."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.model.observed import epoch

# A VM's records carry the instance UUID of their VM (state follows the VM, not its name)
INSTANCE_UUID = "instance_uuid"
# What a verified copy's sha256 covers (a volume record's last_sync.verified)
VERIFIED_WHOLE, VERIFIED_AREAS = "whole disk", "changed areas"
# A volume record's conversion host (its name): where its copy runs, so where a resume finds it
RECORDED_HOST = "conversion_host"
# A conversion record's vCenter clock (ISO 8601) when ferry last took charge of the source for
# its final sync (just before the power-off, or finding it off): a power-on vCenter logs after
# it means the guest ran (the executor's boot checks and the planner's refresh read it)
VCENTER_OFF_AT = "vcenter_off_at"

# A volume record's Cinder `updated_at` of its volume (ISO 8601, Cinder's text) right after
# ferry last wrote it (a sync, a compare that found it equal, a revert, an adoption): a later
# value means something else attached or changed it since (a test boot of the replica)
UPDATED_AT = "volume_updated_at"
# The same value stamped on the volume itself (its metadata) by whoever ran ferry's host-bound
# step on it (engine.executor.host: in-process or an agent), right after that step's own detach,
# and cleared ("") right before its attach: seen even when the coordinator recorded nothing (it
# lost the broker, or was killed, while an agent still held the volume: break-it 12n H1).
# Setting metadata does not move Cinder's updated_at.
STAMP_KEY = "ferry_updated_at"
# A volume record's measured zero writes, {"bytes": B, "seconds": S}: the last sync of it that
# wrote at least ZERO_RATE_MIN bytes of zeros (S: that copy's seconds, data included: a lower
# bound of the rate), kept across later syncs that wrote fewer (a delta writes none): the plan's
# downtime estimate counts a final full copy's zeros at it (break-it 12o M1)
ZERO_RATE = "zero_rate"
ZERO_RATE_MIN = 64 * 1024**2


def zero_rate(bytes_zeroed: int, seconds: float) -> dict[str, float] | None:
    """A sync's ZERO_RATE measurement, None when it wrote too few zeros to measure."""
    if bytes_zeroed < ZERO_RATE_MIN or seconds <= 0:
        return None
    return {"bytes": bytes_zeroed, "seconds": round(seconds, 3)}


class Status(StrEnum):
    READY = "ready"
    TAINTED = "tainted"  # a partial failure: replaced on the next apply
    IN_PROGRESS = "in_progress"  # started and not finished (a killed apply resumes it)


@dataclass(frozen=True)
class ResourceRecord:
    address: str
    kind: str  # volume, port, server, flavor, snapshot, ...
    status: Status
    attributes: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


@dataclass(frozen=True)
class LockInfo:
    holder: str
    pid: int
    host: str
    acquired_at: float
    operation: str


@dataclass(frozen=True)
class State:
    format_version: int
    lineage: str
    serial: int
    resources: Mapping[str, ResourceRecord]
    lock: LockInfo | None = None


UNCONFIRMED_SERVER = "the unconfirmed server"
CONVERSION_WROTE = "the conversion"


def resumable_delta(attrs: Mapping[str, Any], change_id: str | None) -> bool:
    """Does an interrupted delta sync (a volume or file record's `attrs`) continue from its
    checkpoint when the disk's changeId is now `change_id`: it recorded `copy: delta`, a
    checkpoint and the changeId of the snapshot it read, is not tainted, and CBT can say what
    changed since that snapshot (the same CBT epoch). The one rule of the executor's
    VolumeSteps._resume_delta and the planner's wording."""
    began = str(attrs.get("copy_change_id") or "")
    if attrs.get("copy") != "delta" or attrs.get("tainted") or not attrs.get("copied_bytes"):
        return False
    return bool(began and change_id) and epoch(began) == epoch(change_id)


def holds_last_sync(conversion: Mapping[str, Any], volume_id: str, change_id: object) -> bool:
    """Does the protection snapshot of `volume_id` (a conversion record's attributes) hold the
    volume's last sync: the changeId recorded when it was taken is still the volume record's
    `change_id` (no sync wrote the volume since; a revert to it erases nothing a sync wrote).
    The one rule of the executor's release_protection and the planner's back-out wording and
    full copies (engine.planner.diff.backout)."""
    held = dict(conversion.get("protected_change_ids") or {}).get(volume_id)
    return held is not None and held == change_id


def reverted_since(conversion: Mapping[str, Any], volume_id: str) -> bool:
    """Was `volume_id` brought back to its last sync after what wrote it since its protection
    snapshot (reverted to it, or released with nothing to undo) by an apply that then failed or
    was killed: the conversion record's `reverted` (emptied by the next protection). Such a
    volume needs no full copy for what written_since_protection names (break-it 12h M2: a
    volume reverted and delta-synced was copied in full at every later re-run)."""
    return volume_id in (conversion.get("reverted") or ())


def written_since_protection(records: Mapping[str, ResourceRecord], name: str) -> str:
    """What wrote VM `name`'s volumes since their protection snapshots, by its records ("" when
    nothing did): UNCONFIRMED_SERVER, a server an interrupted apply booted from them (its record
    in progress, or the conversion record's `server_ran` once a back-out deleted it), else
    CONVERSION_WROTE (the conversion record's `tool`). The one rule of both the executor's
    release_protection (it reverts such a volume) and the planner (it copies in full one it
    cannot revert)."""
    server = records.get(f"vm.{name}.server")
    conversion = records.get(f"vm.{name}.conversion")
    attrs = conversion.attributes if conversion is not None else {}
    if attrs.get("server_ran") or (server is not None and server.status is Status.IN_PROGRESS):
        return UNCONFIRMED_SERVER
    return CONVERSION_WROTE if attrs.get("tool") else ""


def own_stamp(metadata: Mapping[str, Any], lineage: str) -> str | None:
    """A volume's STAMP_KEY from its `metadata` when the volume is this state's (its
    `ferry_state` is `lineage`), else None: an adopted volume's stamp is of another state's
    steps, and one cleared ("") means a host step was cut off between its attach and detach."""
    if not lineage or str(metadata.get("ferry_state") or "") != lineage:
        return None
    return str(metadata.get(STAMP_KEY) or "") or None


def last_known(attrs: Mapping[str, Any], stamp: str | None) -> str | None:
    """Cinder's updated_at of the recorded volume right after ferry's last write that ferry
    knows: the record's (UPDATED_AT), else the volume's own stamp (`stamp`: own_stamp), else
    None (unknown: nothing is said)."""
    return str(attrs.get(UPDATED_AT) or "") or stamp or None


def changed_outside(
    attrs: Mapping[str, Any], volume_id: str, now: str | None, stamp: str | None = None
) -> str:
    """Why a volume this record holds may have been written by something other than ferry
    since ferry last wrote it ("" when nothing says so): Cinder's `updated_at` of `volume_id`
    (`now`) is not the one ferry recorded after its last write (UPDATED_AT). Cinder moves it at
    every attach and detach, so a server booted from the replica and deleted since (a "test
    boot", break-it 12l F2: with verify off the next delta went on top of the guest's writes,
    then "No changes") shows here whatever it wrote. Nothing is said for a record of another
    volume, one without a recorded value (an older ferry's, an interrupted copy's: ferry's own
    attach moved it), or a converted volume (production's, or a conversion's: never a replica
    synced again). `stamp`: the volume's own stamp of this state's (own_stamp), used when the
    record holds no value (last_known)."""
    was = last_known(attrs, stamp)
    if not was or not now or was == now or attrs.get("converted"):
        return ""
    if str(attrs.get("volume_id") or "") != volume_id:
        return ""
    return (
        f"volume {volume_id} changed outside ferry since its last sync (Cinder updated_at "
        f"{was} → {now}: attached, written or changed by something else, e.g. a server booted "
        "from it)"
    )
