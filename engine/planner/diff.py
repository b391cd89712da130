"""The diff: desired VMs against recorded state and observed destination → changes (pure).

Volumes: create = full copy, update = delta sync (or a full re-copy when CBT is off or was
reset, with the reason), replace = a tainted copy redone, read = adopt a volume found by its
metadata. Ports, flavor, conversion and server exist only for cutover/cold. A VM that left the
spec: its replicas are deleted; a VM already cut over is forgotten (its server stays in service).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM, DesiredVolume
from engine.model.observed import Destination, ObservedServer, ObservedVolume, SourceDisk
from engine.model.plan import Action, Change, VMPlan
from engine.model.state import ResourceRecord, State, Status
from engine.planner import osmigrate
from engine.planner.quota import Budget, demand

DEFAULT_THROUGHPUT = 100 * 1024**2  # bytes/s assumed before any copy was measured
CONVERSION_SECONDS = {"windows": 900.0, "linux": 300.0}
BOOT_SECONDS = 60.0
CUTOVER_MODES = ("cutover", "cold")


@dataclass(frozen=True)
class DiffInput:
    desired: tuple[DesiredVM, ...]
    state: State
    destination: Destination
    destroy: bool = False


def epoch(change_id: str | None) -> str | None:
    """The CBT epoch (uuid part) of a changeId '<uuid>/<sequence>'."""
    return change_id.rsplit("/", 1)[0] if change_id and "/" in change_id else None


def records_by_vm(state: State) -> dict[str, dict[str, ResourceRecord]]:
    """Recorded resources grouped by the name of the VM they belong to (one pass)."""
    out: dict[str, dict[str, ResourceRecord]] = {}
    for address, record in state.resources.items():
        parsed = Address.parse(address)
        if parsed.kind == "vm":
            out.setdefault(parsed.name, {})[address] = record
    return out


# -- volumes ------------------------------------------------------------------------------------


def _volume(
    address: str,
    action: Action,
    reason: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    size: int | None = None,
) -> Change:
    return Change(
        address, "volume", action, reason, before, after, bytes=size, estimate=size is not None
    )


def full_bytes(disk: SourceDisk) -> int:
    """What a full copy reads at most: the disk's allocated bytes on its datastore when vSphere
    reports them (holes are skipped), else its capacity."""
    if disk.allocated is None:
        return disk.capacity
    return min(disk.allocated, disk.capacity)


def volume_change(
    vm: DesiredVM,
    volume: DesiredVolume,
    disk: SourceDisk,
    record: ResourceRecord | None,
    observed: ObservedVolume | None,
) -> Change:
    address = str(Address("vm", vm.name, "disk", volume.disk_key))
    after = {
        "size_gib": volume.size_gib,
        "volume_type": volume.volume_type,
        "bootable": volume.bootable,
        "disk_key": volume.disk_key,
    }
    if record is None and observed is None:
        return _volume(
            address,
            Action.CREATE,
            "new volume: full copy from a snapshot",
            None,
            after,
            size=full_bytes(disk),
        )
    if record is None:
        assert observed is not None
        return _volume(
            address,
            Action.READ,
            f"found {observed.origin} volume {observed.id} for this disk: adopt it",
            None,
            {**after, "volume_id": observed.id, "change_id": observed.change_id},
        )
    before = dict(record.attributes)
    if record.status is Status.TAINTED:
        return _volume(
            address,
            Action.REPLACE,
            "the last copy failed (tainted): copy again in full",
            before,
            after,
            size=full_bytes(disk),
        )
    if record.status is Status.IN_PROGRESS and before.get("copy") == "delta":
        return _volume(
            address,
            Action.UPDATE,
            f"redo the interrupted delta since changeId {before.get('change_id')}",
            before,
            after,
            size=_delta_estimate(before),
        )
    if record.status is Status.IN_PROGRESS:
        done = int(before.get("copied_bytes", 0))
        return _volume(
            address,
            Action.CREATE,
            f"resume the interrupted copy ({done} bytes already written)",
            before,
            after,
            size=min(full_bytes(disk), max(disk.capacity - done, 0)),
        )
    if observed is None and before.get("volume_id"):
        return _volume(
            address,
            Action.CREATE,
            f"recorded volume {before['volume_id']} no longer exists: full copy",
            before,
            after,
            size=full_bytes(disk),
        )
    copy, reason = sync_reason(vm, disk, before)
    if copy == "none":
        return _volume(address, Action.NOOP, reason, before, before)
    size = full_bytes(disk) if copy == "full" else _delta_estimate(before)
    if size is None:
        reason += " (size unknown until a first delta is measured)"
    return _volume(address, Action.UPDATE, reason, before, after, size=size)


def sync_reason(vm: DesiredVM, disk: SourceDisk, before: Mapping[str, Any]) -> tuple[str, str]:
    """How a recorded, ready volume syncs: ('none' | 'delta' | 'full', why)."""
    stored, live = before.get("change_id"), disk.change_id
    if before.get("converted"):
        return "none", "cut over"
    if not vm.source.cbt and not vm.enable_cbt:
        return "full", "CBT is off: full copy"
    if not stored:
        return "full", "no changeId recorded: full copy"
    if live is not None and epoch(live) != epoch(stored):
        return "full", f"CBT was reset (changeId epoch {epoch(stored)} → {epoch(live)}): full copy"
    if vm.mode in CUTOVER_MODES:
        return "delta", f"final delta since changeId {stored}, after the source is powered off"
    if live is not None and live == stored:
        return "none", f"in sync at changeId {stored}"
    return "delta", f"delta sync since changeId {stored}"


def _delta_estimate(before: Mapping[str, Any]) -> int | None:
    """Bytes the next delta will likely move: what the last delta moved; None (unknown, shown
    without a size) before any delta was measured."""
    last = before.get("last_sync") or {}
    return int(last.get("bytes", 0)) if last.get("kind") == "delta" else None


# -- cutover objects ------------------------------------------------------------------------------


def cutover_changes(
    vm: DesiredVM,
    records: dict[str, ResourceRecord],
    everything: Mapping[str, ResourceRecord],
    observed_server: ObservedServer | None = None,
    port_ids: frozenset[str] | None = None,
) -> list[Change]:
    out: list[Change] = []
    for port in vm.ports:
        address = str(Address("vm", vm.name, "port", port.index))
        record = records.get(address)
        after: dict[str, Any] = {
            "name": f"{vm.target_name}-nic{port.index}",
            "mac": port.mac,
            "network": port.network,
            "subnet": port.subnet,
            "fixed_ip": port.fixed_ip,
            "security_groups": list(vm.security_groups),
        }
        out.append(
            _drifted(record, port_ids, "port_id", after)
            or _simple(
                address,
                "port",
                record,
                after,
                f"port with MAC {port.mac} on {port.network}",
                differs=lambda r, a: r.attributes.get("mac") != a["mac"],
            )
        )
    wanted = {str(Address("vm", vm.name, "port", p.index)) for p in vm.ports}
    for address, record in records.items():
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
            _simple(
                address,
                "flavor",
                everything.get(address),
                {"vcpus": f.vcpus, "ram_mb": f.ram_mb},
                "flavor made for the VM",
            )
        )
    address = str(Address("vm", vm.name, "conversion"))
    out.append(
        _simple(
            address,
            "conversion",
            records.get(address),
            conversion_after(vm),
            "protect the volumes (Cinder snapshots), then convert the guest for KVM"
            if vm.convert
            else "protect the volumes (Cinder snapshots); no conversion (convert: false)",
        )
    )
    out.append(server_change(vm, records, observed_server))
    return out


def _drifted(
    record: ResourceRecord | None,
    observed: frozenset[str] | None,
    key: str,
    after: dict[str, Any],
) -> Change | None:
    """Drift: a recorded, ready object that is gone from the cloud (deleted outside ferry) is
    created again, and the plan says why — never silently."""
    if record is None or record.status is not Status.READY or observed is None:
        return None
    known = record.attributes.get(key)
    if not known or known in observed:
        return None
    kind = record.kind
    return Change(
        record.address,
        kind,
        Action.CREATE,
        f"drift: recorded {kind} {known} is gone from the cloud (deleted outside ferry): "
        f"create it again",
        dict(record.attributes),
        after,
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
    after = {
        "name": vm.target_name,
        "flavor": vm.flavor.flavor.name if vm.flavor.flavor else None,
        "volumes": [v.disk_key for v in vm.volumes],
        "ports": len(vm.ports),
        "key_pair": vm.key_pair,
    }
    record = records.get(address)
    drift = _drifted(record, frozenset({observed.id} if observed else ()), "server_id", after)
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
    return _simple(address, "server", record, after, "cutover: boot the server from the volumes")


def _simple(
    address: str,
    kind: str,
    record: ResourceRecord | None,
    after: dict[str, Any],
    reason: str,
    *,
    differs: Any = None,
) -> Change:
    if record is None or record.status is Status.IN_PROGRESS:
        return Change(address, kind, Action.CREATE, reason, None, after)
    if record.status is Status.TAINTED:
        return Change(
            address, kind, Action.REPLACE, f"tainted: {reason}", dict(record.attributes), after
        )
    if differs is not None and differs(record, after):
        return Change(
            address, kind, Action.REPLACE, f"changed: {reason}", dict(record.attributes), after
        )
    return Change(
        address, kind, Action.NOOP, "up to date", dict(record.attributes), dict(record.attributes)
    )


# -- per VM and whole plan -------------------------------------------------------------------------


def vm_changes(
    vm: DesiredVM,
    records: dict[str, ResourceRecord],
    state: State,
    observed: Mapping[tuple[str, Any], ObservedVolume],
    *,
    servers: Mapping[str, ObservedServer] | None = None,
    port_ids: frozenset[str] | None = None,
) -> list[Change]:
    disks = {d.key: d for d in vm.source.disks}
    server = (servers or {}).get(vm.source.instance_uuid or "")
    booted = _booted(vm, records, server)
    volumes = [
        _settled(c) if booted else _adopt_then_sync(vm, c)
        for c in (
            volume_change(
                vm,
                v,
                disks[v.disk_key],
                records.get(str(Address("vm", vm.name, "disk", v.disk_key))),
                observed.get((vm.source.instance_uuid or "", v.disk_key))
                or observed.get(("os-migrate", osmigrate.volume_name(vm.source.name, v.disk_key))),
            )
            for v in vm.volumes
        )
    ]
    out: list[Change] = []
    syncing = any(c.action in (Action.CREATE, Action.UPDATE, Action.REPLACE) for c in volumes)
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
    if syncing:
        out.append(
            Change(
                str(Address("vm", vm.name, "snapshot")),
                "source_snapshot",
                Action.CREATE,
                "power off the source, then one snapshot of all disks for the final sync"
                if vm.mode in CUTOVER_MODES
                else "one snapshot of all disks for this sync (removed after)",
                None,
                {"name": f"ferry-{vm.target_name}"}
                | ({"power_off": power_policy(vm)} if vm.mode in CUTOVER_MODES else {}),
            )
        )
    out += volumes
    if vm.mode in CUTOVER_MODES:
        cutover = cutover_changes(vm, records, state.resources, server, port_ids)
        out += (
            [c for c in cutover if not (booted and c.kind == "conversion")] if booted else cutover
        )
    return out


def _booted(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], server: ObservedServer | None
) -> bool:
    """A server was (maybe) booted from the volumes: a killed apply's in-progress server, or
    one found by metadata. Its volumes are never synced or converted again."""
    if vm.mode not in CUTOVER_MODES:
        return False
    record = records.get(str(Address("vm", vm.name, "server")))
    if record is not None:
        return record.status is Status.IN_PROGRESS
    return server is not None


def _settled(change: Change) -> Change:
    """A volume a server booted from: adopted as it is (found) or left alone (recorded)."""
    if change.action in (Action.READ, Action.NOOP):
        return change
    before = dict(change.before or {})
    return Change(
        change.address,
        "volume",
        Action.NOOP,
        "a server was booted from it: never synced again",
        before,
        before,
    )


def _adopt_then_sync(vm: DesiredVM, change: Change) -> Change:
    """A cutover cannot boot from a volume adopted as it is: adopt it and copy the final delta
    in the same step (a full copy when it carries no changeId)."""
    if vm.mode not in CUTOVER_MODES or change.action is not Action.READ:
        return change
    found = dict(change.after or {})
    since = found.get("change_id")
    return Change(
        change.address,
        "volume",
        Action.UPDATE,
        f"{change.reason}, then "
        + (f"the final delta since changeId {since}" if since else "a full copy (no changeId)"),
        {k: found[k] for k in ("volume_id", "change_id") if found.get(k)},
        {k: v for k, v in found.items() if k not in ("volume_id", "change_id")},
        bytes=None
        if since
        else next(full_bytes(d) for d in vm.source.disks if d.key == found["disk_key"]),
        estimate=True,
    )


def destroy_changes(
    name: str, records: dict[str, ResourceRecord], reason: str, forget_cut_over: bool
) -> list[Change]:
    """Changes for a VM whose objects go away; deletes come server first (graph orders them)."""
    server = records.get(str(Address("vm", name, "server")))
    cut_over = server is not None and server.status is Status.READY
    action = Action.FORGET if (cut_over and forget_cut_over) else Action.DELETE
    why = (
        "cut over: the server stays in service, ferry forgets it (--destroy deletes it)"
        if action is Action.FORGET
        else reason
    )
    return [
        Change(a, r.kind, action, why, dict(r.attributes), None)
        for a, r in sorted(records.items())
        if r.kind != "source_snapshot"
    ]


def family(guest_id: str | None) -> str:
    return "windows" if (guest_id or "").startswith("windows") else "linux"


def downtime(
    vm: DesiredVM,
    changes: list[Change],
    throughput: float,
    conversions: Mapping[str, float] | None = None,
) -> float | None:
    """Estimated cutover downtime: final delta / throughput + conversion (measured mean per guest
    family, else a default) + boot."""
    if vm.mode not in CUTOVER_MODES:
        return None
    delta = sum(c.bytes or 0 for c in changes if c.kind == "volume" and c.action is not Action.NOOP)
    kind = family(vm.source.guest_id)
    measured = (conversions or {}).get(kind)
    convert = (measured or CONVERSION_SECONDS[kind]) if vm.convert else 0.0
    return round(delta / throughput + convert + BOOT_SECONDS, 1)


def measured_conversions(state: State) -> dict[str, float]:
    """Mean seconds of the conversions recorded so far, per guest family."""
    runs: dict[str, list[float]] = {}
    for record in state.resources.values():
        seconds = record.attributes.get("seconds") if record.kind == "conversion" else None
        if isinstance(seconds, int | float) and seconds > 0:
            runs.setdefault(family(record.attributes.get("guest_id")), []).append(float(seconds))
    return {kind: sum(v) / len(v) for kind, v in runs.items()}


def measured_throughput(state: State) -> float:
    """Bytes/s over every recorded sync; the default before anything was copied."""
    moved = seconds = 0.0
    for record in state.resources.values():
        last = record.attributes.get("last_sync") if record.kind == "volume" else None
        if isinstance(last, dict) and last.get("seconds"):
            moved += float(last.get("bytes", 0))
            seconds += float(last["seconds"])
    return moved / seconds if seconds > 0 and moved > 0 else float(DEFAULT_THROUGHPUT)


def diff(data: DiffInput) -> tuple[list[VMPlan], list[Change]]:
    """Every VM's plan entry and every change (blocked VMs have no changes)."""
    throughput = measured_throughput(data.state)
    conversions = measured_conversions(data.state)
    by_vm = records_by_vm(data.state)
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
    budget = Budget(data.destination.quotas)
    for vm in data.desired:
        records = by_vm.get(vm.name, {})
        if data.destroy:
            vm_list = destroy_changes(vm.name, records, "--destroy", forget_cut_over=False)
            plans.append(_vm_plan(vm, vm.concerns, None))
            changes += vm_list
            continue
        vm_list = vm_changes(vm, records, data.state, observed, servers=servers, port_ids=port_ids)
        estimate = downtime(vm, vm_list, throughput, conversions)
        concerns = vm.concerns + _budget(vm, estimate)
        if not any(c.level is ConcernLevel.ERROR for c in concerns):
            concerns += budget.take(demand(vm, vm_list))
        blocked = any(c.level is ConcernLevel.ERROR for c in concerns)
        plans.append(_vm_plan(vm, concerns, estimate))
        if not blocked:
            changes += vm_list
    changes += _departed(data, by_vm)
    changes += network_changes(data, [c for c in changes if c.kind == "port"])
    if data.destroy:
        changes += [
            Change(a, "flavor", Action.DELETE, "--destroy", dict(r.attributes), None)
            for a, r in sorted(data.state.resources.items())
            if r.kind == "flavor"
        ]
    return plans, changes


