"""Placement (issue 14): which conversion host writes each VM's volumes. Pure, like the rest
of the planner.

`checks` adds the concerns known before the diff (they block the VM, so none of its changes is
planned): more disks than a host holds attached at once, no host in its availability zone, a pin
to a host of another zone. `place` then assigns every unblocked VM a host from the bytes the
diff plans to copy, and sums each host's share when the spec lists more than one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.addresses import Address
from engine.diagnostics import Diagnostic, Severity
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.plan import Action, Change, HostLoad, VMPlan
from engine.model.state import RECORDED_HOST, ResourceRecord, State, Status
from engine.units import duration, human

MAX_ATTACHED = 25  # volumes attached to one server at once (virtio-blk's PCI slots; Nova's cap)
DEFAULT_SLOTS = 2  # conversion_hosts[].max_parallel's default
ESXI_READS = 10  # source.vcenter.reads_per_esxi_host's default
# placement's weight of a warm delta before any delta of the VM was measured: this share of a
# disk's allocated bytes (a busy server's daily change rate is a few percent of its data)
DELTA_SHARE = 0.05


@dataclass(frozen=True)
class Host:
    """A conversion host of the spec: its name, zone (None: serves any) and copy slots."""

    name: str
    zone: str | None
    slots: int


def hosts_of(spec: Mapping[str, Any]) -> list[Host]:
    """The spec's conversion hosts in spec order, slots = max_parallel capped at 25."""
    return [
        Host(
            str(h["name"]),
            h.get("availability_zone"),
            min(int(h.get("max_parallel", DEFAULT_SLOTS)), MAX_ATTACHED),
        )
        for h in spec.get("conversion_hosts") or []
    ]


def checks(
    vms: list[DesiredVM], spec: Mapping[str, Any], gone: frozenset[str] = frozenset()
) -> list[DesiredVM]:
    """Each VM with its placement errors added (none when the spec lists no conversion host);
    `gone`: the hosts that are no server in the cloud (a VM pinned to one is blocked)."""
    hosts = hosts_of(spec)
    if not hosts:
        return vms
    return [replace(vm, concerns=vm.concerns + _errors(vm, hosts, gone)) for vm in vms]


def _errors(vm: DesiredVM, hosts: list[Host], gone: frozenset[str]) -> tuple[Concern, ...]:
    out = []
    if vm.conversion_host in gone:
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "pinned-host-gone",
                f"pinned to conversion host {vm.conversion_host}, which is not a server in the "
                "destination project: pin it to another host, or remove the pin",
            )
        )
    if len(vm.volumes) > MAX_ATTACHED:
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "too-many-volumes",
                f"{len(vm.volumes)} disks: a conversion host holds at most {MAX_ATTACHED} "
                "volumes attached at once, and the conversion attaches all of a VM's disks",
            )
        )
    zone = vm.availability_zone
    pinned = next((h for h in hosts if h.name == vm.conversion_host), None)
    if zone and pinned and pinned.zone and pinned.zone != zone:
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "host-zone-mismatch",
                f"pinned to conversion host {pinned.name} in availability zone {pinned.zone}, "
                f"but its availability zone is {zone}",
            )
        )
    elif zone and not pinned and not _eligible(zone, hosts):
        listed = ", ".join(f"{h.name} in {h.zone}" for h in hosts)
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "no-host-in-zone",
                f"no conversion host in availability zone {zone} (the spec lists {listed})",
            )
        )
    return tuple(out)


def _eligible(zone: str | None, hosts: Sequence[Host]) -> list[Host]:
    return [h for h in hosts if zone is None or h.zone is None or h.zone == zone]


