"""Break-it 12e item 6: a graceful shutdown that outlasts power_off.timeout without force_after
fails the power-off, but vSphere's ShutdownGuest does not wait and cannot be cancelled: the
guest goes on shutting down. The settle found the VM still poweredOn, said "source already
powered on (not by ferry): left as it is" and dropped the record; seconds later production was
off and nothing said ferry did it. Now the power-off records that the guest accepted the
shutdown, and the settle tells a guest going off from one someone powered on (a real SQLite
state store; the vSphere calls faked)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import VSphereError
from engine.executor.cutover import Cutover
from engine.executor.cutover_base import SHUTDOWN_ASKED_AT
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

ADDRESS = "vm.web01.conversion"
AFTER = {"power_off": {"policy": "graceful", "timeout": 5, "on_failure": "power_on"}}
SNAPSHOT = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, AFTER)


def cutover(store: SqliteStateStore, said: list[str]) -> Cutover:
    return fakes.cutover(store, said, [SNAPSHOT])


def test_a_timed_out_graceful_shutdown_is_recorded(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def power_off(
        _si: Any, _vm: Any, _policy: Any, requested: Any, _stop: Any = None, *, asked: bool
    ) -> str:
        assert not asked  # a first power-off: the guest is asked
        requested()  # the guest accepted ShutdownGuest
        raise VSphereError("vm-1 did not shut down within 5 s")

    fakes.patch_vsphere(monkeypatch, power_state=lambda _si, _vm: "poweredOn", power_off=power_off)
    with pytest.raises(VSphereError):
        cutover(store, []).power_off_source("web01", "ref-web01", AFTER["power_off"])
    attrs = store.read().resources[ADDRESS].attributes
    assert attrs[SHUTDOWN_ASKED_AT] and attrs["powered_off_at"]


def settle(
    store: SqliteStateStore,
    monkeypatch: pytest.MonkeyPatch,
    *,
    guest: list[str],
    off_in_time: bool,
) -> tuple[list[str], list[str], list[str]]:
    """settle_sources after the timed-out shutdown; returns (its lines, what it said, the VMs
    it powered on)."""
    attrs = {"source_power": "poweredOn", "powered_off_at": 40.0, SHUTDOWN_ASKED_AT: 41.0}
    store.write([ResourceRecord(ADDRESS, "conversion", Status.IN_PROGRESS, attrs)], [])
    power = ["poweredOn"]
    powered: list[str] = []

    def wait(_si: Any, _vm: Any, state: str, timeout: float) -> bool:
        assert (state, timeout) == ("poweredOff", 5.0)  # the spec's timeout once more
        if off_in_time:
            power[0] = "poweredOff"
        return off_in_time

    def power_on(_si: Any, vm: str) -> bool:
        if power[0] == "poweredOn":
            return False
        powered.append(vm)
        return True

    fakes.patch_vsphere(
        monkeypatch,
        power_state=lambda _si, _vm: power[0],
        guest_state=lambda _si, _vm: guest.pop(0),
        wait_power_state=wait,
        power_on=power_on,
    )
    said: list[str] = []
    return cutover(store, said).settle_sources(), said, powered


def test_a_guest_still_shutting_down_is_never_said_powered_on(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, said, powered = settle(
        store, monkeypatch, guest=["shuttingDown", "shuttingDown"], off_in_time=False
    )
    assert said == lines
    assert len(said) == 1 and "vm.web01: source still shutting down (guest shuttingDown)" in said[0]
    assert "power it on once it is off" in said[0] and "already powered on" not in said[0]
    assert powered == []
    kept = store.read().resources[ADDRESS].attributes  # the next plan says ferry powered it off
    assert kept["powered_off_at"] == 40.0


def test_a_guest_that_went_off_in_the_wait_is_powered_back_on(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, said, powered = settle(store, monkeypatch, guest=["shuttingDown"], off_in_time=True)
    assert lines == [] and powered == ["ref-web01"]
    assert said == [
        "vm.web01: source powered back on (its graceful shutdown ended after ferry's timeout)"
    ]
    assert ADDRESS not in store.read().resources


def test_a_guest_that_declined_the_shutdown_is_said_running(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, said, powered = settle(store, monkeypatch, guest=["running"], off_in_time=False)
    assert lines == [] and powered == []
    assert said == [
        "vm.web01: source still running: the graceful shutdown ferry asked for did not end it "
        "(the guest runs); left as it is"
    ]