def network_changes(data: DiffInput, ports: list[Change]) -> list[Change]:
    """Destination networks the spec asks ferry to create (network_map `create:`), once each,
    for the ports planned on them; recorded ones stay (deleted only by --destroy)."""
    recorded = {a: r for a, r in data.state.resources.items() if r.kind == "network"}
    if data.destroy:
        return [
            Change(a, "network", Action.DELETE, "--destroy", dict(r.attributes), None)
            for a, r in sorted(recorded.items())
        ]
    wanted: dict[str, Mapping[str, Any]] = {}
    for vm in data.desired:
        for port in vm.ports:
            if port.network and port.network_create is not None:
                wanted.setdefault(port.network, port.network_create)
    planned = {str((c.after or {}).get("network")) for c in ports if c.action is Action.CREATE}
    out = []
    for name, create in sorted(wanted.items()):
        after = {
            "name": name,
            "cidr": create["cidr"],
            "gateway": create.get("gateway"),
            "dhcp": create.get("dhcp", True),
        }
        change = _network(
            recorded.get(str(Address("network", name))),
            after,
            exists=name in data.destination.networks,
            needed=name in planned,
        )
        if change is not None:
            out.append(change)
    return out


def _network(
    record: ResourceRecord | None, after: dict[str, Any], *, exists: bool, needed: bool
) -> Change | None:
    name = str(after["name"])
    address = str(Address("network", name))
    if record is not None and record.status is Status.READY:
        if exists:
            return Change(address, "network", Action.NOOP, "up to date", after, after)
        reason = (
            f"drift: recorded network {name} is gone from the cloud (deleted outside ferry): "
            "create it again"
        )
        return Change(address, "network", Action.CREATE, reason, dict(record.attributes), after)
    if exists or not needed:
        return None
    reason = f"network {name} does not exist: create it with subnet {after['cidr']}"
    return Change(address, "network", Action.CREATE, reason, None, after)


def _budget(vm: DesiredVM, estimate: float | None) -> tuple[Concern, ...]:
    if estimate is None or vm.max_downtime is None or estimate <= vm.max_downtime:
        return ()
    return (
        Concern(
            ConcernLevel.ERROR,
            "over-downtime-budget",
            f"estimated cutover downtime {estimate:.0f} s exceeds max_downtime {vm.max_downtime} s",
        ),
    )


def _vm_plan(vm: DesiredVM, concerns: tuple[Concern, ...], estimate: float | None) -> VMPlan:
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
    )


def _departed(data: DiffInput, by_vm: dict[str, dict[str, ResourceRecord]]) -> list[Change]:
    """Recorded VMs that are no longer in the spec."""
    present = {vm.name for vm in data.desired}
    out: list[Change] = []
    for name in sorted(by_vm):
        if name not in present:
            out += destroy_changes(
                name,
                by_vm[name],
                "no longer in the spec: delete ferry's objects (never the source)",
                forget_cut_over=True,
            )
    return out
