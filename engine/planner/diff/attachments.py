"""Volume attachments and statuses ferry does not expect (pure).

A sync attaches a volume to a conversion host and detaches it after; a conversion does the same;
a cut-over server keeps its volumes. An attachment a cloud outage left half made (Cinder's
`reserved`: created by nova's reserve, never completed; or `attaching`, `detaching`, `error_*`)
does not change by itself: the volume cannot be attached again, and a cutover that powered the
source off would wait on it. One for a server of ferry's (a conversion host, listed in the spec
or recorded: a volume record's conversion_host, a host record's server; the VM's own server) is
ferry's leftover: the volume's step deletes it first (before the source's power-off in a
cutover). One for any other server, or a volume `reserved` with no attachment ferry left, is not
ferry's to touch: an error concern blocks the VM until someone acts.

A volume `attaching` or `detaching` with nothing but ferry's attached attachments (or none) is
Cinder at work, e.g. the host of an interrupted apply letting it go while the user re-runs
(break-it 14c F1): it settles by itself in seconds. A warning, and the apply waits for it
(bounded: volumes.settle) before the volume's step, in a cutover before the source's power-off.
Never a state reset for it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel
from engine.model.observed import ObservedAttachment, ObservedVolume
from engine.model.plan import Action, Change

ATTACHED = "attached"
# volume statuses that need an attachment to move on: stuck without one (a volume in an error
# status is replaced by its sync, as before)
STUCK_STATUSES = ("reserved", "attaching", "detaching")
# of those, Cinder's own transitions under way: they settle by themselves (seconds)
SETTLING_STATUSES = ("attaching", "detaching")
STALE_KEY = "stale_attachments"  # a volume change's after: the attachment ids its step deletes
REPAIR_ONLY = "repair_only"  # a volume change's after: nothing to copy, only the repair
SETTLE_SECONDS = 180  # the apply's wait for a volume Cinder is attaching or detaching


@dataclass(frozen=True)
class FerryServers:
    """The servers whose attachments are ferry's: conversion hosts by name (the spec's) or id
    (recorded), and the VM's own server by id."""

    names: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()

    def owns(self, attachment: ObservedAttachment) -> bool:
        return bool(
            (attachment.server_id and attachment.server_id in self.ids)
            or (attachment.server_name and attachment.server_name in self.names)
        )


def repaired(
    change: Change, observed: ObservedVolume | None, ferry: FerryServers, *, cutover: bool = False
) -> tuple[Change, tuple[Concern, ...]]:
    """A volume's change with its stale attachments of ferry's to delete first (a no-op becomes
    an update that only repairs), and the error concerns of what is not ferry's: an attachment
    to another server, a volume stuck in a status no attachment of ferry's explains. A volume
    whose attachments were not read, or a server booted from (production's), is left as it is.
    `cutover`: the VM's source is powered off in this plan (the repair comes before that)."""
    if observed is None or observed.attachments is None or change.action is Action.DELETE:
        return change, ()
    key = Address.parse(change.address).index
    stale = [a for a in observed.attachments if a.status != ATTACHED and ferry.owns(a)]
    foreign = [a for a in observed.attachments if not ferry.owns(a)]
    concerns = tuple(_foreign(key, observed, a) for a in foreign)
    if not stale and not foreign and observed.status in SETTLING_STATUSES:
        concerns += _settling(key, observed, change, cutover=cutover)
    elif not stale and not foreign and observed.status in STUCK_STATUSES:
        concerns += (
            Concern(
                ConcernLevel.ERROR,
                "volume-stuck",
                f"disk {key}'s volume {observed.id} is '{observed.status}' with no attachment "
                "ferry left: it does not change by itself, and a cutover would wait on it with "
                "the source off; once nothing uses it, reset it (openstack volume set --state "
                f"available {observed.id}), then plan again",
            ),
        )
    if not stale:
        return change, concerns
    ids = [a.id for a in stale]
    when = " before the source is powered off" if cutover else ""
    repair = "; ".join(
        f"attachment {a.id} left '{a.status}' by an interrupted apply: delete it{when}"
        for a in stale
    )
    if change.action in (Action.NOOP, Action.VERIFY):
        before = dict(change.before or {})
        after = {**before, STALE_KEY: ids, REPAIR_ONLY: True}
        return Change(change.address, "volume", Action.UPDATE, repair, before, after), concerns
    after = {**(change.after or {}), STALE_KEY: ids}
    reason = f"{repair}; then {change.reason}"
    return Change(
        change.address,
        change.kind,
        change.action,
        reason,
        change.before,
        after,
        bytes=change.bytes,
        estimate=change.estimate,
    ), concerns


def _settling(
    key: int | None, volume: ObservedVolume, change: Change, *, cutover: bool
) -> tuple[Concern, ...]:
    """A volume Cinder is attaching or detaching now (for ferry's servers only): a warning that
    the apply waits for it (bounded) before the step that attaches it, and in a cutover before
    the source is powered off (ready_volumes); a no-op outside a cutover says nothing."""
    if change.action is Action.NOOP and not cutover:
        return ()
    doing = "attaching" if volume.status == "attaching" else "detaching"
    when = "before the source is powered off" if cutover else "before its step"
    return (
        Concern(
            ConcernLevel.WARNING,
            "volume-settling",
            f"disk {key}'s volume {volume.id} is '{volume.status}': Cinder is {doing} it now "
            "(e.g. the conversion host of an interrupted apply letting it go): the apply waits "
            f"for it to settle (up to {SETTLE_SECONDS} s) {when}",
        ),
    )


def _foreign(key: int | None, volume: ObservedVolume, attachment: ObservedAttachment) -> Concern:
    server = attachment.server_name or attachment.server_id
    to = f"server {server}" if server else "no server"
    act = (
        f"detach it (openstack server remove volume {server} {volume.id})"
        if server and attachment.status == ATTACHED
        else f"delete the attachment if nothing uses it (cinder attachment-delete {attachment.id})"
    )
    return Concern(
        ConcernLevel.ERROR,
        "volume-attached-elsewhere",
        f"disk {key}'s volume {volume.id} has attachment {attachment.id} ('{attachment.status}') "
        f"to {to}, which is not ferry's: the volume cannot be written while it holds it; "
        f"{act}, then plan again",
    )


def repair_only(change: Change) -> bool:
    """A volume change that only deletes stale attachments (nothing copied, no snapshot)."""
    return bool((change.after or {}).get(REPAIR_ONLY))


def ferry_servers(
    host_names: Collection[str],
    host_ids: Collection[str],
    server_id: str | None,
    recorded_hosts: Collection[str] = (),
) -> FerryServers:
    """ferry's servers for one VM: the conversion hosts (the spec's, and those its records name:
    a host the spec no longer lists where a copy was in progress, break-it 14c F2) and the VM's
    own server."""
    ids = {i for i in host_ids if i} | ({server_id} if server_id else set())
    names = {n for n in host_names if n} | {n for n in recorded_hosts if n}
    return FerryServers(frozenset(names), frozenset(ids))
