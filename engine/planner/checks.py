"""Destination checks (pure): what a cutover needs from the destination cloud that plan can see,
so that nothing after the source's power-off fails on it.

Each problem is one error concern on the VM it blocks, in one line: what, where, what to do.
A cutover VM (mode cutover or cold) needs its source MACs (and fixed IPs) free on their networks,
two selected VMs never share a MAC on one network, and the subnets, security groups, key pair and
flavor it names must exist (or ferry must be allowed to create the flavor). A replicate VM needs
volume types only (desired.volumes_for checks them, with the networks and flavors; quota.py the
quotas). The conversion hosts the spec names are checked once, as spec diagnostics: every apply
needs them before it touches anything.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.addresses import Address
from engine.diagnostics import Diagnostic, Severity
from engine.model.desired import Concern, ConcernLevel, DesiredPort, DesiredVM
from engine.model.observed import Destination, ObservedPort, ObservedSubnet
from engine.model.plan import Action, Change
from engine.model.state import State
from engine.planner.diff.common import CUTOVER_MODES
from engine.planner.placement import has_broker

ADMIN_ROLE = "admin"  # nova's default policy for creating flavors (context_is_admin)


def mapped_networks(spec: Mapping[str, Any]) -> set[str]:
    """The destination networks (names or ids) the spec maps NICs to: defaults' and every VM's
    network_map, and nics[].network. Refresh reads every port on them."""
    settings = [spec.get("defaults") or {}, *(spec.get("vms") or [])]
    found = {
        str(target["network"])
        for s in settings
        for target in (s.get("network_map") or {}).values()
        if target.get("network")
    }
    return found | {
        str(n["network"]) for s in settings for n in s.get("nics") or () if n.get("network")
    }


@dataclass(frozen=True)
class Lookup:
    """The destination and state, indexed once for all VMs."""

    networks: Mapping[str, tuple[str, ...]]  # a network's name or id → ids of networks so named
    ports: Mapping[str, tuple[ObservedPort, ...]]  # network id → its ports
    recorded: Mapping[str, frozenset[str]]  # VM address name → port ids the state records
    macs: Mapping[tuple[str, str], frozenset[str]]  # (MAC, network) → selected VMs' UUIDs


def lookup(vms: Iterable[DesiredVM], destination: Destination, state: State) -> Lookup:
    networks: dict[str, list[str]] = defaultdict(list)
    for network_id, name in sorted(destination.network_names.items()):
        networks[network_id].append(network_id)
        if name and name != network_id:
            networks[name].append(network_id)
    ports: dict[str, list[ObservedPort]] = defaultdict(list)
    for port in destination.ports:
        ports[port.network or ""].append(port)
    found = Lookup(
        {k: tuple(v) for k, v in networks.items()},
        {k: tuple(v) for k, v in ports.items()},
        recorded_ports(state),
        {},
    )
    return replace(found, macs=shared_by(vms, found))


def destination_checks(
    vms: Iterable[DesiredVM], destination: Destination, state: State
) -> list[DesiredVM]:
    """The VMs with the destination's concerns added (cutover VMs only: a replicate VM creates
    no ports, flavor or server)."""
    vms = list(vms)
    seen = lookup(vms, destination, state)
    shared = shared_macs(vms, seen)
    out = []
    for vm in vms:
        found = list(shared.get(vm.name, ()))
        if vm.mode in CUTOVER_MODES:
            found += port_concerns(vm, destination, seen)
            found += security_group_concerns(vm, destination)
            found += key_pair_concerns(vm, destination)
            found += flavor_concerns(vm, destination)
        out.append(replace(vm, concerns=vm.concerns + tuple(found)) if found else vm)
    return out


# -- networks -------------------------------------------------------------------------------------


def recorded_ports(state: State) -> Mapping[str, frozenset[str]]:
    """VM address name → port ids the state records for it (ferry made them, tagged or not)."""
    out: dict[str, set[str]] = defaultdict(set)
    for address, record in state.resources.items():
        if record.kind == "port" and record.attributes.get("port_id"):
            out[Address.parse(address).name].add(str(record.attributes["port_id"]))
    return {name: frozenset(ids) for name, ids in out.items()}


def _key(port: DesiredPort, seen: Lookup) -> tuple[str, str]:
    """(MAC, where the port lands): its network's id when the reference names exactly one, else
    the reference."""
    ids = seen.networks.get(port.network or "", ())
    return port.mac.lower(), ids[0] if len(ids) == 1 else str(port.network)


def shared_by(vms: Iterable[DesiredVM], seen: Lookup) -> Mapping[tuple[str, str], frozenset[str]]:
    """(MAC, network) → instance UUIDs of the selected VMs with a NIC of that MAC there."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for vm in vms:
        for port in vm.ports:
            if port.mac and port.network:
                out[_key(port, seen)].add(vm.source.instance_uuid or vm.source.moref)
    return {key: frozenset(uuids) for key, uuids in out.items()}


