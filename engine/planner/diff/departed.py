"""Recorded VMs, by identity (pure): the state's records grouped per source VM, claimed by the
desired VM with the same instance UUID (a rename `moves` them to its address), and what happens
to the others — deleted (never the source) or forgotten once cut over when the spec dropped the
VM, left untouched when the spec still selects it but the inventory does not show it.

A record knows its VM's instance UUID (attribute `instance_uuid`, written by apply). State from
before it was written is recovered from the destination: the `ferry_vm` metadata of the volume,
port or server a record names; the other records of the same address name follow them. Records
whose VM cannot be told (nothing recovers it) are matched by name, as they were recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from engine.addresses import Address
from engine.diagnostics import Diagnostic, Severity
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import Destination, SourceSnapshot
from engine.model.plan import Action, Change
from engine.model.state import INSTANCE_UUID, ResourceRecord, State, Status
from engine.planner.diff.common import DiffInput
from engine.planner.diff.cutover import (
    left_off_since,
    moment,
    shutting_down_since,
    source_going_off,
    source_left_off,
)
from engine.planner.diff.leftovers import leftover_snapshots
from engine.planner.selection import SELECTS_NOTHING

# a record's attribute naming a destination object → that object's `ferry_vm`
_IDS = ("volume_id", "port_id", "server_id")


@dataclass(frozen=True)
class RecordedVM:
    """The records of one source VM under one address name."""

    name: str  # the address name they are recorded under
    uuid: str | None  # the VM's instance UUID (lower case); None: not recorded, not recoverable
    records: dict[str, ResourceRecord]

    @property
    def address(self) -> str:
        return str(Address("vm", self.name))


@dataclass
class Claims:
    """Recorded VMs matched to desired ones."""

    records: dict[str, dict[str, ResourceRecord]] = field(default_factory=dict)  # at new addresses
    moves: dict[str, Change] = field(default_factory=dict)  # desired VM name → its move
    concerns: dict[str, list[Concern]] = field(default_factory=dict)  # desired VM name → errors
    others: list[RecordedVM] = field(default_factory=list)  # no desired VM is theirs
    held: frozenset[str] = frozenset()  # names whose records stay whatever else happens


def left_off(records: Mapping[str, ResourceRecord]) -> str:
    """'; source powered off by ferry at …, no server yet' for records of a VM whose cutover
    ferry left with its source off (see `left_off_since`), else "": every message about such a
    VM says so, whatever else it is about (break-it 12d item 7a: a renamed VM's errors did not)."""
    since = left_off_since(records)
    return f"; {source_left_off(since)}" if since is not None else ""


def recorded_vms(state: State, destination: Destination) -> list[RecordedVM]:
    """Every VM's records, grouped by address name and instance UUID (one pass)."""
    owners = _destination_owners(destination)
    by_name: dict[str, dict[str, ResourceRecord]] = {}
    for address, record in state.resources.items():
        parsed = Address.parse(address)
        if parsed.kind == "vm":
            by_name.setdefault(parsed.name, {})[address] = record
    out: list[RecordedVM] = []
    for name, records in sorted(by_name.items()):
        own = {a: _uuid_of(r, owners) for a, r in records.items()}
        known = {u for u in own.values() if u}
        single = next(iter(known)) if len(known) == 1 else None
        groups: dict[str | None, dict[str, ResourceRecord]] = {}
        for address, record in records.items():
            groups.setdefault(own[address] or single, {})[address] = record
        out += [RecordedVM(name, uuid, group) for uuid, group in groups.items()]
    return out


def _destination_owners(destination: Destination) -> dict[str, str]:
    """Object id → the instance UUID in its `ferry_vm` metadata or tag."""
    found = {v.id: v.vm_uuid for v in destination.volumes if v.origin == "ferry" and v.vm_uuid}
    found |= {p.id: p.vm_uuid for p in destination.ports if p.vm_uuid}
    found |= {s.id: s.vm_uuid for s in destination.servers if s.vm_uuid}
    return {k: v.lower() for k, v in found.items()}


def _uuid_of(record: ResourceRecord, owners: Mapping[str, str]) -> str | None:
    recorded = record.attributes.get(INSTANCE_UUID)
    if recorded:
        return str(recorded).lower()
    ids = (str(record.attributes.get(k) or "") for k in _IDS)
    return next((owners[i] for i in ids if i in owners), None)


def claim(desired: Sequence[DesiredVM], recorded: list[RecordedVM]) -> Claims:
    """Each desired VM takes the records of its instance UUID (those recorded without one: of
    its name). Records under another name move to its address; two groups for one VM, or an
    address held by another VM's records, block the VM (error concern) and touch nothing."""
    by_uuid = {(v.source.instance_uuid or "").lower(): v for v in desired if v.source.instance_uuid}
    by_name = {v.name: v for v in desired}
    mine: dict[str, list[RecordedVM]] = {}
    out = Claims()
    for group in recorded:
        owner = by_uuid.get(group.uuid) if group.uuid else by_name.get(group.name)
        if owner is None:
            out.others.append(group)
        else:
            mine.setdefault(owner.name, []).append(group)
    held = {g.name for g in out.others if g.name in by_name}
    for name in held:
        taken = [g for g in out.others if g.name == name]
        off = "".join(left_off(g.records) for g in taken)
        _block(out, name, _taken(by_name[name], taken) + off)
    for name, groups in mine.items():
        vm = by_name[name]
        if len(groups) > 1:
            where = " and ".join(g.address for g in groups)
            off = "".join(left_off(g.records) for g in groups)
            _block(out, name, f"the state holds records of this VM under {where}: both are left "
                   f"untouched (one of them is stale){off}")  # fmt: skip
            continue
        (group,) = groups
        uuid = (vm.source.instance_uuid or "").lower() or None
        out.records[name] = group.records
        if group.name != name:
            out.records[name] = _rekeyed(group, name, uuid)
            out.moves[name] = moved(group, name, uuid)
    out.held = frozenset(held)
    return out


def _taken(vm: DesiredVM, others: list[RecordedVM]) -> str:
    uuids = ", ".join(sorted({g.uuid or "unknown" for g in others}))
    return (
        f"{Address('vm', vm.name)} is recorded for another VM (instance UUID {uuids}, not "
        f"this one's {vm.source.instance_uuid}): its records are left untouched; select that "
        "VM too (its records then move to its new name)"
    )


def _block(claims: Claims, name: str, message: str) -> None:
    claims.concerns.setdefault(name, []).append(
        Concern(ConcernLevel.ERROR, "recorded-elsewhere", message)
    )


def _rekeyed(group: RecordedVM, name: str, uuid: str | None) -> dict[str, ResourceRecord]:
    """The group's records at the addresses of VM `name`, carrying its instance UUID."""
    out = {}
    for address, record in group.records.items():
        new = str(replace(Address.parse(address), name=name))
        attributes = {**record.attributes, INSTANCE_UUID: uuid} if uuid else record.attributes
        out[new] = replace(record, address=new, attributes=attributes)
    return out


def moved(group: RecordedVM, name: str, uuid: str | None) -> Change:
    """`vm.OLD has moved to vm.NEW`: the records re-keyed in one state write, nothing else."""
    new = str(Address("vm", name))
    old_records = sorted(group.records)
    new_records = sorted(str(replace(Address.parse(a), name=name)) for a in old_records)
    return Change(
        new,
        "moved",
        Action.MOVE,
        f"{group.address} has moved to {new}: the same VM (instance UUID {uuid}) under a new "
        f"name; its {len(old_records)} record(s) follow it (a state change only: nothing is "
        "copied, created or deleted by it)",
        {"address": group.address, INSTANCE_UUID: uuid, "records": old_records},
        {"address": new, INSTANCE_UUID: uuid, "records": new_records},
    )


def destroy_changes(
    name: str,
    records: dict[str, ResourceRecord],
    reason: str,
    forget_cut_over: bool,
    *,
    snapshots: Sequence[SourceSnapshot] | None = None,
    lineage: str = "",
    handed: Mapping[str, str] | None = None,
    bound: Mapping[str, str] | None = None,
) -> list[Change]:
    """Changes for a VM whose objects go away; deletes come server first (graph orders them).
    A snapshot ferry left on the source (recorded, or among `snapshots`, the VM's as the
    inventory shows them, those this state of `lineage` left; None: not read) is removed, even
    when the VM is only forgotten.
    A recorded volume or Glance image another ferry state manages now (`handed`: volume or image
    id → that state's lineage, from its `ferry_state` metadata or property: taken over with
    --adopt-lineage or by hand; `handed_objects`) is forgotten, never deleted: deleting it would
    destroy the other state's replica or image; so are, when the VM has a server, the server,
    its ports, its conversion record (the source's power and the protection snapshots are that
    state's: the executor's forget touches neither) and every volume and image of the VM (that
    state adopted the server with its volumes; the server runs on them, a boot: image one on its
    image). A recorded port bound to
    a server this state did not make (`bound`: port id → the server it is bound to; another
    state's cutover found the port by its MAC and reused it: break-it 16b F1, a rehearsal's
    --destroy left production without its network) is forgotten too. A recorded server that
    runs on another state's volumes or images (`handed` names its id: server_lineages; a
    rehearsal's records named the real state's server, break-it 16c F2) is forgotten with its
    ports; the state's own volumes and images are deleted."""
    server = records.get(str(Address("vm", name, "server")))
    cut_over = server is not None and server.status is Status.READY
    action = Action.FORGET if (cut_over and forget_cut_over) else Action.DELETE
    why = (
        "cut over: the server stays in service, ferry forgets it (--destroy deletes it)"
        if action is Action.FORGET
        else reason
    )
    left = leftover_snapshots(
        name, snapshots, records.get(str(Address("vm", name, "snapshot"))), lineage
    )
    taken = next(
        (h[2] for r in records.values() if r.kind != "server" and (h := _handed(r, handed))),
        None,
    )
    served = taken if server is not None else None  # its server may run on all of them
    runs = _handed(server, handed) if server is not None and not served else None
    out = []
    for address, record in sorted(records.items()):
        if record.kind == "source_snapshot":
            continue
        found = _handed(record, handed) if record.kind != "server" else None
        serving = _serving(record, bound, server)
        if runs is not None and record.kind in ("server", "port"):
            said = (
                f"server {runs[1]} runs on volumes or images of ferry state {runs[2]}: "
                "forgotten here, never deleted"
            )
            out.append(
                Change(address, record.kind, Action.FORGET, said, dict(record.attributes), None)
            )
        elif serving:
            said = f"{serving}: forgotten here, never deleted"
            out.append(
                Change(address, record.kind, Action.FORGET, said, dict(record.attributes), None)
            )
        elif found is not None or (served and record.kind in (*SERVED_BY, "conversion")):
            said = (
                f"{found[0]} {found[1]} is managed by ferry state {found[2]} now"
                if found
                else f"ferry state {served} manages this VM's server's volumes now (it runs on "
                "them)"
            )
            said += ": forgotten here, never deleted"
            out.append(
                Change(address, record.kind, Action.FORGET, said, dict(record.attributes), None)
            )
        else:
            said = why + _powered_back_on(record, server) if action is Action.DELETE else why
            out.append(Change(address, record.kind, action, said, dict(record.attributes), None))
    return out + ([left] if left else [])


# what a cut-over VM's server runs on or from (forgotten with it: destroy_changes)
SERVED_BY = ("server", "port", "volume", "image_volume", "image")


def _handed(
    record: ResourceRecord, handed: Mapping[str, str] | None
) -> tuple[str, str, str] | None:
    """("image", "volume" or "server", its id, the lineage of the other ferry state that
    manages it) when `record` names a volume, image or server in `handed` (a server: one that
    runs on that state's volumes or images); else None."""
    what = {"image": "image", "server": "server", "port": "port"}.get(record.kind, "volume")
    object_id = str(record.attributes.get(f"{what}_id") or "")
    other = (handed or {}).get(object_id) if object_id else None
    return (what, object_id, other) if other is not None else None


def _serving(
    record: ResourceRecord, bound: Mapping[str, str] | None, server: ResourceRecord | None
) -> str:
    """What a port record's port serves when it is bound to a server other than this state's
    (its `server_id`), said for the forget; "" otherwise."""
    port_id = str(record.attributes.get("port_id") or "") if record.kind == "port" else ""
    device = (bound or {}).get(port_id, "") if port_id else ""
    mine = str(server.attributes.get("server_id") or "") if server is not None else ""
    if not device or device == mine:
        return ""
    return (
        f"port {port_id} serves server {device}, which this state did not make (another "
        "state's cutover reused it, found by its MAC)"
    )


def bound_ports(destination: Destination) -> dict[str, str]:
    """Port id → the server it is bound to, for the ports the refresh read that are bound."""
    return {p.id: p.device for p in destination.ports if p.device}


def _powered_back_on(record: ResourceRecord, server: ResourceRecord | None) -> str:
    """What deleting a conversion record adds to its reason: the source ferry powered off
    goes back on when no confirmed server runs (none, or one never confirmed); "" otherwise."""
    since = record.attributes.get("powered_off_at") if record.kind == "conversion" else None
    if not since or (server is not None and server.status is Status.READY):
        return ""
    if server is None:
        return f"; {source_left_off(float(since))}: it is powered back on"
    return (
        f"; source powered off by ferry at {moment(since)}, its server never confirmed: it is "
        "powered back on"
    )


def destroy_concerns(
    name: str,
    records: Mapping[str, ResourceRecord],
    power: str | None = None,
    guest: str | None = None,
) -> tuple[Concern, ...]:
    """A warning on a VM --destroy tears down while its source is powered off by ferry (the
    conversion record's `powered_off_at`): with no confirmed server (none, or one an apply
    stopped in the boot made and never confirmed: break-it 12e item 5, the destroy deleted it
    and left the source off without a word) the source is production and is powered back on;
    after a confirmed cutover the server is production: the destroy deletes it and the source
    stays off, so afterwards nothing runs until someone powers the source on (said too when
    this state did not power the source off: it adopted the cut-over VM, break-it 16d L5). A
    source still going off from ferry's graceful shutdown (`power`, `guest` as observed: see
    shutting_down_since) is said so: the destroy waits for it, then powers it back on."""
    conversion = records.get(str(Address("vm", name, "conversion")))
    since = conversion.attributes.get("powered_off_at") if conversion is not None else None
    server = records.get(str(Address("vm", name, "server")))
    server_id = (server.attributes.get("server_id") if server else None) or "(id not recorded)"
    if server is not None and server.status is Status.READY:
        if since:
            after = f"its source stays powered off (by ferry since {moment(since)})"
        else:  # a state that adopted the cut-over VM (--adopt-lineage): break-it 16d L5
            after = "its source is left as it is (no record here says ferry powered it off)"
        return (
            Concern(
                ConcernLevel.WARNING,
                "destroy-deletes-production",
                f"the destroy deletes server {server_id}, which runs the cut-over VM; {after}: "
                "afterwards neither runs until the source is powered on",
            ),
        )
    if not since:
        return ()
    going = shutting_down_since(conversion.attributes if conversion else {}, power, guest)
    if server is None and going:
        said = f"{source_going_off(going, guest)}: the destroy waits for it to go off, then "
        said += "powers it back on"
    elif server is None:
        said = f"{source_left_off(float(since))}: the destroy powers the source back on"
    else:
        said = (
            f"source powered off by ferry at {moment(since)}; its server {server_id}, booted by an "
            "interrupted apply, was never confirmed: the destroy deletes it and powers the "
            "source back on"
        )
    return (Concern(ConcernLevel.WARNING, "source-off", said),)


def handed_objects(destination: Destination, lineage: str) -> dict[str, str]:
    """Volume, image or port id → lineage, for ferry's volumes (those it copies into and,
    output: image, those it makes from its images), Glance images and ports (their
    description's) whose `ferry_state` names a ferry state other than this one (`lineage`); a
    state not written yet ("") manages none."""
    if not lineage:
        return {}
    found = [
        *((v.id, v.lineage) for v in destination.volumes),
        *((v.id, v.lineage) for v in destination.volumes_from_images or ()),
        *((i.id, i.lineage) for i in (destination.images or {}).values()),
        *((p.id, p.lineage) for p in destination.ports if p.vm_uuid),  # break-it 16g L4
    ]
    return {i: other for i, other in found if other and other != lineage}


def departed(
    data: DiffInput, claims: Claims
) -> tuple[list[Change], list[Diagnostic], dict[int, str]]:
    """Recorded VMs no desired VM claims: the spec dropped them (their objects go), or the spec
    still selects them but the inventory does not show them (left untouched, with an error; a
    warning when a folder/tag pattern, a moref or an unrecorded UUID only may select them).
    Also: vms entry index → what `left_off` says of the kept VMs it selects (for the entry's
    own errors, see `said_left_off`)."""
    changes: list[Change] = []
    notes: list[Diagnostic] = []
    off: dict[int, str] = {}
    blind = data.lookup is not None and not data.lookup.complete  # an error says why
    handed = handed_objects(data.destination, data.state.lineage)
    for group in claims.others:
        if group.name in claims.held or blind:
            continue
        entry = _still_selected(data, group)
        booting = _maybe_booted(group) if entry is None else None
        if booting is not None:
            notes.append(booting)
        elif entry is None:
            changes += destroy_changes(
                group.name,
                group.records,
                "no longer in the spec: delete ferry's objects (never the source)",
                forget_cut_over=True,
                handed=handed,
                bound=bound_ports(data.destination),
            )
        else:
            notes.append(_kept(group, *entry))
            off[entry[0]] = off.get(entry[0], "") + left_off(group.records)
    return changes, notes, {i: said for i, said in off.items() if said}


def said_left_off(diagnostics: list[Diagnostic], off: Mapping[int, str]) -> list[Diagnostic]:
    """The spec's diagnostics, each "vms[i] selects no VM" error of an entry whose recorded
    VM's source ferry left powered off (`off`, from `departed`) saying so."""
    return [
        replace(d, summary=d.summary + off[d.path[1]])
        if len(d.path) == 2
        and d.path[0] == "vms"
        and isinstance(d.path[1], int)
        and d.path[1] in off
        and d.summary.startswith(f"vms[{d.path[1]}] {SELECTS_NOTHING}")
        else d
        for d in diagnostics
    ]


def _maybe_booted(group: RecordedVM) -> Diagnostic | None:
    """A VM the spec dropped while its cutover's server record is in progress (an apply
    stopped during the boot): the server may be ACTIVE and serving, its source powered off by
    ferry. Deleting it takes production down, forgetting it leaves a half-made cutover nobody
    tracks (break-it 12c item 18: the ACTIVE server deleted, the source left off). An error:
    its records are left untouched until the VM is back in the spec."""
    server = group.records.get(str(Address("vm", group.name, "server")))
    if server is None or server.status is not Status.IN_PROGRESS:
        return None
    server_id = server.attributes.get("server_id") or "(its id not recorded yet)"
    return Diagnostic(
        Severity.ERROR,
        f"{group.address} left the spec while its cutover's server {server_id} may have booted "
        "(an apply stopped during the boot; its source was powered off): nothing of it is "
        "deleted or forgotten; put it back in the spec in cutover mode to finish the cutover "
        "(or to --destroy it from there)",
    )


def _still_selected(data: DiffInput, group: RecordedVM) -> tuple[int, bool] | None:
    if data.lookup is None:
        return None
    return data.lookup.selecting(group.name, group.uuid)


def _kept(group: RecordedVM, index: int, certain: bool) -> Diagnostic:
    who = f"{group.address} (instance UUID {group.uuid or 'not recorded'})"
    how = "selects" if certain else "may select"
    return Diagnostic(
        Severity.ERROR if certain else Severity.WARNING,
        f"{who} is recorded and vms[{index}] {how} it, but the lookup did not find it: "
        f"its {len(group.records)} record(s) are left untouched (renamed? select it by "
        f"instance_uuid; to let them go, drop or exclude it in the spec){left_off(group.records)}",
        path=("vms", index),
    )
