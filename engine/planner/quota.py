"""Quota concerns: what a plan would create, against what the destination project has left.

VMs take their share in spec order: the first VM that would not fit gets an error concern (it is
blocked, so apply never stops half-way through it on a quota error) and takes nothing; the VMs
after it may still fit. Unknown quotas (the cloud did not tell) are not checked; -1 is unlimited.
A network's free IPv4 addresses are taken the same way: a port created where its network's
allocation pools have no address left fails (neutron's IpAddressGenerationFailure).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import Destination, ObservedVolume, Quota
from engine.model.plan import Action, Change

CREATES = (Action.CREATE, Action.REPLACE)
SYNCS = (Action.CREATE, Action.REPLACE, Action.UPDATE)  # its volume made, or extended, first
# the changes that make or hold a Cinder volume: a disk's (output: volume) and one made from a
# disk's image at an image-mode cutover (after the power-off; no protection snapshot)
VOLUME_KINDS = ("volume", "image_volume")
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


class Held(NamedTuple):
    """A volume Cinder holds: its volume type's name (None: none read) and its size (GiB)."""

    volume_type: str | None
    size_gib: int


def demand(
    vm: DesiredVM, changes: Sequence[Change], cloud: Destination | None = None
) -> dict[str, int]:
    """What this VM's changes would add to the project's usage, and per network the ports that
    take a free address there (`addresses:<network as the spec names it>`). A conversion first
    protects every volume with a Cinder snapshot, which counts against snapshots and gigabytes
    (cinder's default) — after the source's power-off. The volumes count by their actual type
    and size (`volume_demand`): `cloud`'s volumes (refresh) and default volume type."""
    servers = [c for c in changes if c.kind == "server" and c.action in CREATES]
    ports = [c for c in changes if c.kind == "port" and c.action in CREATES]
    protects = any(c.kind == "conversion" and c.action in CREATES for c in changes)
    flavor = vm.flavor.flavor
    cores = flavor.vcpus if flavor else vm.source.cpus or 0
    ram = flavor.ram_mb if flavor else vm.source.memory_mb or 0
    volumes = [c for c in changes if c.kind in VOLUME_KINDS]
    held = held_volumes(volumes, cloud.volumes if cloud else ())
    default_type = cloud.default_volume_type if cloud else None
    cinder = volume_demand(volumes, held, protects=protects, default_type=default_type)
    totals = {k: cinder.pop(k, 0) for k in ("volumes", "gigabytes", "snapshots")}
    return (
        totals
        | {"ports": len(ports)}
        | after_power_off(len(servers), cores, ram)
        | cinder
        | _addresses(ports)
        | _networks(vm, ports)
    )


def volume_id(change: Change) -> str:
    """The volume a volume change's record (`before`) or adoption (`after`) names, "" none."""
    return str(
        (change.before or {}).get("volume_id") or (change.after or {}).get("volume_id") or ""
    )


def held_volumes(changes: Iterable[Change], found: Iterable[ObservedVolume]) -> dict[str, Held]:
    """`volume_demand`'s `held` from what refresh read (`found`): by change address, the volume
    its record or adoption names, when Cinder has it."""
    by_id = {v.id: Held(v.volume_type, v.size_gib) for v in found}
    return {c.address: by_id[volume_id(c)] for c in changes if volume_id(c) in by_id}


def volume_demand(
    changes: Iterable[Change],
    held: Mapping[str, Held],
    *,
    protects: bool,
    default_type: str | None,
) -> dict[str, int]:
    """What one VM's volume changes add to Cinder's quotas, as Cinder counts them (its keys,
    os-quota-sets: `volumes`, `gigabytes`, `snapshots`, and per volume type `volumes_<type>`,
    `gigabytes_<type>` (volumes and snapshots), `snapshots_<type>`), and the largest volume
    made or extended against `per_volume_gigabytes` (break-it 12j F1). `held`: by change
    address, the volume Cinder holds for the disk now (the planner's from refresh, apply's read
    before the power-off).
    - A change that syncs a disk no volume is held for creates one of the change's size and
      type (`after`).
    - One that syncs into a held volume smaller than its planned size extends it first (Cinder
      extend): the GiB added count in `gigabytes` and `gigabytes_<its type>`, its new size
      against per_volume_gigabytes (break-it 12k F4: not counted, the extend and then the
      protection snapshot failed 413 after the power-off).
    - `protects` (a conversion): a snapshot of each volume (not of a DELETE or FORGET), of its
      size after the plan.
    - An image-mode cutover's volume made from a disk's image (`image_volume`, after the
      power-off) counts as a new volume of its size and type; it is never protected.
    A held volume counts in its own type's quotas, not the one the spec maps its disk to now
    (ferry does not retype: break-it 12k F6); a volume without a type in `default_type`'s
    (what Cinder gives it, e.g. `__DEFAULT__`: break-it 12k F3), None: the totals only."""
    out: dict[str, int] = {"volumes": 0, "gigabytes": 0, "snapshots": 0}  # totals first
    largest = 0
    for change in changes:
        if change.kind not in VOLUME_KINDS or change.action in (Action.DELETE, Action.FORGET):
            continue
        typed, grows, size, new = _counted(change, held.get(change.address), default_type)
        used = [("volumes", int(new)), ("gigabytes", grows)]
        protected = protects and change.kind == "volume"  # image mode takes no snapshot
        used += [("snapshots", 1), ("gigabytes", size)] if protected else []
        largest = max(largest, size if grows else 0)
        for key, n in used:
            for counted in (key, f"{key}_{typed}") if typed else (key,):
                out[counted] = out.get(counted, 0) + n
    out = {k: n for k, n in out.items() if n}
    return out | ({PER_VOLUME: largest} if largest else {})


def _counted(
    change: Change, there: Held | None, default_type: str | None
) -> tuple[str, int, int, bool]:
    """A volume change as Cinder counts it: (the volume's type, "" none known; the GiB it adds:
    a new volume's size or an extend's growth; its size after the plan; whether it is new)."""
    after = change.after or change.before or {}
    planned = int(after.get("size_gib") or 0)
    syncs = change.action in SYNCS
    if there is None:
        typed = str(after.get("volume_type") or default_type or "")
        return typed, planned if syncs else 0, planned, syncs
    typed = str(there.volume_type or default_type or "")
    if not syncs:
        return typed, 0, there.size_gib, False
    return typed, max(planned - there.size_gib, 0), max(planned, there.size_gib), False


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


def after_power_off(servers: int, cores: int, ram_mb: int) -> dict[str, int]:
    """What a cutover's server(s) of `cores` vCPUs and `ram_mb` MiB each add to the project's
    usage, from its source's power-off on (its volumes, protection snapshots and extends:
    `volume_demand`). Part of `demand`; apply checks it again, against the quotas read then,
    before it powers the source off (a saved plan applied after the quota filled up: break-it
    12d item 5)."""
    return {"instances": servers, "cores": cores * servers, "ram": ram_mb * servers}


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

    def spend(self, needs: Mapping[str, int]) -> None:
        """Take `needs` whether or not they fit (what other steps of an apply will take
        anyway: left may go below 0)."""
        for key, n in self._by_id(needs).items():
            if key in self.left and key != PER_VOLUME:
                self.left[key] -= n

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
        # a cap on one volume's size is not shared: no VM before this one takes any of it
        after = "" if short == [PER_VOLUME] else ", after the VMs listed before it"
        return (
            Concern(
                ConcernLevel.ERROR,
                "quota",
                f"the destination project's quota is too small for this VM ({detail}{after}): "
                "raise the quota (openstack quota set) or migrate this VM later",
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
