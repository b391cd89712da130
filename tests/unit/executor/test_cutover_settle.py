"""After the walk, a source ferry powered off with no server is powered back on, or (leave_off)
left off with a line that says since when; a VM this apply could not power off is left alone
(a real SQLite state store; the vSphere power-on recorded)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack.exceptions import SDKException

from engine.errors import OpenStackError, SourceChangedError
from engine.executor import cutover as module
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore

OFF = {"source_power": "poweredOn", "powered_off": "graceful", "powered_off_at": 40.0}


def snapshot(name: str, on_failure: str) -> Change:
    after = {"power_off": {"policy": "graceful", "on_failure": on_failure}}
    return Change(f"vm.{name}.snapshot", "source_snapshot", Action.CREATE, "", None, after)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "ferry.db")
    opened.write([ResourceRecord(f"vm.{n}.conversion", "conversion", Status.IN_PROGRESS, OFF)
                  for n in ("web01", "db01")], [])  # fmt: skip
    yield opened
    opened.close()


@pytest.fixture
def powered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(module, "power_on", lambda _si, vm: seen.append(vm) or True)
    monkeypatch.setattr(module, "power_state", lambda _si, vm: "poweredOff")
    return seen


def test_a_source_someone_powered_on_is_not_said_powered_back_on(
    store: SqliteStateStore, powered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12d item 7e: "source powered back on" was said of a source that someone else
    had already powered on (here: while its server booted, break-it 12d item 4)."""
    monkeypatch.setattr(module, "power_state", lambda _si, vm: "poweredOn")
    monkeypatch.setattr(module, "power_on", lambda _si, vm: False)  # it was on: nothing done
    said: list[str] = []
    ctx = SimpleNamespace(
        store=store, si=None, conn=None, say=lambda _n, line: said.append(line), events=None
    )
    applier: Any = SimpleNamespace(
        ctx=ctx,
        _write=store.write,
        uuids={"web01": "u1"},
        changes={"vm.web01.snapshot": snapshot("web01", "power_on")},
        _vm=lambda name: f"ref-{name}",
    )
    assert Cutover(applier).settle_sources() == []
    assert said == ["vm.web01: source already powered on (not by ferry): left as it is"]


def settle(store: SqliteStateStore, changes: list[Change]) -> list[str]:
    ctx = SimpleNamespace(store=store, si=None, conn=None, say=lambda *_: None, events=None)
    applier: Any = SimpleNamespace(
        ctx=ctx,
        _write=store.write,
        uuids={"web01": "u1", "db01": "u2"},
        changes={c.address: c for c in changes},
        _vm=lambda name: f"ref-{name}",
    )
    return Cutover(applier).settle_sources()


def test_the_source_is_powered_back_on_and_its_record_goes(
    store: SqliteStateStore, powered: list[str]
) -> None:
    assert settle(store, [snapshot("web01", "power_on")]) == []
    assert powered == ["ref-web01"]  # db01: this apply could not have powered it off
    resources = store.read().resources
    assert "vm.web01.conversion" not in resources and "vm.db01.conversion" in resources


def test_leave_off_says_since_when(store: SqliteStateStore, powered: list[str]) -> None:
    lines = settle(store, [snapshot("web01", "leave_off")])
    assert lines == [
        "vm.web01: source powered off by ferry at 1970-01-01 00:00:40 UTC, no server yet"
    ]
    assert powered == []
    assert store.read().resources["vm.web01.conversion"].attributes["powered_off_at"] == 40.0


@pytest.mark.parametrize("in_cloud", [True, False])
def test_a_server_maybe_booted_keeps_the_source_off(
    store: SqliteStateStore, powered: list[str], monkeypatch: pytest.MonkeyPatch, in_cloud: bool
) -> None:
    """A boot record in progress keeps the source off while the cloud has a server for the VM;
    without one (a boot killed before the server was made, or its half-made server deleted:
    break-it 12d item 1, the cutover runs again) a failed new attempt powers it back on."""
    found = SimpleNamespace(id="srv-1") if in_cloud else None
    monkeypatch.setattr(module.compute, "find_server", lambda _conn, uuid: found)
    store.write([ResourceRecord("vm.web01.server", "server", Status.IN_PROGRESS, {})], [])
    assert settle(store, [snapshot("web01", "power_on")]) == []
    assert powered == ([] if in_cloud else ["ref-web01"])


