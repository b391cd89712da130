"""Cutover changes (pure): ports with the source MACs, a flavor when asked, the conversion
(protection snapshots, then virt-v2v) and the server booted from the volumes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredPort, DesiredVM
from engine.model.observed import ObservedImageVolume, ObservedServer, ObservedVolume
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner import image_properties as nova
from engine.planner.diff.common import CUTOVER_MODES, backs_out, drifted, simple


def cutover_changes(
    vm: DesiredVM,
    records: dict[str, ResourceRecord],
    everything: Mapping[str, ResourceRecord],
    observed_server: ObservedServer | None = None,
    port_ids: frozenset[str] | None = None,
    *,
    syncing: bool = False,
) -> list[Change]:
    """The VM's cutover changes; `syncing`: its volumes are written in this plan (the final
    delta), so a conversion done before is done again."""
    out: list[Change] = []
    booted_before = server_made(vm, records, observed_server)
    for port in vm.ports:
        address = str(Address("vm", vm.name, "port", port.index))
        record = records.get(address)
        nic = planned_from(port)
        after: dict[str, Any] = {
            "name": f"{vm.target_name}-nic{port.index}",
            "mac": port.mac,
            "network": port.network,
            "subnet": port.subnet,
            "fixed_ip": port.fixed_ip,
            "security_groups": list(vm.security_groups),
            **nic,
        }
        change = drifted(record, port_ids, "port_id", after) or simple(
            address,
            "port",
            record,
            after,
            f"port with MAC {port.mac} on {port.network}",
            differs=lambda r, a: _port_differs(r, a, booted_before),
        )
        if change.action is Action.NOOP:  # the NIC this plan saw (the executor checks it)
            change = replace(change, after={**(change.after or {}), **nic})
        out.append(change)
    wanted = {str(Address("vm", vm.name, "port", p.index)) for p in vm.ports}
    for address, record in records.items():
        if booted_before:  # the server's ports serve production: the retired source's NICs
            break  # no longer say what it needs
        if ".port[" in address and address not in wanted:
            out.append(
                Change(
                    address,
                    "port",
                    Action.DELETE,
                    "the source NIC is gone",
                    dict(record.attributes),
                    None,
                )
            )
    if vm.flavor.create and vm.flavor.flavor is not None:
        f = vm.flavor.flavor
        address = str(Address("flavor", f.name))
        out.append(
            simple(
                address,
                "flavor",
                everything.get(address),
                {"vcpus": f.vcpus, "ram_mb": f.ram_mb} | ({"disk": f.disk} if f.disk else {}),
                "flavor made for the VM"
                + (f" ({f.disk} GiB root disk: the server boots from an image)" if f.disk else ""),
            )
        )
    out.append(conversion_change(vm, records, syncing, served=booted_before))
    out.append(server_change(vm, records, observed_server))
    return out


def planned_from(port: DesiredPort) -> dict[str, Any]:
    """The source NIC a port is planned from, kept in the port change's `after` so that a saved
    plan applied later can be checked against the source (engine.executor.source): its device
    key, and the portgroup (name; key when distributed) whose network_map entry gave the
    network."""
    return {
        "nic_key": port.nic_key,
        "portgroup": port.portgroup,
        "portgroup_key": port.portgroup_key,
    }


def _port_differs(record: ResourceRecord, after: Mapping[str, Any], booted: bool) -> str:
    """What makes a port be made again, as 'what: before → after' ("" when nothing does): a new
    MAC, or (no server booted from it yet) a new network (the source NIC moved to a portgroup
    network_map maps elsewhere) or other security groups (the spec's changed: break-it 12c item
    14, the server would have booted with the old ones; 12d item 7e: the reason did not say
    which). A record without security groups (an older ferry's) is left as it is."""
    attributes = record.attributes
    if attributes.get("mac") != after["mac"]:
        return f"MAC {attributes.get('mac')} → {after['mac']}"
    if booted:
        return ""
    moved = []
    if attributes.get("network") != after["network"]:
        moved.append(f"network {attributes.get('network')} → {after['network']}")
    groups = attributes.get("security_groups")
    if groups is not None and sorted(groups) != sorted(after["security_groups"]):
        before, now = ", ".join(sorted(groups)), ", ".join(sorted(after["security_groups"]))
        moved.append(f"security groups [{before}] → [{now}]")
    return "; ".join(moved)


def conversion_change(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], syncing: bool, *, served: bool
) -> Change:
    """Protect and convert: created, or done again (replace) when the volumes it converted were
    written since — synced now, or reverted to their protection snapshots (their content epochs
    are no longer the ones the conversion recorded). `served`: a server was (maybe) booted from
    the volumes (see `server_made`): converted for good."""
    address = str(Address("vm", vm.name, "conversion"))
    record = records.get(address)
    change = simple(
        address,
        "conversion",
        record,
        conversion_after(vm),
        "protect the volumes (Cinder snapshots), then convert the guest for KVM"
        if vm.convert
        else "protect the volumes (Cinder snapshots); no conversion (convert: false)",
    )
    if change.action is not Action.NOOP or record is None:
        return change
    if served:
        return change  # a server was booted from them: converted for good
    if syncing:
        why = "the volumes are synced again (final delta): protect and convert again"
    elif _epochs_moved(vm, record, records):
        why = "the volumes changed since their conversion (reverted or synced): convert again"
    else:
        return change
    wanted = conversion_after(vm)
    moved = _settings_moved(record, wanted)
    why += f", with the spec's settings ({', '.join(moved)} changed since)" if moved else ""
    # the spec's settings, never the last attempt's record (break-it 12c item 12: convert: true
    # added after an attempt with convert: false booted unconverted volumes)
    return Change(address, "conversion", Action.REPLACE, why, dict(record.attributes), wanted)


