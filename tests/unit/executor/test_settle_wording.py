"""Break-it 12d item 7e: after a stop, "source powered back on" was said for a source someone
else had already powered on since ferry powered it off. Now the line says which it was (a real
SQLite state store; the vSphere power-on's answer faked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.executor import cutover as module
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore

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
    monkeypatch.setattr(module, "power_on", lambda _si, _vm: ferry_powered_it_on)
    store = SqliteStateStore(tmp_path / "ferry.db")
    record = ResourceRecord("vm.web01.conversion", "conversion", Status.IN_PROGRESS, OFF)
    store.write([record], [])
    lines: list[str] = []
    after = {"power_off": {"policy": "graceful", "on_failure": "power_on"}}
    snapshot = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, after)
    ctx = SimpleNamespace(
        store=store, si=None, say=lambda _n, line: lines.append(line), events=None
    )
    applier: Any = SimpleNamespace(
        ctx=ctx,
        _write=store.write,
        uuids={"web01": "u1"},
        changes={snapshot.address: snapshot},
        _vm=lambda name: f"ref-{name}",
    )
    assert Cutover(applier).settle_sources() == []
    assert lines == [said]
    store.close()
