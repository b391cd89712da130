"""What every part of the diff shares: its input, the cutover modes, and the create / replace /
no-op rule of objects ferry makes whole (ports, flavors, conversions, servers), with drift."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.addresses import Address
from engine.model.desired import DesiredVM
from engine.model.observed import Destination
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, State, Status
from engine.planner.selection import Lookup

CUTOVER_MODES = ("cutover", "cold")
UNCONFIRMED = "never confirmed (an apply stopped during its boot)"


@dataclass(frozen=True)
class DiffInput:
    desired: tuple[DesiredVM, ...]
    state: State
    destination: Destination
    destroy: bool = False
    lookup: Lookup | None = None  # None: every recorded VM not desired left the spec
    now: float | None = None  # epoch seconds the plan is made at (dates delta estimates)
    verify: bool = False  # --verify: replicas in sync get verify steps; every copy verified whole
    conversion_hosts: frozenset[str] = frozenset()  # the spec's conversion hosts, by name
    # --adopt-lineage: lineages of lost ferry states whose volumes this state adopts
    adopt_lineages: frozenset[str] = frozenset()
    # --target: the VMs it names (None: every VM); only theirs spend the cloud's quota and the
    # work directory's space, as only their changes are applied
    targeted: frozenset[str] | None = None


def simple(
    address: str,
    kind: str,
    record: ResourceRecord | None,
    after: dict[str, Any],
    reason: str,
    *,
    differs: Any = None,
) -> Change:
    """Create (no record, or one in progress), replace (tainted, or `differs(record, after)`:
    True or a non-empty 'what: before → after', which the reason then shows) or no-op."""
    if record is None or record.status is Status.IN_PROGRESS:
        return Change(address, kind, Action.CREATE, reason, None, after)
    if record.status is Status.TAINTED:
        return Change(
            address, kind, Action.REPLACE, f"tainted: {reason}", dict(record.attributes), after
        )
    moved = differs(record, after) if differs is not None else False
    if moved:  # True, or what changed ('security groups [a] → [b]')
        said = f"changed: {reason}" + (f" ({moved})" if isinstance(moved, str) else "")
        return Change(address, kind, Action.REPLACE, said, dict(record.attributes), after)
    return Change(
        address, kind, Action.NOOP, "up to date", dict(record.attributes), dict(record.attributes)
    )


def drifted(
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


def backs_out(vm: DesiredVM, records: Mapping[str, ResourceRecord]) -> bool:
    """Replicate mode (output: volume) with a server record in progress: the cutover an
    interrupted apply left in its boot is undone (server, ports, conversion) and replication
    goes on from the protection snapshots."""
    server = records.get(str(Address("vm", vm.name, "server")))
    return (
        vm.mode not in CUTOVER_MODES
        and vm.image is None
        and server is not None
        and server.status is Status.IN_PROGRESS
    )