@dataclass(frozen=True)
class Demand:
    """What placement knows of one VM: its weight in bytes (the bytes its changes copy, with an
    estimate for a delta of unknown size: `_unknown_weight`), zone, pin, the host its copy is in
    progress on (a volume record's conversion_host; None: no copy in progress), the volumes its
    changes copy, whether it converts, and the host its last sync ran on (its ready volume
    records' conversion_host; None: none recorded)."""

    name: str
    bytes: int
    zone: str | None
    pin: str | None
    recorded: str | None
    volumes: int = 1
    last: str | None = None
    converts: bool = False

    @property
    def idle(self) -> bool:
        """Nothing to run on a conversion host (a VM cut over, in sync): it costs a host nothing,
        so it counts in no share and no tie."""
        return not (self.bytes or self.volumes or self.converts)


@dataclass
class _Tally:
    """What placement put on each host so far: bytes, VMs and volumes, by host name."""

    bytes: dict[str, int]
    vms: dict[str, int]
    volumes: dict[str, int]

    @classmethod
    def of(cls, hosts: Sequence[Host]) -> _Tally:
        return cls(
            {h.name: 0 for h in hosts}, {h.name: 0 for h in hosts}, {h.name: 0 for h in hosts}
        )

    def put(self, d: Demand, host: str) -> None:
        self.bytes[host] += d.bytes
        self.vms[host] += 0 if d.idle else 1
        self.volumes[host] += d.volumes


def assign(demands: Sequence[Demand], hosts: Sequence[Host]) -> dict[str, str]:
    """VM name → host name. Deterministic (the same inputs give the same placement).

    A pinned VM goes to its pin; a VM with a copy in progress stays on that host while the spec
    lists it (its volume is attached there mid-copy). A VM whose last sync ran on a host the
    spec lists stays there (sticky: plan after plan a VM keeps its host, its agent's journal
    and the report's lanes) while that host serves its zone and holds no more than its fair
    share (`_Share`; a VM with nothing to run there stays regardless). The others are placed
    by longest-processing-time-first (Graham, "Bounds on multiprocessing timing anomalies",
    1969): largest bytes first (ties by name), each onto the eligible host (its zone) that
    would finish it earliest, finish = bytes placed / slots, ties to the host with the fewest
    VMs (with something to run) then volumes placed, then in spec order — so hosts end with
    estimated copy times within one VM's time of each other, and VMs of equal weight (deltas of
    unknown size) spread N/M over M hosts. Forklift's vSphere scheduler
    (kubev2v/forklift pkg/controller/plan/scheduler/vsphere/scheduler.go) only gates: at most
    MaxInFlight disks per ESXi host at once, a VM costing its disks still to transfer (freed as
    each is written), started in list order — ferry's reads_per_esxi_host, which the walker
    applies; it has no conversion hosts to choose between. os-migrate's vmware-migration-kit
    leaves the split to the user's Ansible inventory of conversion hosts;
    `vms[].conversion_host` keeps that choice open.

    Demands whose zone no host serves are left out (checks() blocked them)."""
    return _assign(demands, hosts)[0]


def _assign(
    demands: Sequence[Demand], hosts: Sequence[Host]
) -> tuple[dict[str, str], dict[str, str]]:
    """assign's placement, and why each sticky VM left its last host's share (VM name → one
    phrase; a VM whose last host is not eligible for it is not in it)."""
    names = {h.name: h for h in hosts}
    tally = _Tally.of(hosts)
    out: dict[str, str] = {}
    over: dict[str, str] = {}
    for d in demands:
        fixed = d.pin if d.pin in names else d.recorded if d.recorded in names else None
        if fixed is not None:
            out[d.name] = fixed
            tally.put(d, fixed)
    share = _Share.of(demands, hosts)
    for d in sorted((d for d in demands if d.name not in out), key=_largest):
        host = names.get(d.last or "")
        if host is None or not _eligible(d.zone, [host]):
            continue
        over[d.name] = "" if d.idle else share.over(d, host, tally)
        if not over[d.name]:
            out[d.name] = host.name
            tally.put(d, host.name)
    for d in sorted((d for d in demands if d.name not in out), key=_largest):
        eligible = _eligible(d.zone, hosts)
        if not eligible:
            continue
        best = earliest(d.bytes, eligible, tally.bytes, tally)
        out[d.name] = best.name
        tally.put(d, best.name)
    return out, {name: why for name, why in over.items() if why}


