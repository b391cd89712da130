"""Making a plan from what refresh gathered (pure): desired → diff → graph → Plan."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.diagnostics import Diagnostic, Location, Path
from engine.model.observed import Destination, Inventory
from engine.model.plan import Plan
from engine.model.state import State
from engine.planner import graph as plan_graph
from engine.planner.desired import desired
from engine.planner.diff import DiffInput, diff
from engine.planner.hosts import host_changes

Locator = Callable[[Path], Location | None]


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 of the validated spec (after ${NAME} interpolation), canonical JSON."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_plan(
    spec: dict[str, Any],
    inventory: Inventory,
    destination: Destination,
    state: State,
    *,
    destroy: bool = False,
    targets: tuple[Address, ...] = (),
    now: float | None = None,
    locate: Locator | None = None,
) -> Plan:
    now = time.time() if now is None else now
    vms, diagnostics = desired(spec, inventory, destination)
    vm_plans, changes = diff(DiffInput(tuple(vms), state, destination, destroy, now))
    changes = host_changes(spec, destination, state, destroy=destroy) + changes
    graph = plan_graph.build(changes)
    if targets:
        keep = plan_graph.targeted(changes, graph, list(targets))
        changes = [c for c in changes if c.address in keep]
        graph = graph.subgraph(keep).copy()
    return Plan(
        spec_digest=spec_digest(spec),
        state_lineage=state.lineage,
        state_serial=state.serial,
        vms=tuple(vm_plans),
        changes=tuple(changes),
        edges=tuple(sorted((str(u), str(v)) for u, v in graph.edges)),
        diagnostics=tuple(_located(diagnostics, locate)),
        destroy=destroy,
        targets=tuple(str(t) for t in targets),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    )


def _located(diagnostics: list[Diagnostic], locate: Locator | None) -> list[Diagnostic]:
    """Diagnostics with the spec file:line:col of their path, when a locator knows it."""
    if locate is None:
        return diagnostics
    return [
        d if d.location or not d.path else replace(d, location=locate(d.path)) for d in diagnostics
    ]
