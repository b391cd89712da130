"""The diff: desired VMs against recorded state and observed destination → changes (pure).

Split by resource kind: `volumes` (copies), `cutover` (ports, flavor, conversion, server),
`networks`, `departed` (records per VM by instance UUID: renames move them, VMs that left the
spec), `estimates` (downtime). A VM that left the spec: its replicas are deleted; a VM already cut
over is forgotten (its server stays in service); a VM the spec selects but the inventory does not
show: its records are left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.diagnostics import Diagnostic
from engine.model.desired import Concern, ConcernLevel, DesiredVM, DesiredVolume
from engine.model.observed import Destination, ObservedServer, ObservedVolume
from engine.model.plan import Action, Change, VMPlan
from engine.model.state import RECORDED_HOST, ResourceRecord, State
from engine.planner import osmigrate
from engine.planner.diff import image, image_adoption, lineage, ports, properties
from engine.planner.diff.attachments import ferry_servers, repair_only, repaired
from engine.planner.diff.backout import (
    back_to_replicate,
    replicate_after_cutover,
    unprotected_copied_whole,
)
from engine.planner.diff.common import CUTOVER_MODES, DiffInput
from engine.planner.diff.cutover import (
    booted,
    cutover_changes,
    left_off_concerns,
    power_policy,
    running_after_cutover,
    server_made,
    server_name_taken,
    server_not_on_replica,
    source_ran,
    suspended_at_cutover,
)
from engine.planner.diff.departed import (
    bound_ports,
    claim,
    departed,
    destroy_changes,
    destroy_concerns,
    handed_objects,
    recorded_vms,
    said_left_off,
)
from engine.planner.diff.estimates import (
    downtime,
    measured,
    over_budget,
)
from engine.planner.diff.leftovers import leftover_snapshots
from engine.planner.diff.networks import network_changes
from engine.planner.diff.ownership import adoption_concerns
from engine.planner.diff.volumes import (
    adopt_then_sync,
    converted_gone,
    full_in_window,
    not_verified,
    removed_disks,
    retyped,
    reverts_first,
    settled,
    shrunk,
    unmeasured_in_window,
    verify_step,
    volume_change,
)
from engine.planner.quota import Budget, demand

__all__ = ["DiffInput", "diff", "power_policy", "said_left_off", "vm_changes"]


def _found_server_concerns(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    servers: Mapping[str, ObservedServer],
    data: DiffInput,
) -> tuple[Concern, ...]:
    """The server found for the VM (by its ferry_vm) that does not run from its volumes
    (server-not-from-replica), else what its source running beside it means
    (source-running-after-cutover): never both, which contradicted each other about one server
    ("booted from its volumes" and "does not run from its volumes": break-it 12k M5)."""
    observed = servers.get(vm.source.instance_uuid or "")
    foreign = server_not_on_replica(
        vm,
        records,
        observed,
        data.destination.volumes,
        data.destination.volumes_from_images or (),
    )
    return foreign or running_after_cutover(vm, records, observed, ran=source_ran(vm, records))


def found_volumes(
    vm: DesiredVM, observed: Mapping[tuple[str, Any], ObservedVolume]
) -> dict[int, ObservedVolume]:
    """The volumes found by metadata for the VM's disks, by disk key: ferry's by the VM's
    instance UUID, else os-migrate's by name."""
    out = {}
    for v in vm.volumes:
        found = observed.get((vm.source.instance_uuid or "", v.disk_key)) or observed.get(
            ("os-migrate", osmigrate.volume_name(vm.source.name, v.disk_key))
        )
        if found is not None:
            out[v.disk_key] = found
    return out


def own_stamped(volume: ObservedVolume, lineage: str) -> ObservedVolume:
    """`volume` with its `stamp` (ferry_updated_at) kept only when it is this state's (its
    `ferry_state` is `lineage`): an adopted volume's stamp is of another state's steps."""
    if volume.stamp and volume.lineage != lineage:
        return replace(volume, stamp=None)
    return volume


# (no "volume" in the first: image.as_files rewrites "volume" to "file" in reasons)
COPY_KINDS = {"volume": "Cinder", "disk_file": "a local file"}