def _largest(d: Demand) -> tuple[int, str]:
    return -d.bytes, d.name


@dataclass(frozen=True)
class _Share:
    """A host's fair share of a placement: its slots' part of all the bytes plus the largest VM's
    (Graham's bound for any list schedule: the average finish plus one job), and its slots' part
    of all the VMs, rounded up. A sticky VM stays on its last host only within it, so a host
    that wrote every VM of an earlier, smaller spec does not keep them all when hosts are
    added."""

    bytes: int
    largest: int
    vms: int
    slots: int

    @classmethod
    def of(cls, demands: Sequence[Demand], hosts: Sequence[Host]) -> _Share:
        total = sum(d.bytes for d in demands)
        largest = max((d.bytes for d in demands), default=0)
        busy = sum(not d.idle for d in demands)
        return cls(total, largest, busy, sum(h.slots for h in hosts) or 1)

    def over(self, d: Demand, host: Host, tally: _Tally) -> str:
        """Why `host` cannot hold `d` besides what `tally` placed there within its share ("":
        it can)."""
        part = host.slots / self.slots
        bound = self.bytes * part + self.largest
        if tally.bytes[host.name] + d.bytes > bound:
            return (
                f"{host.name} would hold {human(tally.bytes[host.name] + d.bytes)}, past its "
                f"share of {human(round(bound))} (its {host.slots} of {self.slots} slots' part of "
                f"{human(self.bytes)}, plus the largest VM's {human(self.largest)})"
            )
        if tally.vms[host.name] + 1 > math.ceil(self.vms * part):
            return (
                f"{host.name} holds {tally.vms[host.name]} VM(s), its share of the {self.vms} "
                f"(its {host.slots} of {self.slots} slots)"
            )
        return ""


def earliest(
    size: int, hosts: Sequence[Host], load: Mapping[str, int], tally: _Tally | None = None
) -> Host:
    """The host of `hosts` (not empty) that would finish `size` more bytes earliest, finish =
    (bytes placed on it + size) / its slots; ties to the host with the fewest VMs, then volumes,
    placed (`tally`; None: not counted), then in the order of `hosts`."""

    def key(h: Host) -> tuple[float, int, int]:
        counted = (tally.vms[h.name], tally.volumes[h.name]) if tally is not None else (0, 0)
        return ((load[h.name] + size) / h.slots, *counted)

    return min(hosts, key=key)


@dataclass(frozen=True)
class Candidate:
    """A conversion host as an apply sees it when it must re-place a VM: the spec's host (name,
    zone, slots), the bytes already placed on it (the plan's placement plus the VMs this apply
    re-placed onto it), the volumes attached to its server now, whether its server exists and
    whether its agent answered the broker's ping."""

    host: Host
    placed: int
    attached: int
    up: bool
    answers: bool


@dataclass(frozen=True)
class Replacement:
    """Where a VM whose placed host is gone goes: `host` (None: nowhere) and why, one line."""

    host: str | None
    why: str