# what a conversion did depends on (memory and vCPUs only size its appliance)
CONVERSION_SETTINGS = ("tool", "guest_id", "firmware", "disks", "macs", "firstboot")


def _settings_moved(record: ResourceRecord, wanted: Mapping[str, Any]) -> list[str]:
    """The conversion settings the spec now asks for that the recorded attempt did not use."""
    return [k for k in CONVERSION_SETTINGS if record.attributes.get(k) != wanted.get(k)]


def _epochs_moved(
    vm: DesiredVM, record: ResourceRecord, records: Mapping[str, ResourceRecord]
) -> bool:
    epochs = dict(record.attributes.get("epochs") or {})
    for v in vm.volumes:
        disk = records.get(str(Address("vm", vm.name, "disk", v.disk_key)))
        if not epochs or epochs.get(str(v.disk_key)) != (disk.attributes if disk else {}).get(
            "epoch"
        ):
            return True
    return False


def server_of(record: ResourceRecord, observed: ObservedServer | None = None) -> str:
    """'server <id>' of a server record, the cloud's id when the record has none (`observed`);
    else what is known: an apply stopped in the boot before the cloud named it (break-it 12d
    item 7e: "cutover to server ?")."""
    known = record.attributes.get("server_id") or (observed.id if observed else None)
    if known:
        return f"server {known}"
    return "a server whose id an apply stopped during its boot never recorded"


def moment(since: object) -> str:
    """Epoch seconds (a float, or its string in a record) as a plan says a moment (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(str(since))))


def source_left_off(since: float) -> str:
    """A source ferry powered off at `since` (epoch seconds) whose cutover has no server yet."""
    return f"source powered off by ferry at {moment(since)}, no server yet"


def source_going_off(since: float, guest: str | None) -> str:
    """A source still going off from the graceful shutdown ferry asked for at `since` (epoch
    seconds; see `shutting_down_since`), `guest` as VMware Tools report it, no server yet."""
    return (
        f"source shutting down at ferry's request since {moment(since)} (guest {guest}), no "
        "server yet"
    )


def left_off_since(records: Mapping[str, ResourceRecord]) -> float | None:
    """When ferry powered off the source of a VM's records (epoch seconds: its conversion
    record's `powered_off_at`) for a cutover with no server record yet; None otherwise."""
    for address, record in records.items():
        since = record.attributes.get("powered_off_at") if record.kind == "conversion" else None
        if since and address.removesuffix(".conversion") + ".server" not in records:
            return float(since)
    return None


