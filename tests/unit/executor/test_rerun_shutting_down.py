"""Break-it 12f F3: a cutover's apply killed during the graceful wait (before it could record
the ask), then the same cutover applied at once while the guest is still going off (VMware Tools:
guest.guestState shuttingDown, the VM still poweredOn). The re-run took it for a source powered
back on: it reset powered_off_at, asked the guest again and said "source powered off
(graceful)", and the report measured the downtime from that second power-off. Now it waits for
the guest without asking again and keeps the first power-off. A real SQLite state store; the
vSphere calls faked (tests.unit.executor.fakes.Power)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import VSphereError
from engine.executor.cutover import Cutover
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

ADDRESS = "vm.web01.conversion"
KILLED = {"source_power": "poweredOn", "powered_off_at": 40.0}  # what the killed apply wrote


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "ferry.db")
    opened.write([ResourceRecord(ADDRESS, "conversion", Status.IN_PROGRESS, KILLED)], [])
    yield opened
    opened.close()


def rerun(store: SqliteStateStore, power: fakes.Power, said: list[str]) -> tuple[Cutover, str]:
    cut = fakes.cutover(store, said, [fakes.snapshot("web01", "power_on")])
    return cut, cut.power_off_source("web01", "ref-web01", {"policy": "graceful", "timeout": 60})


def attributes(store: SqliteStateStore) -> dict[str, Any]:
    return dict(store.read().resources[ADDRESS].attributes)


def test_a_rerun_waits_for_the_guest_still_going_off_and_keeps_the_first_power_off(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    power = fakes.Power(how="graceful").install(monkeypatch)
    power.guest = "shuttingDown"
    said: list[str] = []
    cut, how = rerun(store, power, said)
    assert how == "graceful"
    assert power.calls == ["awaited ref-web01", "off ref-web01"]  # not asked again
    assert said == [
        "vm.web01: source powered off (graceful: the guest finished the shutdown ferry asked "
        "for at 00:00:40 UTC, not asked again)"
    ]
    attrs = attributes(store)
    assert attrs["powered_off_at"] == 40.0  # the downtime runs from the first power-off
    assert attrs["source_power"] == "poweredOn" and "shutdown_asked_at" not in attrs
    assert cut.powered_off == {"web01": 40.0}  # what a stop now would put back


def test_a_rerun_timing_out_on_the_guest_still_going_off_records_the_first_ask(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait times out (no force_after): the record says when ferry asked, so the settle
    and the next plan tell a guest still going off from one someone powered on."""

    def power_off(*_: Any, asked: bool) -> str:
        assert asked
        raise VSphereError("vm-1 did not shut down within 60 s")

    fakes.patch_vsphere(
        monkeypatch,
        power_state=lambda _si, _vm: "poweredOn",
        guest_state=lambda _si, _vm: "shuttingDown",
        power_off=power_off,
    )
    with pytest.raises(VSphereError):
        rerun(store, fakes.Power(), [])
    attrs = attributes(store)
    assert attrs["powered_off_at"] == 40.0 and attrs["shutdown_asked_at"] == 40.0


def test_a_source_running_again_is_powered_off_anew(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guest that runs (powered back on by an apply that could not record it, break-it 12c
    item 6): a new power-off, asked, and its own time recorded."""
    power = fakes.Power(how="graceful").install(monkeypatch)
    said: list[str] = []
    rerun(store, power, said)
    assert power.calls == ["off ref-web01"]
    assert said == ["vm.web01: source powered off (graceful)"]
    assert attributes(store)["powered_off_at"] > 40.0
