"""After the walk, a source ferry powered off with no server is powered back on, or (leave_off)
left off with a line that says since when; a VM this apply could not power off is left alone
(a real SQLite state store; the vSphere power-on recorded)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack.exceptions import SDKException

from engine.errors import OpenStackError, SourceChangedError, StoppedError
from engine.executor import cutover as module
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor.fakes import Power, cutover, patch_vsphere, snapshot

OFF = {"source_power": "poweredOn", "powered_off": "graceful", "powered_off_at": 40.0}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "ferry.db")
    opened.write([ResourceRecord(f"vm.{n}.conversion", "conversion", Status.IN_PROGRESS, OFF)
                  for n in ("web01", "db01")], [])  # fmt: skip
    yield opened
    opened.close()


@pytest.fixture
def power(monkeypatch: pytest.MonkeyPatch) -> Power:
    return Power(state="poweredOff").install(monkeypatch)


def test_a_source_someone_powered_on_is_not_said_powered_back_on(
    store: SqliteStateStore, power: Power
) -> None:
    """Break-it 12d item 7e: "source powered back on" was said of a source that someone else
    had already powered on (here: while its server booted, break-it 12d item 4)."""
    power.state, power.powers_on = "poweredOn", False  # it was on: nothing done
    said: list[str] = []
    assert cutover(store, said, [snapshot("web01", "power_on")]).settle_sources() == []
    assert said == ["vm.web01: source already powered on (not by ferry): left as it is"]


def settle(store: SqliteStateStore, changes: list[Change]) -> list[str]:
    return cutover(store, None, changes, uuids={"web01": "u1", "db01": "u2"}).settle_sources()


def test_the_source_is_powered_back_on_and_its_record_goes(
    store: SqliteStateStore, power: Power
) -> None:
    assert settle(store, [snapshot("web01", "power_on")]) == []
    assert power.powered_on == ["ref-web01"]  # db01: this apply could not have powered it off
    resources = store.read().resources
    assert "vm.web01.conversion" not in resources and "vm.db01.conversion" in resources


def test_leave_off_says_since_when(store: SqliteStateStore, power: Power) -> None:
    lines = settle(store, [snapshot("web01", "leave_off")])
    assert lines == [
        "vm.web01: source powered off by ferry at 1970-01-01 00:00:40 UTC, no server yet"
    ]
    assert power.calls == []
    assert store.read().resources["vm.web01.conversion"].attributes["powered_off_at"] == 40.0


@pytest.mark.parametrize("in_cloud", [True, False])
def test_a_server_maybe_booted_keeps_the_source_off(
    store: SqliteStateStore, power: Power, monkeypatch: pytest.MonkeyPatch, in_cloud: bool
) -> None:
    """A boot record in progress keeps the source off while the cloud has a server for the VM;
    without one (a boot killed before the server was made, or its half-made server deleted:
    break-it 12d item 1, the cutover runs again) a failed new attempt powers it back on."""
    found = SimpleNamespace(id="srv-1") if in_cloud else None
    monkeypatch.setattr(module.compute, "find_server", lambda _conn, uuid: found)
    store.write([ResourceRecord("vm.web01.server", "server", Status.IN_PROGRESS, {})], [])
    assert settle(store, [snapshot("web01", "power_on")]) == []
    assert power.powered_on == ([] if in_cloud else ["ref-web01"])


def test_a_source_found_off_once_and_powered_on_since_is_powered_back_on(
    tmp_path: Path, power: Power
) -> None:
    """Break-it 12c item 4: a first cutover attempt stopped while the source was off recorded
    source_power poweredOff; powered on since, the next attempt powered it off and, stopped,
    left it off without a word (the record still said it had been off)."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    found_off = {"source_power": "poweredOff", "powered_off": "already"}
    address = "vm.web01.conversion"
    store.write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, found_off)], [])
    power.state, power.how = "poweredOn", "graceful"
    cut = cutover(store, None, [snapshot("web01", "power_on")])
    assert cut.power_off_source("web01", "ref-web01", {"policy": "graceful"}) == "graceful"
    attrs = store.read().resources[address].attributes
    assert attrs["source_power"] == "poweredOn" and attrs["powered_off_at"]
    assert cut.settle_sources() == []  # stopped before a server: back on
    assert power.powered_on == ["ref-web01"]
    store.close()