def shared_macs(vms: list[DesiredVM], seen: Lookup) -> Mapping[str, tuple[Concern, ...]]:
    """Two selected VMs with one MAC on one destination network: each gets a concern naming the
    others (an error for a cutover VM, whose port could not be made; a warning for a replicate
    VM, whose cutover it will block)."""
    holders: dict[tuple[str, str], list[tuple[DesiredVM, DesiredPort]]] = defaultdict(list)
    for vm in vms:
        for port in vm.ports:
            if port.mac and port.network:
                holders[_key(port, seen)].append((vm, port))
    out: dict[str, list[Concern]] = defaultdict(list)
    for (mac, _), found in holders.items():
        if len({vm.name for vm, _ in found}) < 2:
            continue
        for vm, port in found:
            others = ", ".join(sorted({o.name for o, _ in found if o.name != vm.name}))
            level = ConcernLevel.ERROR if vm.mode in CUTOVER_MODES else ConcernLevel.WARNING
            message = (
                f"NIC {port.index} (MAC {mac}) shares its MAC with {others} (also selected) on "
                f"network {port.network!r}: a network holds one port per MAC; give one of the "
                "VMs another MAC or map it to another network"
            )
            out[vm.name].append(Concern(level, "shared-mac", message))
    return {name: tuple(concerns) for name, concerns in out.items()}


def port_concerns(vm: DesiredVM, destination: Destination, seen: Lookup) -> list[Concern]:
    """Per port of a cutover VM: its network named once, its MAC and fixed IP not held by a port
    ferry did not make for this VM, its subnet on that network and holding its fixed IP."""
    uuid = vm.source.instance_uuid or ""
    recorded = seen.recorded.get(vm.name, frozenset())
    out: list[Concern] = []
    for port in vm.ports:
        ids = seen.networks.get(port.network or "", ())
        if not ids:
            continue  # unmapped or missing (desired.ports_for says so), or ferry creates it
        if len(ids) > 1:
            out.append(_ambiguous(port, ids))
            continue
        on_network = seen.ports.get(ids[0], ())
        foreign = [p for p in on_network if not _ours(p, uuid, port.index, recorded)]
        others = seen.macs.get(_key(port, seen), frozenset()) - {uuid}
        out += _mac_in_use(port, uuid, foreign, destination, others)
        out += _subnet_concerns(port, ids[0], foreign, destination, uuid)
    return out


def _ours(port: ObservedPort, uuid: str, index: int, recorded: frozenset[str]) -> bool:
    """The port ferry made for this NIC of this VM: recorded in the state, or described so (what
    the executor reuses; a port of this VM for another NIC it refuses)."""
    return port.id in recorded or (port.vm_uuid == uuid and port.nic == index)


def _ambiguous(port: DesiredPort, ids: tuple[str, ...]) -> Concern:
    return _error(
        "ambiguous-network",
        f"network {port.network!r} (NIC {port.index}) names {len(ids)} networks "
        f"({', '.join(ids)}): map the NIC to the network's id",
    )


def _mac_in_use(
    port: DesiredPort,
    uuid: str,
    foreign: list[ObservedPort],
    destination: Destination,
    others: frozenset[str],
) -> list[Concern]:
    """The first port holding this NIC's MAC on its network; one made for another selected VM
    with this MAC on this network (`others`) is left to the shared-mac concern."""
    mac = port.mac.lower()
    holders = [p for p in foreign if p.mac == mac and p.vm_uuid not in others]
    return [
        _error(
            "mac-in-use",
            f"NIC {port.index}: MAC {mac} is already used on network "
            f"{_network_name(p, destination)!r} by port {p.id} ({p.name or 'unnamed'}"
            f"{_made_for(p, uuid)}: delete that port, or map the NIC to another network",
        )
        for p in holders[:1]
    ]


def _made_for(port: ObservedPort, uuid: str) -> str:
    """Whose the port is, closing the parenthesis after its name."""
    if port.vm_uuid == uuid:
        return f", made by ferry for this VM's NIC {port.nic}), not for this NIC"
    if port.vm_uuid:
        return f", made by ferry for VM {port.vm_uuid}), which ferry did not create for this VM"
    used = f", used by {port.owner}" if port.owner else ""
    return f"{used}), which ferry did not create for this VM"