def shutting_down_since(attrs: Mapping[str, Any], power: str | None, guest: str | None) -> float:
    """When ferry's graceful shutdown of a source still going off began (epoch seconds), from
    its conversion record's `attrs` and the source's power state and guest state now (`power`:
    runtime.powerState; `guest`: guest.guestState as VMware Tools report it, None when not
    read); 0.0 when it is not going off at ferry's request. vSphere's ShutdownGuest returns at
    once and cannot be cancelled: the VM stays poweredOn until the guest is done.

    Going off: powered on, the guest not 'running', and either a shutdown ferry recorded asking
    for that timed out (`shutdown_asked_at`; Tools may stop before the power does: any guest
    state but 'running'), or a power-off ferry began (`powered_off_at`) whose guest says
    'shuttingDown' (an apply killed during the graceful wait never recorded its ask: break-it
    12f F1 and F3, "powered back on by an apply that could not record it", then the downtime
    measured from a second power-off)."""
    asked = attrs.get("shutdown_asked_at")
    since = asked or attrs.get("powered_off_at")
    if not since or power != "poweredOn" or guest == "running":
        return 0.0
    if not asked and guest != "shuttingDown":
        return 0.0
    return float(since)


def left_off_concerns(
    records: Mapping[str, ResourceRecord], power: str | None = None, guest: str | None = None
) -> tuple[Concern, ...]:
    """A warning on a VM whose source ferry left powered off (a failure or a stop with
    `on_failure: leave_off`, or an apply killed after the power-off) with no server yet. A
    source still going off from ferry's graceful shutdown (`power` and `guest` as observed, see
    `shutting_down_since`) is said so: the next cutover waits for it without asking again, and
    its downtime runs from then. A source that runs now was powered back on by an apply that
    could not record it (its state unreachable then: break-it 12c item 6): said so, not "left
    off"."""
    since = left_off_since(records)
    if since is None:
        return ()
    conversion = next(r for r in records.values() if r.kind == "conversion")
    going = shutting_down_since(conversion.attributes, power, guest)
    if going:
        return (
            Concern(
                ConcernLevel.WARNING,
                "source-shutting-down",
                f"{source_going_off(going, guest)}: a graceful shutdown cannot be cancelled; a "
                "cutover waits for it to go off without asking again (the downtime runs from "
                "then), anything else powers it back on once it is off",
            ),
        )
    if power == "poweredOn":
        at = moment(since)
        return (
            Concern(
                ConcernLevel.WARNING,
                "source-on-unrecorded",
                f"the state says ferry powered the source off at {at}, but it runs: "
                "powered back on by an apply that could not record it (the next "
                "cutover records its power anew)",
            ),
        )
    return (Concern(ConcernLevel.WARNING, "source-off", source_left_off(since)),)


