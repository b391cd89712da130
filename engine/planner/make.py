"""Making a plan from what refresh gathered (pure): desired → diff → graph → Plan."""

from __future__ import annotations

import difflib
import hashlib
import json
import time
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import networkx as nx

from engine.addresses import Address
from engine.diagnostics import Diagnostic, Location, Path
from engine.errors import UserError
from engine.model.observed import Destination, Inventory
from engine.model.plan import Action, Change, HostLoad, Plan, VMPlan
from engine.model.state import State
from engine.planner import graph as plan_graph
from engine.planner import placement
from engine.planner.checks import (
    blocked_volume_deletes,
    destination_checks,
    gone_hosts,
    host_diagnostics,
)
from engine.planner.desired import desired
from engine.planner.diff import DiffInput, diff, said_left_off
from engine.planner.diff.estimates import measured_throughput
from engine.planner.hosts import host_changes
from engine.planner.selection import lookup

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
    verify: bool = False,
    adopt_lineages: tuple[str, ...] = (),
) -> Plan:
    """The plan of `spec` against what refresh read; `verify` (--verify): every selected replica
    is compared whole with a new snapshot (a verify step where nothing else is planned), every
    copy verified whole; `adopt_lineages` (--adopt-lineage): lost ferry states whose volumes
    this state adopts (their `ferry_state` metadata names one of them).

    Raises UserError (a --target that names nothing known)."""
    verify = verify and not destroy
    now = time.time() if now is None else now
    vms, diagnostics = desired(spec, inventory, destination, state.lineage)
    gone = gone_hosts(spec, destination)
    if not destroy:
        vms = placement.checks(destination_checks(vms, destination, state), spec, gone)
        diagnostics += host_diagnostics(spec, destination)
    vm_plans, changes, notes, off = diff(
        DiffInput(
            tuple(vms),
            state,
            destination,
            destroy,
            lookup(spec, inventory),
            now,
            verify,
            frozenset(str(h["name"]) for h in spec.get("conversion_hosts") or ()),
            frozenset(adopt_lineages),
            frozenset(t.name for t in targets if t.kind == "vm") if targets else None,
        )
    )
    diagnostics = said_left_off(diagnostics, off) + notes
    hosts: tuple[HostLoad, ...] = ()
    if not destroy:
        throughput = measured_throughput(state)
        vm_plans, hosts = placement.place(
            spec, vms, vm_plans, changes, state=state, throughput=throughput, gone=gone
        )
        diagnostics += placement.gone_lines(spec, gone, vm_plans, state)
        diagnostics += placement.first_host_only(spec, gone)
        diagnostics += placement.read_bounds(spec, vms, changes, hosts, throughput)
    changes = host_changes(spec, destination, state, destroy=destroy) + changes
    graph = plan_graph.build(changes)
    if targets:
        _check_targets(targets, vm_plans, changes, state)
        keep = plan_graph.targeted(changes, graph, list(targets))
        _check_partial_cutover(targets, changes, graph, keep)
        changes = [c for c in changes if c.address in keep]
        graph = graph.subgraph(keep).copy()
    diagnostics += blocked_volume_deletes(changes, destination)
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
        verify=verify,
        hosts=hosts,
    )