def _network_name(port: ObservedPort, destination: Destination) -> str:
    return destination.network_names.get(port.network or "") or str(port.network)


def _subnet_concerns(
    port: DesiredPort,
    network_id: str,
    foreign: list[ObservedPort],
    destination: Destination,
    uuid: str,
) -> list[Concern]:
    subnets = [s for s in destination.subnets if s.network == network_id]
    if port.subnet is not None:
        subnets = [s for s in subnets if port.subnet in (s.id, s.name)]
        if not subnets:
            return [
                _error(
                    "missing-subnet",
                    f"subnet {port.subnet!r} (NIC {port.index}) is not on network "
                    f"{port.network!r}: name one of its subnets in network_map (or nics[].subnet)",
                )
            ]
    if port.fixed_ip is None:
        return []
    return _fixed_ip_concerns(port, subnets, foreign, uuid)


def _fixed_ip_concerns(
    port: DesiredPort, subnets: list[ObservedSubnet], foreign: list[ObservedPort], uuid: str
) -> list[Concern]:
    where = f"fixed IP {port.fixed_ip} (NIC {port.index})"
    try:
        ip = ipaddress.ip_address(str(port.fixed_ip))
    except ValueError:
        return [_error("bad-fixed-ip", f"{where} is not an IP address: fix nics[].ip")]
    if not any(ip in ipaddress.ip_network(s.cidr, strict=False) for s in subnets):
        cidrs = ", ".join(s.cidr for s in subnets) or "none"
        return [
            _error(
                "ip-outside-subnet",
                f"{where} is outside the subnets of network {port.network!r} ({cidrs}): "
                "fix nics[].ip or nics[].subnet",
            )
        ]
    holder = next((p for p in foreign if str(ip) in p.ips), None)
    if holder is None:
        return []
    return [
        _error(
            "ip-in-use",
            f"{where} is already used on network {port.network!r} by port {holder.id} "
            f"({holder.name or 'unnamed'}{_made_for(holder, uuid)}: free it or give the NIC "
            "another IP",
        )
    ]


# -- security groups, key pair, flavor ------------------------------------------------------------


def security_group_concerns(vm: DesiredVM, destination: Destination) -> list[Concern]:
    return [
        _error(
            "missing-security-group",
            f"security group {name!r} does not exist in the destination project: create it or "
            "take it out of security_groups",
        )
        for name in vm.security_groups
        if name not in destination.security_groups
    ]


def key_pair_concerns(vm: DesiredVM, destination: Destination) -> list[Concern]:
    return missing_key_pair(vm.key_pair, destination.key_pairs)


def missing_key_pair(key_pair: str | None, known: Collection[str] | None) -> list[Concern]:
    """An error concern when `key_pair` is not among the user's key pairs (`known`; None: nova
    did not let the user list them, not checked). Apply checks it again before a power-off."""
    if key_pair is None or known is None or key_pair in known:
        return []
    return [
        _error(
            "missing-key-pair",
            f"key pair {key_pair!r} does not exist for the cloud's user (nova key pairs "
            "belong to a user): import it (openstack keypair create --public-key FILE) or "
            "take key_pair out",
        )
    ]


def flavor_concerns(vm: DesiredVM, destination: Destination) -> list[Concern]:
    """`flavor: create`: a flavor of that name is reused when big enough, else refused; a new
    one needs the admin role (nova's default policy), read from the user's token."""
    wanted = vm.flavor.flavor
    if not vm.flavor.create or wanted is None:
        return []
    found = next((f for f in destination.flavors if f.name == wanted.name), None)
    if found is not None and (
        found.vcpus < wanted.vcpus or found.ram_mb < wanted.ram_mb or found.disk < wanted.disk
    ):
        has = f"{found.vcpus} vCPU / {found.ram_mb} MiB"
        needs = f"{wanted.vcpus} vCPU / {wanted.ram_mb} MiB"
        if wanted.disk:  # boot: image: its root disk holds the boot disk
            has, needs = f"{has} / {found.disk} GiB disk", f"{needs} / {wanted.disk} GiB boot disk"
        return [
            _error(
                "flavor-too-small",
                f"flavor {found.name!r} exists with {has}, smaller than the VM ({needs}): "
                "delete it, or name a flavor (flavor: {name: ...})",
            )
        ]
    roles = destination.roles
    if found is not None or roles is None or ADMIN_ROLE in roles:
        return []
    return [
        _error(
            "flavor-create-forbidden",
            f"flavor: create needs the admin role to create flavor {wanted.name!r}, and the "
            f"cloud's user has the roles {', '.join(sorted(roles)) or '(none)'}: use flavor: "
            "auto or {name: ...}, have an admin create it, or plan with an admin cloud",
        )
    ]