def server_not_on_replica(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    observed: ObservedServer | None,
    volumes: Sequence[ObservedVolume],
    image_volumes: Sequence[ObservedImageVolume] = (),
) -> tuple[Concern, ...]:
    """An error when a server carries ferry's metadata for this VM (`ferry_vm`), this state has
    no record of it, and it does not run from the VM's volumes: one recorded is not attached
    to it, or (none recorded: a lost state's successor) none of ferry's volumes of the VM is
    (another state's, a rehearsal's, may be there too) (break-it 12j F2: a server tagged by
    hand, or restored from a backup, that boots from other volumes was adopted as the VM's
    cutover: "No changes" after, no final sync ever ran, and plan --destroy would have deleted
    it; break-it 16c F2, output: image: a rehearsal state adopted the real state's server with
    --adopt-lineage and its --destroy deleted it). For output: image the volumes are its
    volumes made from images. Nothing is said when the volumes' attachments were not read."""
    if observed is None or str(Address("vm", vm.name, "server")) in records:
        return ()
    uuid = vm.source.instance_uuid or ""
    kind = "volume" if vm.image is None else "image_volume"
    recorded = {
        str(r.attributes.get("volume_id"))
        for r in records.values()
        if r.kind == kind and r.attributes.get("volume_id")
    }
    found: dict[str, tuple[str, ...] | None] = (
        {
            v.id: None if v.attachments is None else tuple(a.server_id for a in v.attachments)
            for v in volumes
            if v.id in recorded or (v.origin == "ferry" and v.vm_uuid == uuid)
        }
        if vm.image is None
        else {v.id: v.server_ids for v in image_volumes if v.id in recorded or v.vm_uuid == uuid}
    )
    ids = recorded | set(found)
    if not ids or None in found.values() or len(found) < len(recorded):
        return ()  # not read, or a recorded volume gone: other concerns say what to do
    attached = {i for i, servers in found.items() if observed.id in (servers or ())}
    missing = sorted((recorded or ids) - attached)
    if not missing or (not recorded and attached):
        return ()
    return (
        Concern(
            ConcernLevel.ERROR,
            "server-not-from-replica",
            f"server {observed.id} ({observed.name}) carries ferry's metadata for this VM "
            f"(ferry_vm) but does not run from its volumes ({', '.join(missing)} not attached "
            "to it): ferry does not take it for this VM's cutover, nor would a destroy delete "
            "it. Another ferry state's (a rehearsal's or the real one's): plan with that "
            "state. Made or restored by hand: remove its metadata (openstack server unset "
            f"--property ferry_vm {observed.id}), then plan again",
        ),
    )


def server_name_taken(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    observed: ObservedServer | None,
    server_names: frozenset[str],
) -> tuple[Concern, ...]:
    """An error on a cutover whose server's name (`target_name`) another server of the project
    has, one ferry did not boot for this VM (no record, no `ferry_vm` of it): the cutover
    would boot a second server of that name beside it (break-it 12j F4: a hand-made web01, and
    the source powered off for a duplicate). Rename one, or give the VM another target_name."""
    if vm.mode not in CUTOVER_MODES or observed is not None:
        return ()
    if str(Address("vm", vm.name, "server")) in records or vm.target_name not in server_names:
        return ()
    return (
        Concern(
            ConcernLevel.ERROR,
            "server-name-taken",
            f"a server named {vm.target_name!r} exists in the destination project and ferry did "
            "not boot it for this VM: the cutover would boot a second one of that name; rename "
            "or delete it, or set the VM's target_name",
        ),
    )


