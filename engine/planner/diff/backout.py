"""A VM set back from cutover to replicate (pure): what of its cutover goes.

- No server record: its ports and its conversion record (with the protection snapshots) go;
  a source ferry powered off for the cutover is powered back on.
- A server record an interrupted apply left in progress (killed during the boot: the server
  was never confirmed, break-it 12f F2): the source is production again, so that server goes
  too, its volumes go back to their protection snapshots (the last sync: the unconfirmed guest
  may have written them) and replication goes on from there; a volume without a protection
  snapshot is copied in full. Before, the plan only warned "nothing of the cutover is undone",
  the source stayed off and the next plan said "No changes".
- A confirmed server (record ready): a cutover is not undone by replicate mode; a warning says
  so (see `replicate_after_cutover`).

output: image keeps its cutover objects in every case (its files are converted in place, with
no protection snapshot to go back to): the warning applies there to a server in progress too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import ObservedServer
from engine.model.plan import Action, Change
from engine.model.state import (
    ResourceRecord,
    Status,
    holds_last_sync,
    reverted_since,
    written_since_protection,
)
from engine.planner.diff.common import CUTOVER_MODES, UNCONFIRMED, backs_out
from engine.planner.diff.cutover import moment, server_of, source_left_off
from engine.planner.diff.volumes import full_bytes, full_reason


def back_to_replicate(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], observed: ObservedServer | None = None
) -> list[Change]:
    """A VM moved back from cutover to replicate with no confirmed server: its unconfirmed
    server (if any, `observed`: the cloud's server for the VM), ports and conversion record
    (with the protection snapshots) are deleted; [] in cutover mode or after a confirmed
    cutover."""
    server = records.get(str(Address("vm", vm.name, "server")))
    if vm.mode in CUTOVER_MODES or (server is not None and not backs_out(vm, records)):
        return []
    out = [] if server is None else [_server_delete(server, observed)]
    for address, record in sorted(records.items()):
        if record.kind == "port":
            why = "back to replicate: the cutover's port goes (made again at the next cutover)"
        elif record.kind == "conversion":
            why = "back to replicate: the protection snapshots and the conversion record go"
            if _reverts(vm, records, record):  # also after a back-out killed between its
                why += " (the volumes go back to them first: the last sync)"  # steps
            since = record.attributes.get("powered_off_at")
            if since:
                ran = server is not None or bool(record.attributes.get("server_ran"))
                why += f"; {_powered_off(float(since), ran)}: it is powered back on"
        else:
            continue
        out.append(Change(address, record.kind, Action.DELETE, why, dict(record.attributes), None))
    return out


def _reverts(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], conversion: ResourceRecord
) -> bool:
    """Does the conversion's delete revert a volume (the executor's release_protection): one
    whose protection snapshot holds its last sync (the changeId recorded with the snapshot is
    still its record's), written since by the conversion or an unconfirmed server, by the
    records (written_since_protection: also once a back-out killed between its steps deleted
    the server, its conversion record says server_ran)."""
    if not written_since_protection(records, vm.name):
        return False
    prefix = f"vm.{vm.name}.disk["
    return any(
        holds_last_sync(
            conversion.attributes, str(r.attributes.get("volume_id")), r.attributes["change_id"]
        )
        for address, r in records.items()
        if r.kind == "volume" and address.startswith(prefix) and r.attributes.get("change_id")
    )


def _server_delete(record: ResourceRecord, observed: ObservedServer | None) -> Change:
    before = dict(record.attributes)
    if not before.get("server_id") and observed is not None:  # killed before it was recorded
        before["server_id"] = observed.id
    which = f"server {before['server_id']}" if before.get("server_id") else "its server"
    if observed is None:
        said = f"the record of {which} goes: {UNCONFIRMED}, it is gone from the cloud"
    else:
        said = f"{which}, {UNCONFIRMED}, is deleted: the source is production"
    reason = f"back to replicate: {said}"
    return Change(record.address, "server", Action.DELETE, reason, before, None)


def _powered_off(since: float, server: bool) -> str:
    if not server:
        return source_left_off(since)
    return f"source powered off by ferry at {moment(since)}, its server never confirmed"


def unprotected_copied_whole(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    changes: list[Change],
    snapshot_ids: frozenset[str] | None = None,
    newer: Mapping[str, tuple[str, ...]] | None = None,
) -> list[Change]:
    """output: volume: a volume written since its protection snapshot (the conversion ran on
    it, or a server an interrupted apply booted from it may have: written_since_protection) goes
    back to
    that snapshot before it is synced again (a back-out, a cutover run again, back to
    replicate). One that no protection snapshot holds at its last sync (none recorded, or the
    recorded one gone from Cinder: `snapshot_ids`, every snapshot of the project, None when not
    read) cannot be brought back by a delta: it is copied in full (break-it 12g F1, F2: the
    revert failed on the gone snapshot after the power-off at every apply, the guest's bytes
    stayed, production off). So is one whose protection snapshot is not its volume's newest
    (`newer`: snapshot id -> the ids of its volume's snapshots taken after it; None when not
    read): Cinder reverts only to the newest (break-it 12h F2: a backup tool's snapshot made
    the revert fail at every apply). Other changes as given."""
    who = written_since_protection(records, vm.name)
    if vm.image is not None or not who:
        return changes
    conversion = records.get(str(Address("vm", vm.name, "conversion")))
    attrs = conversion.attributes if conversion else {}
    protection = dict(attrs.get("protection") or {})
    disks = {d.key: d for d in vm.source.disks}
    out = []
    for change in changes:
        before: dict[str, Any] = dict(change.before or {})
        volume_id = str(before.get("volume_id"))
        snapshot = protection.get(volume_id)
        kept = snapshot and holds_last_sync(attrs, volume_id, before.get("change_id"))
        gone = snapshot_ids is not None and str(snapshot) not in snapshot_ids
        since = (newer or {}).get(str(snapshot), ()) if kept and not gone else ()
        movable = change.action in (Action.NOOP, Action.UPDATE)
        usable = (kept and not gone and not since) or reverted_since(attrs, volume_id)
        if change.kind != "volume" or not movable or before.get("converted") or usable:
            out.append(change)
            continue
        why = _unrevertable(str(snapshot), bool(kept), since)
        disk = disks[int(Address.parse(change.address).index or 0)]
        out.append(
            replace(
                change,
                action=Action.UPDATE,
                reason=full_reason(
                    vm,
                    f"volume {volume_id} may hold what {who} wrote and {why}: copied in full",
                ),
                after={**dict(change.after or before), "copy": "full"},
                bytes=full_bytes(disk, vm),
                estimate=True,
            )
        )
    return out


def replicate_after_cutover(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], observed: ObservedServer | None
) -> tuple[Concern, ...]:
    """A warning on a VM set back to replicate after a server was booted from its volumes
    (`observed`: the cloud's server for it, None when gone).

    Confirmed (or output: image): replicate mode does not undo a cutover. The volumes were
    converted and a guest ran from them as production, so a delta on top would make a replica
    of neither machine; ferry leaves them, the server record, ports and conversion record as
    they are, and the plan says so instead of a silent "No changes" (chaos seed 196: a
    cut-over VM whose server was deleted by hand, then set back to replicate).

    Never confirmed (`backs_out`): the plan deletes that server and says so loudly."""
    server = records.get(str(Address("vm", vm.name, "server")))
    if vm.mode in CUTOVER_MODES or server is None:
        return ()
    if backs_out(vm, records):
        known = server.attributes.get("server_id") or (observed.id if observed else None)
        which = f"server {known}" if known else "its server (id never recorded)"
        now = "runs: it is deleted" if observed else "is gone from the cloud: its record goes"
        return (
            Concern(
                ConcernLevel.WARNING,
                "backout-unconfirmed-server",
                f"mode: replicate after an interrupted cutover: {which}, {UNCONFIRMED}, {now}; "
                "the volumes go back to their protection snapshots (the last sync) and "
                "replication goes on from there; the source is production (powered back on if "
                "ferry powered it off)",
            ),
        )
    if server.status is Status.IN_PROGRESS:  # output: image: no back-out (see the module)
        return (_unconfirmed_image(vm, records, server, observed),)
    where = "is gone" if observed is None else "still runs"
    named = server_of(server, observed)
    return (
        Concern(
            ConcernLevel.WARNING,
            "replicate-after-cutover",
            f"mode: replicate after its cutover to {named} (which {where}): the volumes a "
            "server booted from are not synced again, nothing of the cutover is undone; to "
            "migrate the VM again, plan --destroy (then replicate it anew), or set mode: "
            "cutover back",
        ),
    )


def _unconfirmed_image(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    server: ResourceRecord,
    observed: ObservedServer | None,
) -> Concern:
    """output: image set back to replicate after a cutover killed in its boot: nothing of it is
    undone here, and the warning says the server was never confirmed and whether ferry left the
    source off (break-it 12g F3: "after its cutover", the source off unsaid, "No changes")."""
    conversion = records.get(str(Address("vm", vm.name, "conversion")))
    since = (conversion.attributes if conversion else {}).get("powered_off_at")
    source = (
        f"ferry powered the source off at {moment(since)} and it stays off"
        if since
        else "the source is left as it is"
    )
    runs = "runs" if observed is not None else "is gone from the cloud"
    return Concern(
        ConcernLevel.WARNING,
        "replicate-after-unconfirmed-cutover",
        f"mode: replicate after an interrupted cutover: {server_of(server, observed)}, "
        f"{UNCONFIRMED}, {runs}; output: image does not undo it by replicating ({source}): "
        "set mode: cutover back to finish it, or plan --destroy to delete that server and "
        "power the source back on, then replicate the VM anew",
    )


def _unrevertable(snapshot: str, kept: bool, since: tuple[str, ...]) -> str:
    """Why a volume written since its protection snapshot cannot be reverted to it."""
    if not kept:
        return "no protection snapshot holds its last sync"
    if since:
        return (
            f"its protection snapshot {snapshot} is not its newest (snapshot(s) "
            f"{', '.join(since)} taken since, outside ferry; Cinder reverts only to the newest)"
        )
    return f"its protection snapshot {snapshot} is gone from Cinder (deleted outside ferry)"