# -- conversion hosts (spec diagnostics) ----------------------------------------------------------


def host_diagnostics(spec: Mapping[str, Any], destination: Destination) -> list[Diagnostic]:
    """A conversion host ferry boots whose flavor, network or key pair does not exist, and one
    error when the VMs have no host to be written on: no host of the spec is a server in the
    cloud (nor booted by ferry), or, without execution.broker (every volume is written on the
    first host), the first is not. Other hosts that are gone are placement's warnings
    (`placement.gone_lines`): the VMs are placed on the hosts left."""
    hosts = spec.get("conversion_hosts") or []
    out = _no_host(spec, hosts, gone_hosts(spec, destination))
    for i, host in enumerate(hosts):
        if host.get("create"):
            out += _host_create_diagnostics(i, str(host["name"]), host["create"], destination)
    return out


def _no_host(
    spec: Mapping[str, Any], hosts: list[Mapping[str, Any]], gone: frozenset[str]
) -> list[Diagnostic]:
    """host_diagnostics' one error when the VMs have no host to be written on."""
    fix = "name an existing server, or add create: so ferry boots it"
    if hosts and len(gone) == len(hosts) > 1:
        names = ", ".join(repr(str(h["name"])) for h in hosts)
        summary = f"no conversion host of the spec is a server in the destination project ({names})"
        return [_diagnostic(f"{summary}: {fix}", ("conversion_hosts",))]
    if hosts and str(hosts[0]["name"]) in gone and (len(hosts) == 1 or not has_broker(spec)):
        alone = "" if len(hosts) == 1 else " (without execution.broker it writes every volume)"
        summary = (
            f"conversion host {str(hosts[0]['name'])!r} is not a server in the destination "
            f"project{alone}: {fix}"
        )
        return [_diagnostic(summary, ("conversion_hosts", 0, "name"))]
    return []


def gone_hosts(spec: Mapping[str, Any], destination: Destination) -> frozenset[str]:
    """The spec's conversion hosts that are no server in the cloud (by name or id) and that
    ferry is not asked to boot (`create:`)."""
    known = destination.server_names | destination.server_ids
    return frozenset(
        str(h["name"])
        for h in spec.get("conversion_hosts") or []
        if not h.get("create") and str(h["name"]) not in known
    )


def _host_create_diagnostics(
    i: int, name: str, create: Mapping[str, Any], destination: Destination
) -> list[Diagnostic]:
    if name in destination.server_names:
        return []  # it exists: used as it is
    problems = []
    if create["flavor"] not in {x for f in destination.flavors for x in (f.name, f.id)}:
        problems.append(("flavor", f"flavor {create['flavor']!r} does not exist"))
    if not any(str(create["network"]) in (i, n) for i, n in destination.network_names.items()):
        problems.append(("network", f"network {create['network']!r} does not exist"))
    known = destination.key_pairs
    if create.get("key_pair") and known is not None and create["key_pair"] not in known:
        problems.append(("key_pair", f"key pair {create['key_pair']!r} does not exist"))
    return [
        _diagnostic(
            f"conversion host {name!r} cannot be booted: {what}",
            ("conversion_hosts", i, "create", key),
        )
        for key, what in problems
    ]


def _diagnostic(summary: str, path: tuple[str | int, ...]) -> Diagnostic:
    return Diagnostic(Severity.ERROR, summary, path=path)


def _error(code: str, message: str) -> Concern:
    return Concern(ConcernLevel.ERROR, code, message)


def blocked_volume_deletes(changes: Sequence[Change], destination: Destination) -> list[Diagnostic]:
    """A warning per volume the plan deletes that has Cinder snapshots not ferry's (a backup
    tool's, an operator's: Destination.foreign_snapshots): Cinder refuses to delete a volume
    with snapshots, so that delete fails at apply until they are deleted (break-it 12i: the
    destroy said so only when it failed). None when the snapshots were not read."""
    foreign = destination.foreign_snapshots or {}
    out = []
    for change in changes:
        volume_id = str((change.before or {}).get("volume_id") or "")
        if (
            change.kind != "volume"
            or change.action is not Action.DELETE
            or volume_id not in foreign
        ):
            continue
        out.append(
            Diagnostic(
                Severity.WARNING,
                f"{change.address}: volume {volume_id} has snapshot(s) taken outside ferry: "
                f"{', '.join(foreign[volume_id])}; Cinder deletes no volume with snapshots: "
                "delete them (openstack volume snapshot delete) before the apply, or its "
                "delete fails",
            )
        )
    return out