def running_after_cutover(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    observed: ObservedServer | None,
    *,
    ran: str = "",
) -> tuple[Concern, ...]:
    """An error on a cut-over VM whose source runs (or ran) again beside, or instead of, the
    server ferry booted from its volumes (`observed`: the cloud's server for the VM, None;
    `ran`: how the source ran since its last sync, "" when it did not: see `source_ran`):

    - a server (recorded or found) and the source running now: two copies of one machine with
      the same MACs; the source's writes are never copied (break-it 12d items 2 and 3: a
      warning, "No changes", exit 0);
    - a confirmed server and the source ran since (off again): a warning, its writes since are
      not in the server (break-it 12e: "No changes");
    - a server an interrupted apply booted (record in progress, or none) and the source ran
      since the final sync: that server runs from volumes without those writes; it is never
      adopted (break-it 12d item 2);
    - a recorded server gone from the cloud and the source ran since: booting the volumes again
      would bring the machine back without its writes since (break-it 12c item 2).

    A server record in progress whose server the cloud does not have holds nothing: the plan
    cuts over again (see `server_made`), no concern. Set back to replicate, an unconfirmed
    server is deleted by the back-out (`backs_out`): no concern either."""
    record = records.get(str(Address("vm", vm.name, "server")))
    running = vm.source.power_state == "poweredOn"
    if backs_out(vm, records):  # the back-out deletes that server: the source is production
        return ()
    if observed is not None:
        unconfirmed = record is None or record.status is Status.IN_PROGRESS
        if record is None and vm.mode not in CUTOVER_MODES and not running:
            return (_unrecorded_server(observed),)
        if not running and ran and not unconfirmed:  # break-it 12e: never a silent "No changes"
            return (
                Concern(
                    ConcernLevel.WARNING,
                    "source-ran-after-cutover",
                    f"the source VM ran since its cutover to server {observed.id} "
                    f"({_evidence(ran)}, off now): what it wrote since is not in the server, "
                    "whose volumes are production's; nothing is copied",
                ),
            )
        if not running and not (unconfirmed and ran):
            return ()
        by = "an interrupted apply (never confirmed)" if unconfirmed else "its cutover"
        now = "runs again" if running else f"ran since its final sync ({ran})"
        two = "two copies of this machine run with the same MACs, and " if running else ""
        if record is None:  # a lost state's (or another's) server: confirmed or not is unknown
            by = "a cutover this state has no record of (confirmed or not: unknown)"
            keep = (
                "ferry does not adopt it. Find out which is production: if the server is, "
                "power the source off and plan with the state that made it; if the source "
                f"is, delete the server (openstack server delete {observed.id}) and apply "
                "again: the cutover runs again (power-off, final sync, boot)"
            )  # break-it 12h M4: a completed cutover's server was called never confirmed
        elif unconfirmed:  # protected, never run as production: the cutover can run again
            keep = (
                "ferry does not adopt it. To keep the source: delete the server (openstack "
                f"server delete {observed.id}) and apply again: the cutover runs again "
                "(power-off, final sync, boot)"
            )
        else:  # its volumes are production's: only a new migration brings the source's writes
            keep = (
                "to keep the server, power the source off (its writes since are lost); to keep "
                f"the source, delete the server (openstack server delete {observed.id}), then "
                "plan --destroy and migrate it again"
            )
        return (
            Concern(
                ConcernLevel.ERROR,
                "source-running-after-cutover",
                f"server {observed.id}, booted from its volumes by {by}, runs and the source "
                f"VM {now}: {two}the server lacks the source's writes since; {keep}",
            ),
        )
    if record is not None and running and vm.mode not in CUTOVER_MODES:
        return (  # set back to replicate: its volumes are never synced again (see `booted`)
            Concern(
                ConcernLevel.WARNING,
                "source-running-after-cutover",
                f"the source VM is powered on again after its cutover to {server_of(record)}: two "
                "copies of this machine may run with the same MACs, and its new writes are never "
                "copied (the server's volumes are production's); power the source off",
            ),
        )
    if record is None or record.status is Status.IN_PROGRESS or not (running or ran):
        return ()
    now = "runs again" if running else f"ran since its cutover ({ran})"
    return (
        Concern(
            ConcernLevel.ERROR,
            "server-gone-source-running",
            f"{server_of(record)} of its cutover is gone and the source {now}: its volumes "
            "hold the machine as it was at the cutover, without what the source wrote since; "
            "plan --destroy and migrate it again",
        ),
    )


CHANGED = "its disks changed"