def _disk_change(
    vm: DesiredVM,
    volume: DesiredVolume,
    records: Mapping[str, ResourceRecord],
    found: ObservedVolume | None,
    now: float | None,
    *,
    volume_ids: frozenset[str] | None = None,
) -> Change:
    """A disk's copy change from its record, unless the record is of the other output (a
    volume's for output: image, a file's for output: volume): that record says what the other
    target holds, not what this one does, so no delta starts from it (break-it 12c item 7: a
    switch of destination.output made new volumes of the 1 MiB delta, then "No changes"). Then
    it is a full copy into a new target, and its reason says why. `volume_ids`: every volume
    of the project (None: not read), which tells a recorded volume that lost ferry's metadata
    from one that is gone."""
    disk = next(d for d in vm.source.disks if d.key == volume.disk_key)
    record = records.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
    wanted = "disk_file" if vm.image is not None else "volume"
    if record is None or record.kind == wanted or record.kind not in COPY_KINDS:
        reverts = record is not None and reverts_first(records, vm.name, record)
        held = str(record.attributes.get("volume_id") or "") if record is not None else ""
        unlabeled = found is None and bool(held) and held in (volume_ids or ())
        return volume_change(
            vm, volume, disk, record, found, now=now, reverts=reverts, unlabeled=unlabeled
        )
    change = volume_change(vm, volume, disk, None, found, now=now)
    held = record.attributes.get("volume_id") or record.attributes.get("path") or "?"
    output = "image" if vm.image is not None else "volume"
    return replace(
        change,
        reason=f"the last sync went to {COPY_KINDS[record.kind]} ({held}) and destination."
        f"output is now {output}: {change.reason}",
    )


def vm_changes(
    vm: DesiredVM,
    records: dict[str, ResourceRecord],
    state: State,
    observed: Mapping[tuple[str, Any], ObservedVolume],
    *,
    servers: Mapping[str, ObservedServer] | None = None,
    port_ids: frozenset[str] | None = None,
    now: float | None = None,
    verify: bool = False,
    files: frozenset[str] | None = None,
    cloud: Destination | None = None,
) -> list[Change]:
    """A VM's changes; `verify` (--verify): each replica nothing else is planned for is compared
    with a new snapshot (a verify step, which takes the VM's snapshot); `files`: the disk files
    found in work_dir (output: image; None: not read); `cloud`: the destination as refresh read
    it (output: image compares its Glance images and their volumes' image metadata)."""
    server = (servers or {}).get(vm.source.instance_uuid or "")
    is_booted = booted(vm, records, server)
    served = server_made(vm, records, server)  # a server was (maybe) booted
    # output: image copies into files: a volume found by metadata is no base for them
    found = found_volumes(vm, observed) if vm.image is None else {}
    found = {key: own_stamped(v, state.lineage) for key, v in found.items()}
    ids = cloud.volume_ids if cloud is not None and vm.image is None else None
    volumes = [
        settled(c) if is_booted else adopt_then_sync(vm, c)
        for c in (
            _disk_change(vm, v, records, found.get(v.disk_key), now, volume_ids=ids)
            for v in vm.volumes
        )
    ]
    if not is_booted:  # synced in this plan: what a revert cannot undo is copied in full
        snapshots = cloud.snapshot_ids if cloud is not None else None
        newer = cloud.newer_snapshots if cloud is not None else None
        volumes = unprotected_copied_whole(vm, records, volumes, snapshots, newer)
    if verify and not is_booted:
        volumes = [verify_step(vm, c) for c in volumes]
    if vm.image is not None:
        volumes = image.as_files(vm, vm.image, volumes, records, files)
    out: list[Change] = []
    syncing = any(
        c.action in (Action.CREATE, Action.UPDATE, Action.REPLACE) and not repair_only(c)
        for c in volumes
    )
    verifying = any(c.action is Action.VERIFY for c in volumes)
    if syncing and vm.enable_cbt and not vm.source.cbt:
        out.append(
            Change(
                str(Address("vm", vm.name, "cbt")),
                "source_cbt",
                Action.CREATE,
                "enable changed block tracking (enable_cbt): reconfigure the VM, then a snapshot "
                "create/remove cycle so it takes effect; later syncs copy only changes",
                {"enabled": False},
                {"enabled": True},
            )
        )
    if syncing or verifying:
        out.append(
            Change(
                str(Address("vm", vm.name, "snapshot")),
                "source_snapshot",
                Action.CREATE,
                "power off the source, then one snapshot of all disks for the final sync"
                if vm.mode in CUTOVER_MODES
                else "one snapshot of all disks for this sync (removed after)"
                if syncing
                else "one snapshot of all disks to compare the volumes with (removed after)",
                None,
                {"name": f"ferry-{vm.target_name}"}
                | ({"power_off": power_policy(vm)} if vm.mode in CUTOVER_MODES else {}),
            )
        )
    else:
        left = leftover_snapshots(
            vm.name,
            vm.source.snapshots,
            records.get(str(Address("vm", vm.name, "snapshot"))),
            state.lineage,
        )
        out += [left] if left else []
    out += volumes
    if not is_booted and not served:  # a retired source's change never deletes production's
        out += removed_disks(vm, records)
    if vm.mode in CUTOVER_MODES:
        cutover = cutover_changes(
            vm, records, state.resources, server, port_ids, syncing=syncing and not is_booted
        )
        # a server was booted from the volumes: they are production's, never protected or
        # converted again (a state that lost the conversion record, adopted, asks for one)
        cutover = [
            c
            for c in cutover
            if not (
                c.kind == "conversion" and (is_booted or (served and c.action is not Action.NOOP))
            )
        ]
        cutover = [
            properties.booted_volume(vm, c, records.get(c.address), observed)
            if c.kind == "server"
            else c
            for c in cutover
        ]
        out += image.cutover(vm, records, cutover, cloud) if vm.image is not None else cutover
        out = ports.adopted(vm, out, records, cloud, state.lineage)
    out = lineage.labelled(out, records, cloud, state.lineage)
    return out + back_to_replicate(vm, records, server)


