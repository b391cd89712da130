"""Ports carry the lineage of the ferry state that made them (break-it 16g L4: a fresh state, a
rehearsal or a typo in --state, reused another state's ports found by MAC, and its --destroy
deleted them): the description ferry writes at the port's create names it (`ferry_state`,
atomically, as the VM and NIC); refresh reads it; the cutover reuses a found port only when it
is this state's or the one the plan adopts (relabelled then), and a recorded port an older
ferry made is labelled in place. A fake Neutron; the real cutover step on a real SQLite state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import OpenStackError
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.providers.openstack import compute
from engine.providers.openstack.read import parse_port
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

UUID = "4215aaaa-0000-4000-8000-000000000001"
MINE, OTHER = "fake-lineage", "other-lineage"
MAC = "00:50:56:00:01:00"


class Neutron:
    """One network; ports by id with their description; creates and updates recorded."""

    def __init__(self, *described: tuple[str, str]) -> None:
        self.ports = {i: SimpleNamespace(id=i, description=d, tags=[], name="p", mac_address=MAC)
                      for i, d in described}  # fmt: skip
        self.created: list[dict[str, Any]] = []
        self.updated: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    def find_network(self, name: str, ignore_missing: bool) -> Any:
        return SimpleNamespace(id="net-1")

    def ports_of(self, mac_address: str, network_id: str) -> list[Any]:
        return [p for p in self.ports.values() if p.mac_address == mac_address]

    def create_port(self, **fields: Any) -> Any:
        self.created.append(fields)
        self.ports["p-new"] = SimpleNamespace(id="p-new", tags=[], **{
            "description": fields["description"], "name": "p", "mac_address": MAC})  # fmt: skip
        return self.ports["p-new"]

    def update_port(self, port: Any, description: str) -> Any:
        self.updated.append((port.id, description))
        port.description = description
        return port

    def get_port(self, port_id: str) -> Any:
        return self.ports[port_id]

    def find_port(self, port_id: str, ignore_missing: bool) -> Any:
        return self.ports.get(port_id)

    def delete_port(self, port_id: str, ignore_missing: bool) -> None:
        self.deleted.append(port_id)


def _conn(neutron: Neutron) -> Any:
    return SimpleNamespace(network=SimpleNamespace(
        find_network=neutron.find_network, ports=neutron.ports_of, create_port=neutron.create_port,
        update_port=neutron.update_port, get_port=neutron.get_port, find_port=neutron.find_port,
        delete_port=neutron.delete_port, set_tags=lambda port, tags: None,
        find_security_group=lambda name, ignore_missing: SimpleNamespace(id=name),
    ))  # fmt: skip


def _spec(adopts: str | None = None) -> compute.PortSpec:
    return compute.PortSpec("web01-nic0", UUID, 0, MAC, "net-a", None, None, (), MINE, adopts)


def described(lineage: str = "") -> str:
    return compute.description(UUID, 0, lineage)


def test_a_new_port_names_its_state_from_its_create_on() -> None:
    neutron = Neutron()
    port, created = compute.ensure_port(_conn(neutron), _spec())
    assert (
        created and neutron.created[0]["description"] == f"ferry_vm={UUID} nic=0 ferry_state={MINE}"
    )
    found = parse_port(SimpleNamespace(**{**vars(port), "network_id": "net-1", "fixed_ips": [],
                                          "device_owner": "", "device_id": ""}))  # fmt: skip
    assert (found.vm_uuid, found.nic, found.lineage) == (UUID, 0, MINE)


def test_another_states_port_is_not_reused_unless_the_plan_adopts_it() -> None:
    neutron = Neutron(("p-theirs", described(OTHER)))
    with pytest.raises(OpenStackError, match=f"port p-theirs, which ferry made for this NIC and "
                       f"ferry state {OTHER} manages: not reused"):  # fmt: skip
        compute.ensure_port(_conn(neutron), _spec())
    assert (neutron.created, neutron.updated) == ([], [])
    port, created = compute.ensure_port(_conn(neutron), _spec(adopts=OTHER))  # --adopt-lineage
    assert (port.id, created) == ("p-theirs", False)
    assert neutron.updated == [("p-theirs", described(MINE))]  # this state's from now on


def test_an_older_ferrys_port_is_reused_only_when_the_plan_adopts_it_unlabelled() -> None:
    neutron = Neutron(("p-old", described()))
    with pytest.raises(
        OpenStackError, match=r"an older ferry \(no ferry_state: unlabelled\) manages"
    ):
        compute.ensure_port(_conn(neutron), _spec())
    with pytest.raises(OpenStackError, match="manages since the plan"):  # found of another state
        compute.ensure_port(_conn(neutron), _spec(adopts=OTHER))
    compute.ensure_port(_conn(neutron), _spec(adopts=""))  # --adopt-lineage unlabeled
    assert neutron.updated == [("p-old", described(MINE))]


def test_this_states_port_a_killed_apply_left_is_reused_as_it_is() -> None:
    neutron = Neutron(("p-mine", described(MINE)))
    port, created = compute.ensure_port(_conn(neutron), _spec())
    assert (port.id, created, neutron.updated) == ("p-mine", False, [])


def _cutover(tmp_path: Path, neutron: Neutron, record: ResourceRecord) -> Any:
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write([record], [])
    return fakes.cutover(store, conn=_conn(neutron)), store


RECORD = ResourceRecord(
    "vm.web01.port[0]", "port", Status.READY, {"port_id": "p0", "mac": MAC, "network": "net-a"}
)


def test_a_recorded_port_an_older_ferry_made_is_labelled(tmp_path: Path) -> None:
    neutron = Neutron(("p0", described()))
    step, store = _cutover(tmp_path, neutron, RECORD)
    after = {**RECORD.attributes, "label_lineage": True}
    step.port(
        Change(RECORD.address, "port", Action.UPDATE, "label", dict(RECORD.attributes), after)
    )
    assert neutron.updated == [("p0", described(MINE))]
    assert store.read().resources[RECORD.address].attributes == RECORD.attributes
    neutron.ports["p0"].description = described(OTHER)  # taken over since: not labelled
    with pytest.raises(OpenStackError, match=f"port p0 is managed by ferry state {OTHER}"):
        step.port(Change(RECORD.address, "port", Action.UPDATE, "label", None, after))
    store.close()


def test_a_recorded_port_another_state_manages_now_is_not_deleted(tmp_path: Path) -> None:
    neutron = Neutron(("p0", described(OTHER)))
    step, store = _cutover(tmp_path, neutron, RECORD)
    change = Change(
        RECORD.address, "port", Action.DELETE, "--destroy", dict(RECORD.attributes), None
    )
    with pytest.raises(OpenStackError, match=f"port p0 is managed by ferry state {OTHER} now"):
        step.port(change)
    assert neutron.deleted == [] and RECORD.address in store.read().resources
    neutron.ports["p0"].description = described(MINE)
    step.port(change)
    assert neutron.deleted == ["p0"] and RECORD.address not in store.read().resources
    store.close()