def source_ran(vm: DesiredVM, records: Mapping[str, ResourceRecord]) -> str:
    """How the source is known to run, or to have run since its last sync ("" when it did
    not): powered on now; a disk's changeId is not the one its record synced to (vSphere moves
    it at a power cycle and a snapshot): CHANGED; or, for a source whose disks have no changeId
    (CBT off), a power-on vCenter logged since ferry powered it off for its cutover
    (`SourceVM.powered_on_at`, as the apply's boot checks read them; break-it 12f F4: the plan
    was clean while every apply refused the server)."""
    if vm.source.power_state == "poweredOn":
        return "powered on"
    now = {disk.key: disk.change_id for disk in vm.source.disks}
    if moved_change_ids(vm.name, records, now):
        return CHANGED
    if vm.source.powered_on_at:
        at = time.strftime("%H:%M:%S UTC", time.gmtime(vm.source.powered_on_at[-1]))
        return f"powered on at {at}, vCenter's events"
    return ""


def _evidence(ran: str) -> str:
    """What a warning says of how the source ran (see `source_ran`)."""
    return "its disks' changeIds moved: powered on and off again" if ran == CHANGED else ran


def moved_change_ids(
    name: str, records: Mapping[str, ResourceRecord], now: Mapping[int, str | None]
) -> dict[int, tuple[str, str]]:
    """The VM's disks whose changeId `now` ({disk key: changeId}) is not the one their record
    synced to ({disk key: (synced, now)}): the source ran since its last sync (vSphere moves a
    disk's changeId at a power cycle and a snapshot, so a source powered on, written and
    powered off again shows here though it is off). A disk without a changeId on either side
    (CBT off) cannot tell and is left out."""
    moved = {}
    for key, change_id in now.items():
        record = records.get(str(Address("vm", name, "disk", key)))
        synced = record.attributes.get("change_id") if record else None
        if synced and change_id and synced != change_id:
            moved[key] = (str(synced), change_id)
    return moved


def server_made(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], server: ObservedServer | None
) -> bool:
    """A server was (maybe) booted from the volumes: a server record, except (cutover mode) one
    still in progress whose server the cloud does not have (a boot killed before the server was
    made, or its half-made server deleted since): that holds nothing, and the cutover runs again
    (power-off, final delta, protect and convert, boot; break-it 12d item 1: the stale volumes
    were booted, the source's writes since lost)."""
    record = records.get(str(Address("vm", vm.name, "server")))
    if record is None:
        return False
    if vm.mode not in CUTOVER_MODES:  # set back to replicate: an unconfirmed one is undone
        return not backs_out(vm, records)
    return record.status is not Status.IN_PROGRESS or server is not None


def suspended_at_cutover(
    vm: DesiredVM, records: Mapping[str, ResourceRecord]
) -> tuple[Concern, ...]:
    """A suspended source the plan cuts over: no guest runs to shut down, so only a hard
    power-off (power_off.force_after) can stop it, and its suspended memory state is lost: a
    warning with force_after, else an error (the executor would refuse it after the plan)."""
    if vm.mode not in CUTOVER_MODES or vm.source.power_state != "suspended":
        return ()
    if str(Address("vm", vm.name, "server")) in records:
        return ()
    if power_policy(vm)["force_after"]:
        return (
            Concern(
                ConcernLevel.WARNING,
                "source-suspended",
                "the source VM is suspended: the cutover powers it off hard "
                "(power_off.force_after) and its suspended memory state is lost; resume it "
                "first to let a graceful shutdown run",
            ),
        )
    return (
        Concern(
            ConcernLevel.ERROR,
            "source-suspended",
            "the source VM is suspended and power_off.force_after is off: a graceful shutdown "
            "cannot run in a suspended guest; resume it, or allow a hard power-off",
        ),
    )


def power_policy(vm: DesiredVM) -> dict[str, Any]:
    """The spec's power_off block with its defaults made explicit (shown in the plan)."""
    given = vm.power_off
    return {
        "policy": given.get("policy", "graceful"),
        "timeout": int(given.get("timeout", 300)),
        "force_after": bool(given.get("force_after", False)),
        "on_failure": given.get("on_failure", "power_on"),
    }