def diff(
    data: DiffInput,
) -> tuple[list[VMPlan], list[Change], list[Diagnostic], dict[int, str]]:
    """Every VM's plan entry, every change (blocked VMs have none), what the diff found about
    recorded VMs (kept because the spec still selects them), and vms entry index → what its
    errors must add about a kept VM's source ferry left powered off (`said_left_off`)."""
    rates = measured(data.state)
    claims = claim(data.desired, recorded_vms(data.state, data.destination))
    handed = handed_objects(data.destination, data.state.lineage) if data.destroy else {}
    if data.destroy:  # a server another state's volumes or images run it: that state's
        handed |= lineage.server_lineages(data.destination, data.state.lineage)
    observed: dict[tuple[str, Any], ObservedVolume] = {
        (v.vm_uuid, v.disk_key): v for v in data.destination.volumes if v.origin == "ferry"
    }
    observed |= {
        ("os-migrate", v.name): v for v in data.destination.volumes if v.origin == "os-migrate"
    }
    servers = {s.vm_uuid: s for s in data.destination.servers if s.vm_uuid}
    port_ids = frozenset(p.id for p in data.destination.ports)
    plans: list[VMPlan] = []
    changes: list[Change] = []
    budget = Budget(data.destination.quotas, data.destination)
    work_dir = image.WorkDir(data.destination.work_dir_free)
    # --verify: every VM's copies verified whole, whatever its spec entry says
    wanted = [replace(v, verify="full") if data.verify else v for v in data.desired]
    for vm in wanted:
        records = claims.records.get(vm.name, {})
        move = [claims.moves[vm.name]] if vm.name in claims.moves else []
        held = tuple(claims.concerns.get(vm.name, ()))
        if data.destroy:
            vm_list = destroy_changes(
                vm.name,
                records,
                "--destroy",
                forget_cut_over=False,
                snapshots=vm.source.snapshots,
                lineage=data.state.lineage,
                handed=handed,
                bound=bound_ports(data.destination),
            )
            said = _destroy_concerns(vm, records, vm_list)
            plans.append(_vm_plan(vm, vm.concerns + held + said, None))
            changes += [] if held else move + vm_list
            continue
        vm_list = vm_changes(
            vm,
            records,
            data.state,
            observed,
            servers=servers,
            port_ids=port_ids,
            now=data.now,
            verify=data.verify,
            files=data.destination.work_dir_files,
            cloud=data.destination,
        )
        vm_list, stuck = _attachment_repairs(
            vm, vm_list, records, observed, servers=servers, data=data
        )
        copies = [c for c in vm_list if not lineage.label_only(c)]  # a label moves no bytes
        estimate = downtime(vm, copies, rates)
        found_server = _found_server_concerns(vm, records, servers, data)
        # a server ferry does not take (server-not-from-replica) has no objects "beside the
        # server this plan would adopt": its one error says it (break-it 16d L3)
        refused = any(c.code == "server-not-from-replica" for c in found_server)
        server = None if refused else servers.get(vm.source.instance_uuid or "")
        concerns = (
            vm.concerns
            + held
            + stuck
            + over_budget(vm, estimate)
            + full_in_window(vm, copies)
            + unmeasured_in_window(vm, copies)
            + left_off_concerns(records, vm.source.power_state, vm.source.guest_state)
            + found_server
            + replicate_after_cutover(vm, records, servers.get(vm.source.instance_uuid or ""))
            + server_name_taken(
                vm,
                records,
                servers.get(vm.source.instance_uuid or ""),
                data.destination.server_names,
            )
            + suspended_at_cutover(vm, records)
            + image.lost_images(vm, records, data.destination, vm_list)
            + (() if refused else image_adoption.unadopted(vm, records, data.destination))
            + image_adoption.other_states(
                vm,
                records,
                data.destination,
                data.state.lineage,
                data.adopt_lineages,
                beside=not refused,
            )
            + image.lost_volumes(
                vm, records, data.destination, image_adoption.served_by(vm, data.destination)
            )
            + image.served_boot_image(
                vm, records, data.destination, image_adoption.served_by(vm, data.destination)
            )
            + shrunk(vm, records)
            + (
                converted_gone(
                    vm, records, found_volumes(vm, observed), data.destination.volume_ids
                )
                if vm.image is None
                else ()
            )
            + retyped(vm, records, found_volumes(vm, observed))
            + adoption_concerns(
                vm,
                records,
                found_volumes(vm, observed),
                data.state.lineage,
                data.adopt_lineages,
            )
            + lineage.unlabeled_beside_server(
                vm,
                records,
                server,
                _unlabeled(vm, records, found_volumes(vm, observed), data.destination)
                + _bare_ports(vm, records, data, refused),
                data.adopt_lineages,
            )
            + lineage.unlabeled_volume(
                vm,
                records,
                server,
                found_volumes(vm, observed),
                data.adopt_lineages,
                ports=_bare_ports(vm, records, data, refused),
            )
            + (not_verified(vm, vm_list) if data.verify else ())
        )
        concerns = _other_states_ports(vm, records, data, refused, concerns)
        spends = data.targeted is None or vm.name in data.targeted
        if spends and not any(c.level is ConcernLevel.ERROR for c in concerns):
            concerns += budget.take(demand(vm, vm_list, data.destination))
        if spends and not any(c.level is ConcernLevel.ERROR for c in concerns):
            concerns += work_dir.take(vm, copies)
        blocked = any(c.level is ConcernLevel.ERROR for c in concerns)
        plans.append(_vm_plan(vm, concerns, estimate, vm_list))
        if not blocked:
            changes += move + vm_list
    gone, notes, off = departed(data, claims)
    changes += gone
    changes += network_changes(data, [c for c in changes if c.kind == "port"])
    if data.destroy:
        changes += [
            Change(a, "flavor", Action.DELETE, "--destroy", dict(r.attributes), None)
            for a, r in sorted(data.state.resources.items())
            if r.kind == "flavor"
        ]
    return plans, changes, notes, off