def replace_vm(d: Demand, disks: int, gone: str, candidates: Sequence[Candidate]) -> Replacement:
    """Re-place the VM of `d` (`disks` volumes) whose placed host `gone` has no server any more,
    by the plan's own rules: a pinned VM stays pinned (it fails rather than moves); the others go
    to a host whose server exists, whose agent answers, in the VM's availability zone, with
    room for its disks besides the volumes attached there now (at most MAX_ATTACHED), and among
    those to the one that would finish it earliest counting the bytes already placed there
    (assign's rule: bytes / slots, ties in spec order). `source.vcenter.reads_per_esxi_host`
    bounds the reads of the VM's ESXi host whichever conversion host writes, so it does not
    steer the choice. Pure: the caller asks the cloud and the broker."""
    lost = f"{gone}, where the plan placed it, is gone (no server of that name in the cloud)"
    if d.pin is not None:
        return Replacement(None, f"{lost}, and it is pinned there (vms[].conversion_host)")
    others = [c for c in candidates if c.host.name != gone]
    unfit = {c.host.name: why for c in others if (why := _unfit(c, d, disks))}
    fit = [c for c in others if c.host.name not in unfit]
    left = "; ".join(f"{n}: {why}" for n, why in unfit.items())
    if not fit:
        return Replacement(None, f"{lost}, and no conversion host can take it ({left or 'none'})")
    load = {c.host.name: c.placed for c in fit}
    best = earliest(d.bytes, [c.host for c in fit], load)
    chosen = next(c for c in fit if c.host == best)
    why = (
        f"{lost}; {best.name} finishes it earliest of the hosts that can take it "
        f"({human(chosen.placed)} placed there on {best.slots} slots"
        + "".join(
            f"; {c.host.name}: {human(c.placed)} on {c.host.slots}" for c in fit if c != chosen
        )
        + (f"; not {left}" if left else "")
        + ")"
    )
    return Replacement(best.name, why)


def _unfit(c: Candidate, d: Demand, disks: int) -> str:
    """Why candidate `c` cannot take the VM of `d`; "" when it can."""
    if not c.up:
        return "no server of that name in the cloud"
    if d.zone and c.host.zone and c.host.zone != d.zone:
        return f"availability zone {c.host.zone}, the VM's is {d.zone}"
    if not c.answers:
        return "its agent does not answer"
    if c.attached + disks > MAX_ATTACHED:
        return (
            f"{c.attached} volumes attached: {disks} more would exceed {MAX_ATTACHED} "
            "(a conversion attaches all of a VM's disks)"
        )
    return ""


def placed_bytes(placement: Mapping[str, str], changes: Sequence[Change]) -> dict[str, int]:
    """Host name → the bytes the changes of the VMs `placement` (VM name → host) puts on it
    copy."""
    by_vm = _by_vm(changes)
    out: dict[str, int] = {}
    for vm, host in placement.items():
        if host:
            out[host] = out.get(host, 0) + _copied(by_vm.get(vm, []))
    return out


def _by_vm(changes: Sequence[Change]) -> dict[str, list[Change]]:
    """The changes of each VM (by name), in plan order: grouped once per placement, not
    searched per VM (break-it scale14: 1,000 VMs over 8 hosts took 44 s of planning CPU, every
    VM scanning every change several times)."""
    out: dict[str, list[Change]] = {}
    for change in changes:
        address = Address.parse(change.address)
        if address.kind == "vm":
            out.setdefault(address.name, []).append(change)
    return out


def _records_by_vm(state: State) -> dict[str, dict[str, ResourceRecord]]:
    """The state's records of each VM (by name)."""
    out: dict[str, dict[str, ResourceRecord]] = {}
    for address, record in state.resources.items():
        parsed = Address.parse(address)
        if parsed.kind == "vm":
            out.setdefault(parsed.name, {})[address] = record
    return out


