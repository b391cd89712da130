"""The cutover's graph: every destination object the server needs is made before the snapshot
that powers the source off, so a conflict found there never takes production down."""

from __future__ import annotations

import networkx as nx

from engine.model.plan import Action, Change
from engine.planner import graph

POWER = {"power_off": {"policy": "graceful", "on_failure": "power_on"}}


def _cutover(snapshot_after: dict[str, object]) -> list[Change]:
    return [
        Change("network.net-x", "network", Action.CREATE, "", None, {"name": "net-x"}),
        Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, snapshot_after),
        Change("vm.web01.disk[2000]", "volume", Action.UPDATE, "", {}, {}),
        Change("vm.web01.port[0]", "port", Action.CREATE, "", None, {"network": "net-x"}),
        Change("vm.web01.port[1]", "port", Action.CREATE, "", None, {"network": "net-y"}),
        Change("flavor.f4", "flavor", Action.CREATE, "", None, {"vcpus": 4}),
        Change("flavor.other", "flavor", Action.CREATE, "", None, {"vcpus": 8}),
        Change("vm.web01.conversion", "conversion", Action.CREATE, "", None, {}),
        Change("vm.web01.server", "server", Action.CREATE, "", None, {"flavor": "f4"}),
        Change("vm.db01.snapshot", "source_snapshot", Action.CREATE, "", None, dict(POWER)),
    ]


def test_ports_flavor_and_networks_come_before_the_power_off() -> None:
    built = graph.build(_cutover(dict(POWER)))
    before_off = nx.ancestors(built, "vm.web01.snapshot")
    assert {"vm.web01.port[0]", "vm.web01.port[1]", "flavor.f4", "network.net-x"} <= before_off
    assert "flavor.other" not in before_off  # another server's flavor is not waited for
    assert not nx.ancestors(built, "vm.db01.snapshot")  # nor another VM's ports


def test_a_replication_snapshot_does_not_wait_for_ports() -> None:
    built = graph.build(_cutover({"name": "ferry-web01"}))
    assert not nx.ancestors(built, "vm.web01.snapshot")


def test_protection_snapshots_go_before_their_volumes() -> None:
    teardown = [
        Change("vm.web01.disk[2000]", "volume", Action.DELETE, "", {}, None),
        Change("vm.web01.conversion", "conversion", Action.DELETE, "", {}, None),
        Change("vm.web01.port[0]", "port", Action.DELETE, "", {}, None),
    ]
    built = graph.build(teardown)
    assert built.has_edge("vm.web01.conversion", "vm.web01.disk[2000]")