def _unlabeled(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    found: Mapping[int, ObservedVolume],
    cloud: Destination,
) -> tuple[str, ...]:
    """The ids of the objects without a lineage the plan would adopt beside the VM's server:
    output: image, its images and the volumes made from them (image_adoption.unlabeled);
    output: volume, the volumes found for its unrecorded disks."""
    if vm.image is not None:
        return image_adoption.unlabeled(vm, records, cloud)
    return lineage.unlabeled_volumes(vm, records, found)


def _bare_ports(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], data: DiffInput, refused: bool
) -> tuple[str, ...]:
    """The ids of the ports ferry made for the VM's NICs that this state does not record and
    that carry no lineage (ports.unlabeled): a cutover VM's (a replicate one makes none), and
    none beside a server ferry does not take (`refused`: server-not-from-replica says it)."""
    if vm.mode not in CUTOVER_MODES or refused:
        return ()
    return ports.unlabeled(vm, records, data.destination)


def _other_states_ports(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    data: DiffInput,
    refused: bool,
    concerns: tuple[Concern, ...],
) -> tuple[Concern, ...]:
    """`concerns` with the found ports of the VM's NICs another ferry state manages
    (ports.of_other_states: they join that state's volume or image error, or have their own),
    for a cutover VM whose found server ferry takes (`refused`: not)."""
    if vm.mode not in CUTOVER_MODES or refused:
        return concerns
    return ports.of_other_states(
        vm,
        records,
        data.destination,
        data.state.lineage,
        data.adopt_lineages,
        concerns=concerns,
    )