def _check_targets(
    targets: tuple[Address, ...], vms: list[VMPlan], changes: list[Change], state: State
) -> None:
    """Every --target names a VM of the spec, a change or a recorded object: a typo is an error
    (with the nearest known address), never a silent "No changes".

    A target of a VM whose records this plan moves (renamed in vCenter: the `moved` change)
    is an error naming the new address: its old records made it "known", but every change is
    at the new name, so it selected nothing (break-it 12i F1: "No changes: the destination
    matches the spec" for a replica behind the source, and for a cutover that never ran).

    Raises UserError."""
    moves = {
        str((c.before or {}).get("address")): Address.parse(c.address)
        for c in changes
        if c.action is Action.MOVE
    }
    known = {v.address for v in vms} | {c.address for c in changes} | set(state.resources)
    known |= {str(Address.parse(a).vm) for a in list(known) if a.startswith("vm")}
    blocked = {v.address for v in vms if v.blocked}  # its changes are not planned: its error is
    for target in targets:
        if target.kind == "vm" and str(target.vm) in blocked:
            continue  # the VM's error concern says why nothing is planned (break-it 16d L2)
        new = moves.get(str(target.vm))
        if new is not None:
            raise UserError(
                f"--target {target}: {target.vm} has moved to {new} (renamed in vCenter: the "
                f"same instance UUID): target {replace(target, name=new.name)}"
            )
        if str(target) in known:
            continue
        near = nearest(str(target), known)
        hint = f": did you mean {near}?" if near else " (see `ferry plan` for the addresses)"
        raise UserError(f"--target {target} is not a VM of the spec nor a known address{hint}")


def _check_partial_cutover(
    targets: tuple[Address, ...], changes: list[Change], graph: Any, keep: set[str]
) -> None:
    """A --target selection that keeps a cutover's power-off (its final snapshot, which the
    disks' final syncs hang on) without its server or its conversion is refused: it would take
    the source down for a sync that boots nothing, then power it back on. `--target` selects a
    part of the plan the spec describes, never another plan: a live sync of a cutover VM's disk
    is what `mode: replicate` plans. The conversion is a target of its own: a rehearsal of the
    cutover up to converted volumes (virt-v2v tried on this guest before the window), after
    which the source is powered back on. The line names the targets that make sense: the whole
    cutover (vm.X, or its server), its conversion and the VM's parts that need no power-off.

    Raises UserError."""
    for change in changes:
        after = change.after or {}
        if change.kind != "source_snapshot" or not after.get("power_off"):
            continue
        if change.address not in keep:
            continue
        vm = Address.parse(change.address).vm
        ends = [c.address for c in changes if c.kind in ("server", "conversion") and _vm(c) == vm]
        if any(e in keep for e in ends):
            continue
        named = ", ".join(str(t) for t in targets if t.vm == vm) or ", ".join(map(str, targets))
        after_off = nx.descendants(graph, change.address) | {change.address}
        live = [
            c.address
            for c in changes
            if _vm(c) == vm and c.address not in after_off and c.action is not Action.NOOP
        ]
        alone = f", or a part that needs no power-off ({', '.join(live)})" if live else ""
        raise UserError(
            f"--target {named}: {vm.name} is in cutover mode, whose disks are synced only "
            f"after its source is powered off, to boot the server; target {vm} for the whole "
            f"cutover, {vm}.conversion to rehearse it up to converted volumes (the source is "
            f"powered back on){alone}; to sync its disks while the source runs, set its mode: "
            "replicate"
        )


def _vm(change: Change) -> Address:
    return Address.parse(change.address).vm


def _folded(text: str) -> str:
    """Text as a typo sees it: lower case, accents dropped ('vm.WEB01' → 'vm.web01', 'Ünit'
    → 'unit')."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def nearest(text: str, known: set[str]) -> str | None:
    """The known address a mistyped one most likely means: one equal but for case and accents,
    else the closest by difflib (ratio ≥ 0.6) over the folded forms; None when none is close."""
    folded: dict[str, str] = {}
    for address in sorted(known):
        folded.setdefault(_folded(address), address)
    if _folded(text) in folded:
        return folded[_folded(text)]
    near = difflib.get_close_matches(_folded(text), list(folded), n=1, cutoff=0.6)
    return folded[near[0]] if near else None


def _located(diagnostics: list[Diagnostic], locate: Locator | None) -> list[Diagnostic]:
    """Diagnostics with the spec file:line:col of their path, when a locator knows it."""
    if locate is None:
        return diagnostics
    return [
        d if d.location or not d.path else replace(d, location=locate(d.path)) for d in diagnostics
    ]