@pytest.mark.parametrize(("now", "refused"), [("poweredOn", True), ("poweredOff", False)])
def test_no_server_boots_beside_a_source_running_again(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, now: str, refused: bool
) -> None:
    """Break-it 12c item 3: a source powered on again after its final snapshot (HA, a person)
    got its server booted anyway: two copies, same MACs, its later writes missing."""
    Power(state=now).install(monkeypatch)
    patch_vsphere(monkeypatch, disk_change_ids=lambda _si, _vm: {})
    cut = cutover(store)
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
            servers=lambda details: [],
        ),
        block_storage=unlimited,
        current_project_id="p",
    )
    server = Change("vm.web01.server", "server", Action.CREATE, "", None, {"flavor": "m1.medium"})
    cut = cutover(store, None, [server], conn=conn)
    with pytest.raises(OpenStackError, match="port p1 that its server needs no longer exists "):
        cut.ready_destination("web01")
    ports.add("p1")
    cut.ready_destination("web01")
    flavors.clear()
    with pytest.raises(OpenStackError, match=r"flavor m1\.medium .*source was not powered off"):
        cut.ready_destination("web01")
    store.close()


def test_a_failed_cutover_settles_its_source_once_its_steps_end(
    store: SqliteStateStore, power: Power
) -> None:
    """Break-it 16e H1: a cutover step that failed with the source off (Glance down: its
    volume from image) left the source off until the whole walk ended: 105 s behind the
    VM's other upload, and behind another VM's replica copy (hours for a big disk). The
    VM's other steps are stopped (its own stop), none begins, and once none runs the source
    is powered back on; the apply's stop and other VMs are untouched; the settle after the
    walk does not do it twice."""
    said: list[str] = []
    cut = cutover(store, said, [snapshot("web01", "power_on")], uuids={"web01": "u1", "db01": "u2"})
    cut.powered_off["web01"] = 40.0
    cut.step_began("vm.web01.image[2000]")
    cut.step_began("vm.web01.volume[2001]")
    cut.step_began("vm.db01.disk[2000]")
    stop = cut.ctx.stop
    assert not stop.of("web01").is_set()
    cut.step_ended("vm.web01.volume[2001]", OpenStackError("Invalid image identifier"))
    assert stop.of("web01").is_set() and not stop.is_set() and not stop.of("db01").is_set()
    assert power.powered_on == []  # its upload still runs (it is stopping)
    assert said[-1].startswith(
        "vm.web01: its cutover failed at vm.web01.volume[2001] with the source off by ferry "
        "(its other steps end now): the source is powered back on as soon as none runs"
    )
    with pytest.raises(StoppedError, match=r"not begun: vm\.web01's cutover failed at vm\.web01"):
        cut.step_began("vm.web01.server")
    cut.step_ended("vm.web01.image[2000]", StoppedError("stopped at 8 MiB"))
    assert power.powered_on == ["ref-web01"]  # at once, while db01's copy still runs
    assert "vm.web01.conversion" not in store.read().resources
    cut.step_ended("vm.db01.disk[2000]", None)
    assert cut.settle_sources() == [] and power.powered_on == ["ref-web01"]


def test_a_stopped_step_or_a_source_on_abandons_nothing(
    store: SqliteStateStore, power: Power
) -> None:
    """A step stopped by the apply's stop (Ctrl-C: settled after the walk, as before), and a
    failure of a VM whose source this apply does not hold off, stop no other step."""
    cut = cutover(store, None, [snapshot("web01", "power_on")], uuids={"web01": "u1", "db01": "u2"})
    cut.powered_off["web01"] = 40.0
    cut.step_began("vm.web01.disk[2000]")
    cut.step_ended("vm.web01.disk[2000]", StoppedError("stopped"))
    cut.step_began("vm.db01.disk[2000]")
    cut.step_ended("vm.db01.disk[2000]", OpenStackError("boom"))
    assert cut.abandoned == {} and power.powered_on == []
    assert not cut.ctx.stop.of("web01").is_set() and not cut.ctx.stop.of("db01").is_set()


def test_a_source_an_earlier_apply_left_off_is_known_before_the_walk(
    store: SqliteStateStore,
) -> None:
    """Break-it 12p F1 (C): a source left off by an earlier apply (kill -9, leave_off) is
    not in powered_off until its snapshot step runs: its steps are urgent from the start."""
    cut = cutover(
        store, None, [snapshot("web01", "leave_off")], uuids={"web01": "u1", "db01": "u2"}
    )
    assert cut.left_off_before() == {"web01"}  # db01: recorded off, not cut over by this plan
