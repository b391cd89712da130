"""Whose found ports are these (pure): a port ferry made for a NIC of the VM (its description
names the VM and the NIC), found by the cutover's MAC on its network, that this state does not
record is reused only when it is this state's (a killed apply's: its description's
`ferry_state` names this state's lineage), or when the plan takes it over as it takes volumes
over: another ferry state's with --adopt-lineage naming that state, an older ferry's (no
`ferry_state`) with --adopt-lineage unlabeled (break-it 16g L4: a fresh state, a rehearsal or a
typo in --state, reused another state's ports by MAC, and its --destroy deleted them). A port this
state records is its own (an older ferry's is labelled: engine.planner.diff.lineage)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredPort, DesiredVM
from engine.model.observed import Destination, ObservedPort
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord
from engine.planner.diff.volumes import FOUND_LINEAGE

# the errors on volumes and images of another state that the same state's ports join (one
# error per cause: break-it 16d L3)
ANOTHER_STATE = ("volume-of-another-state", "image-of-another-state")


def found_port(vm: DesiredVM, port: DesiredPort, cloud: Destination) -> ObservedPort | None:
    """The port ferry made for this NIC of the VM (its description's VM and NIC) holding its
    MAC on its network (by id or name), as the executor's cutover finds it; None: none."""
    uuid = vm.source.instance_uuid
    for found in cloud.ports:
        on = found.network == port.network or (
            cloud.network_names.get(found.network or "") == port.network
        )
        ours = found.vm_uuid == uuid and found.nic == port.index
        if ours and on and found.mac == port.mac.lower():
            return found
    return None


def _unrecorded(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination | None
) -> list[ObservedPort]:
    """The ports found for the VM's NICs (`found_port`) that no record of the VM names."""
    if cloud is None:
        return []
    recorded = {str(r.attributes.get("port_id")) for r in records.values() if r.kind == "port"}
    out = []
    for port in vm.ports:
        found = found_port(vm, port, cloud)
        if found is not None and found.id not in recorded:
            out.append(found)
    return out


def adopted(
    vm: DesiredVM,
    changes: list[Change],
    records: Mapping[str, ResourceRecord],
    cloud: Destination | None,
    lineage: str,
) -> list[Change]:
    """`changes` with each port create whose port is found unrecorded (`_unrecorded`) saying
    so: its `after` carries the lineage it was found with (FOUND_LINEAGE, "" none: the apply
    reuses it only while it is still that state's or this one's, and stamps this state's)."""
    found = {f.nic: f for f in _unrecorded(vm, records, cloud)}
    out = []
    for change in changes:
        index = Address.parse(change.address).index
        port = found.get(index) if change.kind == "port" else None
        if port is None or change.action is not Action.CREATE or change.after is None:
            out.append(change)
            continue
        whose = f"of ferry state {port.lineage}" if port.lineage else "an older ferry's, unlabelled"
        reason = (
            f"port {port.id} ferry made for this NIC (an interrupted apply of this state) is "
            "found: reused"
            if lineage and port.lineage == lineage
            else f"port {port.id} ferry made for this NIC is found ({whose}): adopted, labelled "
            "with this state's lineage"
        )
        after = {**change.after, FOUND_LINEAGE: port.lineage or ""}
        out.append(replace(change, reason=reason, after=after))
    return out


def unlabeled(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination | None
) -> tuple[str, ...]:
    """The ids of the ports found for the VM's NICs that this state does not record and that
    carry no lineage (an older ferry's)."""
    return tuple(p.id for p in _unrecorded(vm, records, cloud) if p.lineage is None)


def of_other_states(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    cloud: Destination | None,
    lineage: str,
    adopt_lineages: frozenset[str],
    *,
    concerns: tuple[Concern, ...],
) -> tuple[Concern, ...]:
    """`concerns` (the VM's) with the found, unrecorded ports another ferry state manages (their
    `ferry_state` names a lineage neither this state's, `lineage`, nor one --adopt-lineage
    names): named in that state's volume-/image-of-another-state error when the VM has one,
    else one port-of-another-state error per state."""
    theirs: dict[str, list[ObservedPort]] = {}
    for port in _unrecorded(vm, records, cloud):
        if port.lineage and port.lineage not in (lineage, *adopt_lineages):
            theirs.setdefault(port.lineage, []).append(port)
    out = list(concerns)
    for other, ports in theirs.items():
        said = next(
            (
                n
                for n, c in enumerate(out)
                if c.code in ANOTHER_STATE and f"(lineage {other}" in c.message
            ),
            None,
        )
        if said is None:
            out.append(_of_another_state(vm, other, ports, lineage))
            continue
        also = f"{_ports(ports)} of this VM {_are(ports)} that state's too"
        joined = f"{out[said].message}; {also} ({hand_over(vm, ports, lineage)})"
        out[said] = replace(out[said], message=joined)
    return tuple(out)


def _ports(ports: list[ObservedPort]) -> str:
    ids = ", ".join(p.id for p in ports)
    return f"port {ids}" if len(ports) == 1 else f"ports {ids}"


def _are(ports: list[ObservedPort]) -> str:
    return "is" if len(ports) == 1 else "are"


def _of_another_state(
    vm: DesiredVM, other: str, ports: list[ObservedPort], lineage: str
) -> Concern:
    """The error concern of the found ports (of the VM's NICs) another ferry state manages."""
    this_one = f"; this one is {lineage}" if lineage else ""
    one = len(ports) == 1
    return Concern(
        ConcernLevel.ERROR,
        "port-of-another-state",
        f"{_ports(ports)} ferry made for this VM's NIC{'' if one else 's'} (found by MAC) "
        f"{_are(ports)} managed by another ferry state (lineage {other}{this_one}): not reused. "
        "Plan with that state (--state or its DSN); if that state is lost, plan with "
        f"--adopt-lineage {other} (this state adopts every object of it), hand "
        f"{'it' if one else 'them'} over ({hand_over(vm, ports, lineage)}) or delete "
        f"{'it' if one else 'them'} (openstack port delete {' '.join(p.id for p in ports)}; the "
        "cutover makes new ones)",
    )


def hand_over(vm: DesiredVM, ports: list[ObservedPort], lineage: str) -> str:
    """How to hand ferry's ports of the VM over to this state by hand: its lineage in each one's
    description (Neutron sets one port at a time); a state not written yet ("") has none, so
    the description's ferry_state is dropped and the plan takes them with --adopt-lineage
    unlabeled."""
    uuid = vm.source.instance_uuid or ""
    state = f" ferry_state={lineage}" if lineage else ""
    commands = "; ".join(
        f"openstack port set --description 'ferry_vm={uuid} nic={p.nic}{state}' {p.id}"
        for p in ports
    )
    return commands if lineage else f"{commands}, then plan with --adopt-lineage unlabeled"