def place(
    spec: Mapping[str, Any],
    desired: Sequence[DesiredVM],
    plans: list[VMPlan],
    changes: Sequence[Change],
    *,
    state: State,
    throughput: float,
    gone: frozenset[str] = frozenset(),
) -> tuple[list[VMPlan], tuple[HostLoad, ...]]:
    """Every unblocked VM's plan with its conversion host (and a concern when it moves off the
    host its copy is in progress on or its last sync ran on, saying why), plus each host's
    share (VMs, bytes, estimated seconds at `throughput` bytes/s per copy) when the spec lists
    more than one host; () otherwise. `gone`: the spec's hosts that are no server in the cloud
    (and not booted by the plan): nothing is placed on them while another host is left."""
    hosts = hosts_of(spec)
    if not hosts:
        return plans, ()
    usable = [h for h in hosts if h.name not in gone] or hosts
    by_name = {vm.name: vm for vm in desired}
    by_vm, records = _by_vm(changes), _records_by_vm(state)
    demands = [
        _demand(by_name[p.name], by_vm.get(p.name, []), records.get(p.name, {}))
        for p in plans
        if not p.blocked and p.name in by_name
    ]
    chosen, over = _assign(demands, usable)
    facts = {d.name: d for d in demands}
    placed = [
        replace(
            p,
            conversion_host=chosen[p.name],
            availability_zone=by_name[p.name].availability_zone or "",
            pinned=by_name[p.name].conversion_host is not None,
            concerns=p.concerns
            + _moved(facts[p.name].recorded, chosen[p.name], usable, gone)
            + _left(facts[p.name], chosen[p.name], usable, gone, over.get(p.name, "")),
        )
        if p.name in chosen
        else p
        for p in plans
    ]
    if len(hosts) < 2:
        return placed, ()
    return placed, tuple(_load(h, placed, by_vm, throughput) for h in usable)


def copied(name: str, changes: Sequence[Change]) -> int:
    """Bytes the changes of VM `name` copy (its no-ops none; a delta of unknown size none)."""
    return _copied(_by_vm(changes).get(name, []))


def _copied(mine: Sequence[Change]) -> int:
    """Bytes a VM's changes (`mine`) copy."""
    return sum(c.bytes or 0 for c in _copying(mine))


def _copying(mine: Sequence[Change]) -> list[Change]:
    """A VM's changes (`mine`) that a conversion host carries out (an image's upload is not a
    conversion host's copy: it carries bytes to upload)."""
    return [c for c in mine if c.action is not Action.NOOP and c.kind != "image"]


def _demand(vm: DesiredVM, changes: Sequence[Change], mine: Mapping[str, ResourceRecord]) -> Demand:
    """What VM `vm` asks of a host: its changes (`changes`) and state records (`mine`)."""
    steps = _copying(changes)
    copying = [c for c in steps if c.kind == "volume"]
    size = _copied(changes) + sum(_unknown_weight(vm, c, mine) for c in copying if c.bytes is None)
    hosts = sorted(
        str(r.attributes[RECORDED_HOST])
        for r in mine.values()
        if r.kind == "volume" and r.status is Status.IN_PROGRESS and r.attributes.get(RECORDED_HOST)
    )
    return Demand(
        vm.name,
        size,
        vm.availability_zone,
        vm.conversion_host,
        next(iter(hosts), None),
        len(copying),
        _last_host(mine),
        any(c.kind == "conversion" for c in steps),
    )


def _unknown_weight(vm: DesiredVM, change: Change, mine: Mapping[str, ResourceRecord]) -> int:
    """Placement's weight of a delta sync whose size the plan does not know (bytes None: no
    delta measured for that disk yet): the mean of the deltas last measured for the VM's other
    disks (state), else DELTA_SHARE of the disk's allocated bytes (vSphere's layoutEx), else 0
    (then the number of VMs and volumes on each host decides: `earliest`). A weight only: the
    plan still shows the size as unknown."""
    deltas = [
        int(last.get("bytes", 0))
        for r in mine.values()
        if r.kind == "volume"
        and isinstance(last := r.attributes.get("last_sync"), dict)
        and last.get("kind") == "delta"
    ]
    if deltas:
        return sum(deltas) // len(deltas)
    key = Address.parse(change.address).index
    disk = next((d for d in vm.source.disks if d.key == key), None)
    if disk is not None and disk.allocated:
        return int(disk.allocated * DELTA_SHARE)
    return 0