def conversion_after(vm: DesiredVM) -> dict[str, Any]:
    """What the conversion node needs: the disks in boot order with their controllers, the MACs
    (virt-v2v keeps MAC-based interface names), the firmware and the guest's size."""
    disks = {d.key: d for d in vm.source.disks}
    return {
        "tool": "virt-v2v-in-place" if vm.convert else None,
        "guest_id": vm.source.guest_id,
        "firmware": vm.source.firmware,
        "disks": [
            {"key": v.disk_key, "controller_key": disks[v.disk_key].controller_key}
            for v in vm.volumes
        ],
        "macs": [p.mac for p in vm.ports],
        "memory_mb": vm.source.memory_mb,
        "vcpus": vm.source.cpus,
        "on_failure": power_policy(vm)["on_failure"],
        "firstboot": list(vm.firstboot),
        "debug": vm.debug,
    }


def server_change(
    vm: DesiredVM, records: dict[str, ResourceRecord], observed: ObservedServer | None
) -> Change:
    address = str(Address("vm", vm.name, "server"))
    after: dict[str, Any] = {
        "name": vm.target_name,
        "flavor": vm.flavor.flavor.name if vm.flavor.flavor else None,
        "volumes": [v.disk_key for v in vm.volumes],
        "ports": len(vm.ports),
        "key_pair": vm.key_pair,
    }
    reason = "cutover: boot the server from the volumes"
    metadata = nova.volume_image_metadata(vm.source, converted=vm.convert)
    if metadata and vm.image is None:  # an image VM's volumes take its image's properties
        after["image_metadata"] = metadata
        reason += f" (the boot volume's image metadata: {nova.describe(metadata)})"
    record = records.get(address)
    drift = drifted(record, frozenset({observed.id} if observed else ()), "server_id", after)
    if drift is not None:
        return replace(drift, reason=drift.reason + " (boot it from the volumes)")
    if record is None and observed is not None and observed.status == "ACTIVE":
        return Change(
            address,
            "server",
            Action.READ,
            f"found server {observed.id} ferry booted for this VM: adopt it",
            None,
            {**after, "server_id": observed.id},
        )
    return simple(address, "server", record, after, reason)


def _unrecorded_server(observed: ObservedServer) -> Concern:
    """A server ferry booted for a VM (found by its metadata) that this state has no record of,
    the spec saying replicate and the source off: a lost state's cutover, confirmed or killed
    in its boot, cannot be told apart from here (break-it 12i F4: a lost state's successor
    adopted the volumes an unconfirmed server ran from, then said "No changes" with both
    volumes holding that guest's writes). Blocks the VM until someone decides."""
    return Concern(
        ConcernLevel.ERROR,
        "server-without-record",
        f"server {observed.id} was booted from this VM's volumes by a cutover this state has no "
        "record of (a lost state's or another's; confirmed or not: unknown), and the spec says "
        "replicate: ferry neither syncs into a server's volumes nor takes them for a replica. "
        "Find out which is production: if the server is, set mode: cutover (it is adopted, "
        "nothing copied); if the source is, delete the server (openstack server delete "
        f"{observed.id}), power the source back on and plan again",
    )


def booted(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], server: ObservedServer | None
) -> bool:
    """A server was (maybe) booted from the volumes: a killed apply's in-progress server, or
    one found by metadata. Its volumes are never synced or converted again. In replicate mode
    (a VM set back after its cutover) any server ferry made for it counts, except one a killed
    boot left unconfirmed, which the back-out deletes before the volumes are reverted and synced
    (`backs_out`; break-it 12c item 5: the plan synced into the volumes of a server that may
    be ACTIVE; 12f F2: nothing was undone, the source stayed off)."""
    record = records.get(str(Address("vm", vm.name, "server")))
    if vm.mode not in CUTOVER_MODES:  # an unconfirmed one is undone (break-it 12f F2)
        return (record is not None or server is not None) and not backs_out(vm, records)
    if record is not None:  # in progress without a server in the cloud: booted again
        return record.status is Status.IN_PROGRESS and server is not None
    return server is not None