def _attachment_repairs(
    vm: DesiredVM,
    changes: list[Change],
    records: Mapping[str, ResourceRecord],
    observed: Mapping[tuple[str, Any], ObservedVolume],
    *,
    servers: Mapping[str, ObservedServer],
    data: DiffInput,
) -> tuple[list[Change], tuple[Concern, ...]]:
    """The VM's volume changes with ferry's stale attachments repaired first, and the concerns
    of attachments and statuses that are not ferry's (engine.planner.diff.attachments). A VM a
    server was booted for, and a converted volume, are production's: left alone."""
    uuid = vm.source.instance_uuid or ""
    server_record = records.get(str(Address("vm", vm.name, "server")))
    if booted(vm, records, servers.get(uuid)):
        return changes, ()
    server_id = (server_record.attributes.get("server_id") if server_record else None) or (
        servers[uuid].id if uuid in servers else None
    )
    host_ids = [
        str(r.attributes.get("server_id") or "")
        for r in data.state.resources.values()
        if r.kind == "conversion_host"
    ]
    recorded_hosts = [
        str(r.attributes.get(RECORDED_HOST) or "")
        for r in data.state.resources.values()
        if r.kind == "volume"
    ]
    ferry = ferry_servers(data.conversion_hosts, host_ids, server_id, recorded_hosts)
    out: list[Change] = []
    concerns: tuple[Concern, ...] = ()
    for change in changes:
        key = Address.parse(change.address).index
        if change.kind != "volume" or key is None or (change.before or {}).get("converted"):
            out.append(change)
            continue
        found = observed.get((uuid, key)) or observed.get(
            ("os-migrate", osmigrate.volume_name(vm.source.name, key))
        )
        fixed, more = repaired(change, found, ferry, cutover=vm.mode in CUTOVER_MODES)
        out.append(fixed)
        concerns += more
    return out, concerns


def _vm_plan(
    vm: DesiredVM,
    concerns: tuple[Concern, ...],
    estimate: float | None,
    changes: list[Change] | None = None,
) -> VMPlan:
    return VMPlan(
        address=str(Address("vm", vm.name)),
        name=vm.name,
        instance_uuid=vm.source.instance_uuid,
        target_name=vm.target_name,
        mode=vm.mode,
        flavor=vm.flavor.flavor.name if vm.flavor.flavor else None,
        flavor_reason=vm.flavor.reason,
        concerns=concerns,
        blocked=any(c.level is ConcernLevel.ERROR for c in concerns),
        downtime_seconds=estimate,
        verify=vm.verify,
        reader=vm.reader,
        work_dir=vm.image.work_dir if vm.image else "",
        local_bytes=image.local_bytes(vm, changes or []) if vm.image else None,
    )


def _destroy_concerns(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], changes: list[Change]
) -> tuple[Concern, ...]:
    """destroy_concerns of the VM, with its source's power and guest state as observed; a
    server the destroy forgets (another ferry state runs it: destroy_changes) is not deleted,
    so no warning says it is deleted: one says it is forgotten, and why."""
    said = destroy_concerns(vm.name, records, vm.source.power_state, vm.source.guest_state)
    server = str(Address("vm", vm.name, "server"))
    forgot = next((c for c in changes if c.address == server and c.action is Action.FORGET), None)
    if forgot is None:
        return said
    kept = tuple(c for c in said if c.code != "destroy-deletes-production")
    server_id = (forgot.before or {}).get("server_id") or "?"
    reason = forgot.reason
    line = reason if f"server {server_id}" in reason else f"server {server_id}: {reason}"
    return (*kept, Concern(ConcernLevel.WARNING, "destroy-forgets-server", line))
