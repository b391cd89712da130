"""Break-it 12d item 7e: after a stop, "source powered back on" was said for a source someone
else had already powered on since ferry powered it off. Now the line says which it was (a real
SQLite state store; the vSphere power-on's answer faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor.fakes import Power, cutover

OFF = {"source_power": "poweredOn", "powered_off": "graceful", "powered_off_at": 40.0}


@pytest.mark.parametrize(
    ("ferry_powered_it_on", "said"),
    [
        (True, "vm.web01: source powered back on"),
        (False, "vm.web01: source already powered on (not by ferry): left as it is"),
    ],
)
def test_the_line_says_who_powered_the_source_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ferry_powered_it_on: bool, said: str
) -> None:
    Power(powers_on=ferry_powered_it_on).install(monkeypatch)
    store = SqliteStateStore(tmp_path / "ferry.db")
    record = ResourceRecord("vm.web01.conversion", "conversion", Status.IN_PROGRESS, OFF)
    store.write([record], [])
    lines: list[str] = []
    after = {"power_off": {"policy": "graceful", "on_failure": "power_on"}}
    snapshot = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, after)
    assert cutover(store, lines, [snapshot]).settle_sources() == []
    assert lines == [said]
    store.close()