def _last_host(mine: Mapping[str, ResourceRecord]) -> str | None:
    """The conversion host the VM's latest sync ran on (its ready volume records', the latest
    `last_sync.at` first; ties by name), or None when none is recorded."""
    ran = sorted(
        (-float((r.attributes.get("last_sync") or {}).get("at") or 0), str(host))
        for r in mine.values()
        if r.kind == "volume"
        and r.status is Status.READY
        and (host := r.attributes.get(RECORDED_HOST))
    )
    return ran[0][1] if ran else None


def _moved(
    recorded: str | None, chosen: str, hosts: Sequence[Host], gone: frozenset[str] = frozenset()
) -> tuple[Concern, ...]:
    """Why a VM whose copy is in progress on one host is placed on another (`gone`: the
    spec's hosts that are no server in the destination project)."""
    if recorded is None or recorded == chosen:
        return ()
    resume = (
        f"its volume is detached there if still attached, attached to {chosen}, and the copy "
        "resumes from its checkpoint"
    )
    if recorded in {h.name for h in hosts}:
        why = f"pinned to conversion host {chosen}: its copy in progress on {recorded} moves; "
        return (Concern(ConcernLevel.INFO, "re-placed", why + resume),)
    where = (
        "is not a server in the destination project"
        if recorded in gone
        else "the spec no longer lists"
    )
    why = (
        f"re-placed on conversion host {chosen}: its copy was in progress on {recorded}, which "
        f"{where}; "
    )
    return (Concern(ConcernLevel.WARNING, "re-placed", why + resume),)


def _left(
    d: Demand, chosen: str, hosts: Sequence[Host], gone: frozenset[str], over: str
) -> tuple[Concern, ...]:
    """Why a VM whose last sync ran on another host than `chosen` moves (a copy in progress
    says so in `_moved`; `over`: why that host's share could not hold it): a warning when that
    host is gone, info otherwise."""
    if d.last is None or d.last == chosen or d.recorded is not None:
        return ()
    head = f"moves to conversion host {chosen} from {d.last}, where its last sync ran: "
    listed = {h.name: h for h in hosts}
    if d.last in gone:
        why = f"{d.last} is not a server in the destination project"
        return (Concern(ConcernLevel.WARNING, "re-placed", head + why),)
    host = listed.get(d.last)
    if host is None:
        why = f"the spec no longer lists {d.last}"
    elif d.pin is not None:
        why = f"it is pinned to {chosen} (vms[].conversion_host)"
    elif not _eligible(d.zone, [host]):
        why = f"{d.last} is in availability zone {host.zone}, the VM's is {d.zone}"
    else:
        why = over or f"{d.last} cannot hold it"
    return (Concern(ConcernLevel.INFO, "re-placed", head + why),)


def has_broker(spec: Mapping[str, Any]) -> bool:
    """Whether the spec sets execution.broker: the hosts' agents write the VMs where the plan
    places them (without it the first host writes every volume)."""
    execution = spec.get("execution")
    return isinstance(execution, Mapping) and bool(execution.get("broker"))


def first_host_only(spec: Mapping[str, Any], gone: frozenset[str]) -> list[Diagnostic]:
    """A warning when the spec lists several conversion hosts and no execution.broker: apply
    writes every volume on the first (in-process), whatever the placement says (break-it 14
    F8: the plan showed a 3-host placement nothing followed). None when the first is `gone`
    (checks.host_diagnostics' error says so)."""
    hosts = hosts_of(spec)
    if len(hosts) < 2 or has_broker(spec) or hosts[0].name in gone:
        return []
    return [
        Diagnostic(
            Severity.WARNING,
            f"the spec lists {len(hosts)} conversion hosts and sets no execution.broker: apply "
            f"runs every copy and conversion in-process on the first, {hosts[0].name} (the "
            "placement shown is what the hosts' agents would follow); set execution.broker and "
            "run an agent on each host to use them all",
            path=("conversion_hosts",),
        )
    ]


