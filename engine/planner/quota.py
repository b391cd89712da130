"""Quota concerns: what a plan would create, against what the destination project has left.

VMs take their share in spec order: the first VM that would not fit gets an error concern (it is
blocked, so apply never stops half-way through it on a quota error) and takes nothing; the VMs
after it may still fit. Unknown quotas (the cloud did not tell) are not checked; -1 is unlimited.
A network's free IPv4 addresses are taken the same way: a port created where its network's
allocation pools have no address left fails (neutron's IpAddressGenerationFailure).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import Destination, Quota
from engine.model.plan import Action, Change

CREATES = (Action.CREATE, Action.REPLACE)
WHAT = {
    "volumes": "volumes",
    "gigabytes": "GiB of volumes and snapshots",
    "snapshots": "volume snapshots",
    "ports": "ports",
    "instances": "servers",
    "cores": "vCPUs",
    "ram": "MiB of RAM",
    "networks": "networks",
    "subnets": "subnets",
    "per_volume_gigabytes": "GiB in one volume (per_volume_gigabytes)",
}
PER_VOLUME = "per_volume_gigabytes"  # Cinder's cap on one volume's size (GiB), not a usage
ADDRESSES = "addresses:"  # + a network's name or id: ports taking a free address there
NETWORK = "network:"  # + the name of a network ferry creates (network_map create:) for a port


def demand(vm: DesiredVM, changes: Sequence[Change]) -> dict[str, int]:
    """What this VM's changes would add to the project's usage, and per network the ports that
    take a free address there (`addresses:<network as the spec names it>`). A conversion first
    protects every volume with a Cinder snapshot, which counts against snapshots and gigabytes
    (cinder's default) — after the source's power-off."""
    volumes = [c for c in changes if c.kind == "volume" and c.action in CREATES]
    servers = [c for c in changes if c.kind == "server" and c.action in CREATES]
    ports = [c for c in changes if c.kind == "port" and c.action in CREATES]
    protected = (
        vm.volumes if any(c.kind == "conversion" and c.action in CREATES for c in changes) else ()
    )
    flavor = vm.flavor.flavor
    cores = flavor.vcpus if flavor else vm.source.cpus or 0
    ram = flavor.ram_mb if flavor else vm.source.memory_mb or 0
    after_off = after_power_off(len(servers), cores, ram, [v.size_gib for v in protected])
    typed = volume_demand(
        [typed_size(c) for c in volumes], [(v.volume_type, v.size_gib) for v in protected]
    )
    return (
        {
            "volumes": len(volumes),
            "gigabytes": sum(int((c.after or {}).get("size_gib") or 0) for c in volumes)
            + after_off["gigabytes"],
            "snapshots": after_off["snapshots"],
            "ports": len(ports),
            "instances": after_off["instances"],
            "cores": after_off["cores"],
            "ram": after_off["ram"],
        }
        | typed
        | _addresses(ports)
        | _networks(vm, ports)
    )


def typed_size(change: Change) -> tuple[object, int]:
    """A volume change's (volume type, GiB), as volume_demand counts it."""
    after = change.after or change.before or {}
    return after.get("volume_type"), int(after.get("size_gib") or 0)


def volume_demand(
    created: Sequence[tuple[object, int]], protected: Sequence[tuple[object, int]] = ()
) -> dict[str, int]:
    """Cinder's per-type quotas the new volumes (`created`: (volume type, GiB) each) and the
    protection snapshots (`protected`: of volumes of (type, GiB)) take, `volumes_<type>`,
    `gigabytes_<type>` (volumes and snapshots) and `snapshots_<type>` (cinder's quota keys,
    os-quota-sets), and the largest new volume against `per_volume_gigabytes` (break-it 12j
    F1: a typed quota full was found only by the volume create, after the power-off). A volume
    without a type (the cloud's default, not named here) counts in the project's totals only."""
    out: dict[str, int] = {}

    def add(key: str, n: int) -> None:
        out[key] = out.get(key, 0) + n

    for volume_type, gib in created:
        if volume_type:
            add(f"volumes_{volume_type}", 1)
            add(f"gigabytes_{volume_type}", gib)
    for volume_type, gib in protected:
        if volume_type:
            add(f"snapshots_{volume_type}", 1)
            add(f"gigabytes_{volume_type}", gib)
    largest = max((gib for _, gib in created), default=0)
    return out | ({PER_VOLUME: largest} if largest else {})


def what(key: str) -> str:
    """A quota key for people: 'GiB of volumes and snapshots', 'volumes of type fast'..."""
    if key in WHAT:
        return WHAT[key]
    kind, _, volume_type = key.partition("_")
    return {
        "volumes": f"volumes of type {volume_type}",
        "gigabytes": f"GiB of type-{volume_type} volumes and snapshots",
        "snapshots": f"snapshots of type-{volume_type} volumes",
    }.get(kind, key)


def after_power_off(
    servers: int, cores: int, ram_mb: int, protected_gib: Sequence[int]
) -> dict[str, int]:
    """What a cutover adds to the project's usage from its source's power-off on: a Cinder
    snapshot per volume it protects (`protected_gib`: their sizes in GiB) and its server(s) of
    `cores` vCPUs and `ram_mb` MiB each. Part of `demand`; apply checks it again, against the
    quotas read then, before it powers the source off (a saved plan applied after the quota
    filled up: break-it 12d item 5)."""
    return {
        "gigabytes": sum(protected_gib),
        "snapshots": len(protected_gib),
        "instances": servers,
        "cores": cores * servers,
        "ram": ram_mb * servers,
    }


def _networks(vm: DesiredVM, ports: Sequence[Change]) -> dict[str, int]:
    """The networks ferry would create (with their subnet) for this VM's new ports; the Budget
    counts each once, for the first VM that needs it, and not when it exists."""
    planned = {str((c.after or {}).get("network")) for c in ports}
    return {
        NETWORK + p.network: 1
        for p in vm.ports
        if p.network and p.network_create is not None and p.network in planned
    }


def _addresses(ports: Sequence[Change]) -> dict[str, int]:
    out: dict[str, int] = {}
    for port in ports:
        after = port.after or {}
        if after.get("network") and not after.get("fixed_ip"):  # a fixed IP is checked alone
            key = ADDRESSES + str(after["network"])
            out[key] = out.get(key, 0) + 1
    return out


def free_addresses(destination: Destination) -> dict[str, Quota]:
    """`addresses:<network id>` → the size of the network's IPv4 allocation pools and how many
    of their addresses the ports read hold. Networks without IPv4 pools are left out (not
    checked). A member user does not see other projects' ports on a shared network: fewer
    addresses then count as used than are."""
    held: dict[str, list[str]] = {}
    for port in destination.ports:
        held.setdefault(port.network or "", []).extend(ip for ip in port.ips if "." in ip)
    out = {}
    for network_id in destination.network_names:
        pools = [
            (ipaddress.IPv4Address(first), ipaddress.IPv4Address(last))
            for s in destination.subnets
            if s.network == network_id
            for first, last in s.pools
            if "." in first
        ]
        if pools:
            size = sum(int(last) - int(first) + 1 for first, last in pools)
            used = sum(
                any(first <= ipaddress.IPv4Address(ip) <= last for first, last in pools)
                for ip in held.get(network_id, ())
            )
            out[ADDRESSES + network_id] = Quota(size, used)
    return out


class Budget:
    """What is left of each quota, and of each network's addresses, taken VM by VM."""

    def __init__(self, quotas: Mapping[str, Quota], destination: Destination | None = None) -> None:
        found = {**quotas, **(free_addresses(destination) if destination else {})}
        self.left = {k: q.limit - q.used for k, q in found.items() if q.limit >= 0}
        names = list(destination.network_names.items()) if destination else []
        unique = [n for _, n in names]
        self.ids = {n: i for i, n in names if unique.count(n) == 1}  # network name → id
        self.names = dict(names)
        self.made: set[str] = set(unique)  # networks that exist or an earlier VM creates

    def take(self, needs: Mapping[str, int]) -> tuple[Concern, ...]:
        needs = self._by_id(needs)
        short = [k for k, n in needs.items() if n and k in self.left and n > self.left[k]]
        if short:
            return self._quota([k for k in short if not k.startswith(ADDRESSES)], needs) + tuple(
                self._full(k, needs[k]) for k in short if k.startswith(ADDRESSES)
            )
        for key, n in needs.items():
            if key in self.left and key != PER_VOLUME:  # a cap per volume, not a usage
                self.left[key] -= n
        self.made |= {k[len(NETWORK) :] for k in needs if k.startswith(NETWORK)}
        return ()

    def _by_id(self, needs: Mapping[str, int]) -> dict[str, int]:
        """A network's ports counted under its id, whether the spec names it or its id; a network
        ferry creates as one network and one subnet, unless it exists or is counted already."""
        out: dict[str, int] = {}
        for key, n in needs.items():
            if key.startswith(NETWORK):
                new = key[len(NETWORK) :] not in self.made
                out |= {key: n, "networks": out.get("networks", 0) + new}
                out["subnets"] = out.get("subnets", 0) + new
                continue
            ref = key[len(ADDRESSES) :]
            as_id = ADDRESSES + self.ids.get(ref, ref) if key.startswith(ADDRESSES) else key
            out[as_id] = out.get(as_id, 0) + n
        return out

    def _quota(self, short: list[str], needs: Mapping[str, int]) -> tuple[Concern, ...]:
        if not short:
            return ()
        detail = "; ".join(
            f"{what(k)}: needs {needs[k]}, {max(self.left[k], 0)} "
            f"{'allowed' if k == PER_VOLUME else 'left'}"
            for k in short
        )
        return (
            Concern(
                ConcernLevel.ERROR,
                "quota",
                f"the destination project's quota is too small for this VM ({detail}, after "
                "the VMs listed before it): raise the quota (openstack quota set) or migrate "
                "this VM later",
            ),
        )

    def _full(self, key: str, needed: int) -> Concern:
        network_id = key[len(ADDRESSES) :]
        name = self.names.get(network_id) or network_id
        return Concern(
            ConcernLevel.ERROR,
            "network-full",
            f"network {name!r} has {max(self.left[key], 0)} free IPv4 address(es) in its "
            f"subnets' allocation pools (after the VMs listed before it) and this VM needs "
            f"{needed} port(s) there: widen an allocation pool, free addresses, or map the NICs "
            "to another network",
        )
