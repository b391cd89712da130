"""Pure checks that a VM's source NICs are those a plan's ports were planned from (a saved plan is
applied after the source may have changed: a NIC added, removed, given a new MAC or moved to
another portgroup would boot a server without it, with a wrong MAC or on the wrong network —
after production was powered off).

`planned_nics` reads what the plan's ports were planned from (their `after`: mac, nic_key,
portgroup, portgroup_key; see engine.planner.diff.cutover.planned_from); `nic_differences` names
each difference with the source's NICs re-read from vCenter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.addresses import Address
from engine.model.observed import SourceNic
from engine.model.plan import Action, Change, Plan

BOOTS = (Action.CREATE, Action.REPLACE)  # a server change that boots one


@dataclass(frozen=True)
class PlannedNic:
    """One port's source NIC as the plan saw it; `key`/`portgroup` are None when the plan does
    not say (a plan or port record made before they were recorded)."""

    mac: str
    key: int | None
    portgroup: str | None
    portgroup_key: str | None
    knows_portgroup: bool


def planned_nics(plan: Plan, name: str) -> list[PlannedNic] | None:
    """The NICs VM `name`'s ports were planned from, or None when this plan boots no server for
    it and creates no port (NICs do not matter to a replica: only a cutover checks them)."""
    changes = [c for c in plan.changes if Address.parse(c.address).name == name]
    ports = [
        c for c in changes if c.kind == "port" and c.action not in (Action.DELETE, Action.FORGET)
    ]
    boots = any(c.kind == "server" and c.action in BOOTS for c in changes)
    if not boots and not any(c.action in BOOTS for c in ports):
        return None
    return [_planned(c) for c in ports]


def _planned(change: Change) -> PlannedNic:
    after: Mapping[str, Any] = change.after or {}
    key = after.get("nic_key")
    return PlannedNic(
        mac=str(after.get("mac") or "").lower(),
        key=int(key) if key is not None else None,
        portgroup=after.get("portgroup"),
        portgroup_key=after.get("portgroup_key"),
        knows_portgroup="portgroup" in after,
    )


def nic_differences(planned: Iterable[PlannedNic], found: Iterable[SourceNic]) -> list[str]:
    """Each way the source's NICs differ from the planned ones, one phrase each: a NIC added or
    removed (matched by MAC), a NIC (same device key) whose MAC is now another, a NIC on another
    portgroup than planned (so network_map may map it to another network). [] when they match."""
    unmatched = {p.mac: p for p in planned}
    known = set(unmatched)
    nics = {(n.mac or "").lower(): n for n in found}
    problems: list[str] = []
    for mac, nic in sorted(nics.items()):
        plan = unmatched.pop(mac, None)
        if plan is not None:
            moved = _moved(plan, nic)
            if moved:
                problems.append(f"NIC {mac} {moved}")
    added = {mac: nic for mac, nic in nics.items() if mac not in known}
    for mac, plan in sorted(unmatched.items()):
        same = next(
            (m for m, n in added.items() if plan.key is not None and n.key == plan.key), None
        )
        if same is not None:
            problems.append(f"NIC {mac}: its MAC is now {same}")
            del added[same]
        else:
            problems.append(f"NIC {mac} was removed")
    problems += [f"NIC {mac or '(no MAC)'} was added" for mac in sorted(added)]
    return problems


def _moved(plan: PlannedNic, nic: SourceNic) -> str:
    """'is on portgroup B, the plan's port was planned from A' or '' (same, or not known)."""
    if not plan.knows_portgroup:
        return ""
    if nic.distributed:
        if nic.portgroup_key == plan.portgroup_key:
            return ""
        now = nic.portgroup or nic.portgroup_key
    else:
        if nic.portgroup is None or nic.portgroup == plan.portgroup:
            return ""
        now = nic.portgroup
    was = plan.portgroup or plan.portgroup_key
    return f"is on portgroup {now!r}, the plan's port was planned from {was!r}"
