"""Carrying out a plan's `move` changes: a renamed VM's records re-keyed to its new address.

Every move of the plan is made in one state write (atomic: all or none), the first time any of
them runs: two VMs that swapped names would otherwise overwrite each other's records. Nothing
outside the state changes. A record at a new address that is not itself moving away, or a record
of another VM under an old name, means the state changed since the plan: refused, nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from engine.addresses import Address
from engine.errors import StateError
from engine.model.plan import Action, Change
from engine.model.state import INSTANCE_UUID, ResourceRecord


def moved_records(
    moves: Iterable[Change], resources: Mapping[str, ResourceRecord]
) -> tuple[list[ResourceRecord], list[str]]:
    """(puts, deletes) that re-key every moving VM's records (carrying its instance UUID).

    Raises StateError when the state no longer fits the plan (see the module docstring)."""
    puts: list[ResourceRecord] = []
    sources: set[str] = set()
    for move in (m for m in moves if m.action is Action.MOVE):
        old, new = Address.parse(str((move.before or {})["address"])), Address.parse(move.address)
        uuid = str((move.after or {}).get(INSTANCE_UUID) or "")
        for address, record in resources.items():
            parsed = Address.parse(address)
            if parsed.vm != old:
                continue
            owner = str(record.attributes.get(INSTANCE_UUID) or uuid).lower()
            if uuid and owner != uuid.lower():
                raise StateError(
                    f"{address} belongs to instance UUID {owner}, not the moving {uuid}: "
                    "the state changed since the plan; run `ferry plan` again"
                )
            target = str(replace(parsed, name=new.name))
            attributes = {**record.attributes, INSTANCE_UUID: uuid} if uuid else record.attributes
            puts.append(replace(record, address=target, attributes=attributes))
            sources.add(address)
    targets = {r.address for r in puts}
    taken = sorted(a for a in targets if a in resources and a not in sources)
    if taken:
        raise StateError(
            f"cannot move records onto {', '.join(taken)}: recorded for another VM; the state "
            "changed since the plan; run `ferry plan` again"
        )
    return puts, sorted(sources - targets)
