"""Destination networks the spec asks ferry to create (network_map `create:`) (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.addresses import Address
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.common import DiffInput


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