def test_a_source_found_off_once_and_powered_on_since_is_powered_back_on(
    tmp_path: Path, powered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12c item 4: a first cutover attempt stopped while the source was off recorded
    source_power poweredOff; powered on since, the next attempt powered it off and, stopped,
    left it off without a word (the record still said it had been off)."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    found_off = {"source_power": "poweredOff", "powered_off": "already"}
    address = "vm.web01.conversion"
    store.write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, found_off)], [])
    monkeypatch.setattr(module, "power_state", lambda _si, _vm: "poweredOn")
    monkeypatch.setattr(module, "power_off", lambda _si, _vm, _policy, *_: "graceful")
    ctx = SimpleNamespace(
        store=store, si=None, say=lambda *_: None, events=None, stop=threading.Event()
    )
    applier: Any = SimpleNamespace(
        ctx=ctx,
        _write=store.write,
        uuids={"web01": "u1"},
        changes={"vm.web01.snapshot": snapshot("web01", "power_on")},
        _vm=lambda name: f"ref-{name}",
    )
    cut = Cutover(applier)
    assert cut.power_off_source("web01", "ref-web01", {"policy": "graceful"}) == "graceful"
    attrs = store.read().resources[address].attributes
    assert attrs["source_power"] == "poweredOn" and attrs["powered_off_at"]
    assert cut.settle_sources() == []  # stopped before a server: back on
    assert powered == ["ref-web01"]
    store.close()


@pytest.mark.parametrize(("now", "refused"), [("poweredOn", True), ("poweredOff", False)])
def test_no_server_boots_beside_a_source_running_again(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, now: str, refused: bool
) -> None:
    """Break-it 12c item 3: a source powered on again after its final snapshot (HA, a person)
    got its server booted anyway: two copies, same MACs, its later writes missing."""
    monkeypatch.setattr(module, "power_state", lambda _si, _vm: now)
    monkeypatch.setattr(module, "disk_change_ids", lambda _si, _vm: {})
    ctx = SimpleNamespace(store=store, si=None, say=lambda *_: None, events=None)
    applier: Any = SimpleNamespace(ctx=ctx, _vm=lambda name: f"ref-{name}")
    cut = Cutover(applier)
    if not refused:
        cut.check_source_off("web01")
        return
    with pytest.raises(SourceChangedError, match="the source is running again"):
        cut.check_source_off("web01")


def test_a_port_or_flavor_gone_since_the_plan_stops_before_the_power_off(tmp_path: Path) -> None:
    """Break-it 12c item 8: a saved cutover plan applied after a recorded port was deleted by
    hand powered the source off, then failed the boot. Checked before the power-off now."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write(
        [
            ResourceRecord("vm.web01.port[0]", "port", Status.READY, {"port_id": "p0"}),
            ResourceRecord("vm.web01.port[1]", "port", Status.READY, {"port_id": "p1"}),
        ],
        [],
    )
    ports, flavors = {"p0"}, {"m1.medium"}
    medium = SimpleNamespace(vcpus=2, ram=4096)

    def unreadable(*_: Any, **__: Any) -> None:  # quotas the user may not read: not checked
        raise SDKException("forbidden")

    unlimited = SimpleNamespace(get_quota_set=unreadable)
    conn = SimpleNamespace(
        network=SimpleNamespace(
            find_port=lambda i, ignore_missing: i if i in ports else None, get_quota=unreadable
        ),
        compute=SimpleNamespace(
            find_flavor=lambda n, ignore_missing: medium if n in flavors else None,
            keypairs=list,
            get_quota_set=unlimited.get_quota_set,
        ),
        block_storage=unlimited,
        current_project_id="p",
    )
    server = Change("vm.web01.server", "server", Action.CREATE, "", None, {"flavor": "m1.medium"})
    ctx = SimpleNamespace(store=store, si=None, conn=conn, say=lambda *_: None, events=None)
    applier: Any = SimpleNamespace(ctx=ctx, changes={server.address: server})
    cut = Cutover(applier)
    with pytest.raises(OpenStackError, match="port p1 that its server needs no longer exist"):
        cut.ready_destination("web01")
    ports.add("p1")
    cut.ready_destination("web01")
    flavors.clear()
    with pytest.raises(OpenStackError, match=r"flavor m1\.medium .*source was not powered off"):
        cut.ready_destination("web01")
    store.close()