def gone_lines(
    spec: Mapping[str, Any], gone: frozenset[str], plans: Sequence[VMPlan], state: State
) -> list[Diagnostic]:
    """A warning per conversion host of `gone` (no server in the cloud) while another is left,
    naming the VMs whose copy is in progress or whose last sync ran there and where they are
    placed now; none when checks.host_diagnostics' error says it (no host left, or the first
    host without a broker)."""
    hosts = hosts_of(spec)
    if not gone or len(gone) == len(hosts):
        return []
    out = []
    records = _records_by_vm(state)
    for i, host in enumerate(hosts):
        if host.name not in gone or (i == 0 and not has_broker(spec)):
            continue
        moved = [
            f"{p.name} → {p.conversion_host}"
            for p in plans
            if _ran_on(records.get(p.name, {})) == host.name
        ]
        placed = (
            f"its VMs are placed on the hosts left ({', '.join(moved)})"
            if moved
            else "no VM is placed on it"
        )
        out.append(
            Diagnostic(
                Severity.WARNING,
                f"conversion host {host.name!r} is not a server in the destination project: "
                + placed,
                path=("conversion_hosts", i, "name"),
            )
        )
    return out


def _ran_on(mine: Mapping[str, ResourceRecord]) -> str | None:
    """The host a VM's copy is in progress on, else the one its last sync ran on (None), by its
    records (`mine`)."""
    progress = sorted(
        str(r.attributes[RECORDED_HOST])
        for r in mine.values()
        if r.kind == "volume" and r.status is Status.IN_PROGRESS and r.attributes.get(RECORDED_HOST)
    )
    return next(iter(progress), None) or _last_host(mine)


def _load(
    host: Host, plans: Sequence[VMPlan], by_vm: Mapping[str, list[Change]], rate: float
) -> HostLoad:
    """`host`'s share: its VMs, the bytes their changes (`by_vm`: VM name → its changes) copy
    (a delta of unknown size counted in `unknown`, not in bytes) and the copy time they take at
    `rate` bytes/s per slot."""
    mine = [p.name for p in plans if p.conversion_host == host.name]
    total = sum(_copied(by_vm.get(name, [])) for name in mine)
    unknown = sum(
        1
        for name in mine
        for c in _copying(by_vm.get(name, []))
        if c.kind == "volume" and c.bytes is None
    )
    seconds = round(total / (rate * host.slots), 1) if rate > 0 else 0.0
    return HostLoad(host.name, len(mine), total, host.slots, seconds, host.zone, unknown)


def read_bounds(
    spec: Mapping[str, Any],
    desired: Sequence[DesiredVM],
    changes: Sequence[Change],
    loads: Sequence[HostLoad],
    throughput: float,
) -> list[Diagnostic]:
    """An info line per ESXi host whose disks take longer to read, at most
    `source.vcenter.reads_per_esxi_host` at once, than the busiest conversion host takes to
    write its share: that ESXi host, not the conversion hosts, bounds the apply. None without
    a placement over several hosts (`loads` empty) or a throughput."""
    if not loads or throughput <= 0:
        return []
    reads = int(spec["source"]["vcenter"].get("reads_per_esxi_host", ESXI_READS))
    per_esxi: dict[str, int] = {}
    by_vm = _by_vm(changes)
    for vm in desired:
        if vm.source.host:
            size = _copied(by_vm.get(vm.name, []))
            per_esxi[vm.source.host] = per_esxi.get(vm.source.host, 0) + size
    busiest = max(h.seconds for h in loads)
    out = []
    for esxi, total in sorted(per_esxi.items()):
        seconds = round(total / (throughput * reads), 1)
        if seconds > busiest:
            out.append(
                Diagnostic(
                    Severity.INFO,
                    f"ESXi host {esxi}: its disks' {human(total)} are read at most {reads} at "
                    f"once (source.vcenter.reads_per_esxi_host), ~{duration(seconds)}: longer "
                    f"than the busiest conversion host's ~{duration(busiest)}, so it bounds the "
                    "apply",
                    path=("source", "vcenter", "reads_per_esxi_host"),
                )
            )
    return out
