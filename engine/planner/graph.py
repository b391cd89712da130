"""The action graph: an ordered list of small transformers, each adding one kind of edge between
changes (an edge u → v means u runs before v). No-ops are not nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import networkx as nx

from engine.addresses import Address
from engine.model.plan import Action, Change

Graph: TypeAlias = Any  # networkx.DiGraph of address strings
Transformer = Callable[[Graph, list[Change]], None]
DESTRUCTIVE = (Action.DELETE, Action.FORGET)


def _vm_of(change: Change) -> str:
    return str(Address.parse(change.address).vm)


def _by(changes: Iterable[Change], kind: str, destructive: bool) -> list[Change]:
    return [c for c in changes if c.kind == kind and (c.action in DESTRUCTIVE) == destructive]


def _same_vm_edges(
    graph: Graph, changes: list[Change], first: str, then: str, destructive: bool = False
) -> None:
    """u → v for every u of kind `first` and v of kind `then` of the same VM (grouped: linear)."""
    later: dict[str, list[str]] = {}
    for b in _by(changes, then, destructive):
        later.setdefault(_vm_of(b), []).append(b.address)
    for a in _by(changes, first, destructive):
        for address in later.get(_vm_of(a), []):
            graph.add_edge(a.address, address)


def cbt_before_snapshot(graph: Graph, changes: list[Change]) -> None:
    _same_vm_edges(graph, changes, "source_cbt", "source_snapshot")


def snapshot_before_copies(graph: Graph, changes: list[Change]) -> None:
    _same_vm_edges(graph, changes, "source_snapshot", "volume")
    _same_vm_edges(graph, changes, "source_snapshot", "disk_file")


def copies_before_conversion(graph: Graph, changes: list[Change]) -> None:
    _same_vm_edges(graph, changes, "volume", "conversion")
    _same_vm_edges(graph, changes, "disk_file", "conversion")


def _same_disk_edges(
    graph: Graph, changes: list[Change], first: str, then: str, destructive: bool
) -> None:
    """u → v for u of kind `first` and v of kind `then` of the same VM and disk key (index)."""
    later = {}
    for b in _by(changes, then, destructive):
        parsed = Address.parse(b.address)
        later[(str(parsed.vm), parsed.index)] = b.address
    for a in _by(changes, first, destructive):
        parsed = Address.parse(a.address)
        if (str(parsed.vm), parsed.index) in later:
            graph.add_edge(a.address, later[(str(parsed.vm), parsed.index)])


def conversion_before_images(graph: Graph, changes: list[Change]) -> None:
    """output: image: the converted files are uploaded, then volumes are made from the images,
    then the server boots; on teardown the server goes first, the images last."""
    _same_vm_edges(graph, changes, "conversion", "image")
    _same_disk_edges(graph, changes, "image", "image_volume", destructive=False)
    for kind in ("image", "image_volume"):
        _same_vm_edges(graph, changes, kind, "server")
        _same_vm_edges(graph, changes, "server", kind, destructive=True)
    _same_disk_edges(graph, changes, "image_volume", "image", destructive=True)
    _same_vm_edges(graph, changes, "server", "disk_file", destructive=True)


def conversion_ports_flavor_before_server(graph: Graph, changes: list[Change]) -> None:
    for kind in ("conversion", "port", "volume"):
        _same_vm_edges(graph, changes, kind, "server")
    by_flavor: dict[str, list[str]] = {}
    for server in _by(changes, "server", False):
        if server.after and server.after.get("flavor"):
            by_flavor.setdefault(str(server.after["flavor"]), []).append(server.address)
    for flavor in _by(changes, "flavor", False):
        for server_address in by_flavor.get(Address.parse(flavor.address).name, []):
            graph.add_edge(flavor.address, server_address)


def destination_before_power_off(graph: Graph, changes: list[Change]) -> None:
    """Every destination object a cutover needs (its ports, the flavor its server boots with, and
    through them a network ferry creates) comes before the snapshot that powers the source off:
    a MAC in use or a flavor ferry may not create fails while production still runs."""
    off = [
        c
        for c in _by(changes, "source_snapshot", False)
        if (c.after or {}).get("power_off") is not None
    ]
    _same_vm_edges(graph, [*off, *_by(changes, "port", False)], "port", "source_snapshot")
    flavors = {Address.parse(f.address).name: f.address for f in _by(changes, "flavor", False)}
    for server in _by(changes, "server", False):
        flavor = flavors.get(str((server.after or {}).get("flavor")))
        for snapshot in off:
            if flavor is not None and _vm_of(snapshot) == _vm_of(server):
                graph.add_edge(flavor, snapshot.address)


def networks_around_ports(graph: Graph, changes: list[Change]) -> None:
    """A network ferry creates comes before the ports on it; on teardown, after them."""
    for destructive in (False, True):
        by_network: dict[str, list[str]] = {}
        for port in _by(changes, "port", destructive):
            values = (port.before if destructive else port.after) or {}
            by_network.setdefault(str(values.get("network")), []).append(port.address)
        for network in _by(changes, "network", destructive):
            name = Address.parse(network.address).name
            for port_address in by_network.get(name, []):
                if destructive:
                    graph.add_edge(port_address, network.address)
                else:
                    graph.add_edge(network.address, port_address)


def conversion_host_first(graph: Graph, changes: list[Change]) -> None:
    """A conversion host ferry boots comes before every snapshot, copy and conversion (the source
    is not touched before the host is up); on teardown it goes last."""
    users = ("source_snapshot", "volume", "conversion")
    for host in _by(changes, "conversion_host", False):
        for change in changes:
            if change.kind in users and change.action not in DESTRUCTIVE:
                graph.add_edge(host.address, change.address)
    for host in _by(changes, "conversion_host", True):
        for change in changes:
            if change.kind != "conversion_host" and change.action in DESTRUCTIVE:
                graph.add_edge(change.address, host.address)


def server_deleted_first(graph: Graph, changes: list[Change]) -> None:
    """Teardown runs in reverse: the server goes before its ports, volumes and conversion (whose
    protection snapshots go before the volumes), and before the flavor made for it."""
    for kind in ("port", "volume", "conversion"):
        _same_vm_edges(graph, changes, "server", kind, destructive=True)
    # the protection snapshots go before their volumes (Cinder keeps a volume with snapshots)
    _same_vm_edges(graph, changes, "conversion", "volume", destructive=True)
    for flavor in _by(changes, "flavor", True):
        for server in _by(changes, "server", True):
            graph.add_edge(server.address, flavor.address)


def backout_before_syncs(graph: Graph, changes: list[Change]) -> None:
    """A VM set back to replicate (engine.planner.diff.backout): its unconfirmed server goes,
    then its conversion record, whose delete reverts the volumes to their protection
    snapshots, before a sync writes them (a volume still attached to that server, or reverted
    after the sync, would lose the sync)."""
    syncs: dict[str, list[str]] = {}
    for volume in _by(changes, "volume", False):
        syncs.setdefault(_vm_of(volume), []).append(volume.address)
    for kind in ("server", "conversion"):
        for undone in _by(changes, kind, True):
            for address in syncs.get(_vm_of(undone), []):
                graph.add_edge(undone.address, address)


def moves_first(graph: Graph, changes: list[Change]) -> None:
    """A VM's records move (renamed VM) before anything else of the VM runs, under its old or
    its new name (every move of a plan is carried out in one state write)."""
    for move in (c for c in changes if c.action is Action.MOVE):
        names = {move.address, str((move.before or {}).get("address"))}
        for change in changes:
            if change.action is not Action.MOVE and _vm_of(change) in names:
                graph.add_edge(move.address, change.address)


TRANSFORMERS: tuple[Transformer, ...] = (
    moves_first,
    cbt_before_snapshot,
    snapshot_before_copies,
    copies_before_conversion,
    conversion_before_images,
    conversion_ports_flavor_before_server,
    destination_before_power_off,
    networks_around_ports,
    conversion_host_first,
    server_deleted_first,
    backout_before_syncs,
)


def build(changes: list[Change]) -> Graph:
    graph: Graph = nx.DiGraph()
    actionable = [c for c in changes if c.action is not Action.NOOP]
    graph.add_nodes_from(c.address for c in actionable)
    for transform in TRANSFORMERS:
        transform(graph, actionable)
    if not nx.is_directed_acyclic_graph(graph):
        raise AssertionError(f"plan graph has a cycle: {nx.find_cycle(graph)}")
    return graph


def targeted(changes: list[Change], graph: Graph, targets: list[Address]) -> set[str]:
    """Addresses a --target selection keeps: the targets, their parts, and what they depend on."""
    keep: set[str] = set()
    for change in changes:
        address = Address.parse(change.address)
        if any(address == t or (t.part is None and address.vm == t) for t in targets):
            keep.add(change.address)
    for kept in list(keep):
        if kept in graph:
            keep |= nx.ancestors(graph, kept)
    return keep
