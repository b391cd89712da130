"""Recorded VMs leaving: their objects deleted (never the source), or forgotten once cut over
(pure)."""

from __future__ import annotations

from engine.addresses import Address
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, State, Status
from engine.planner.diff.common import DiffInput


def records_by_vm(state: State) -> dict[str, dict[str, ResourceRecord]]:
    """Recorded resources grouped by the name of the VM they belong to (one pass)."""
    out: dict[str, dict[str, ResourceRecord]] = {}
    for address, record in state.resources.items():
        parsed = Address.parse(address)
        if parsed.kind == "vm":
            out.setdefault(parsed.name, {})[address] = record
    return out


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


def departed(data: DiffInput, by_vm: dict[str, dict[str, ResourceRecord]]) -> list[Change]:
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
