"""A settle line shows once on the console (NOTE-final, noticed: a cutover's settling said each
line as a step, and the apply printed the lines it returned again at the end, so "vm.web01:
source powered off by ferry at …" and every "state not written" settle line showed twice). The
settling and the end of the apply as `ferry apply` runs them: a real SQLite state, a real
HumanView on a console, vSphere's power-on faked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from engine.cli import apply as cli
from engine.cli.progress import HumanView
from engine.executor.cutover import Cutover
from engine.executor.events import Events
from engine.executor.walker import WalkResult
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor.fakes import Power, context, fake_applier

OFF = {"source_power": "poweredOn", "powered_off": "graceful", "powered_off_at": 40.0}


@pytest.mark.parametrize("on_failure", ["leave_off", "power_on"])
def test_each_settle_line_shows_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_failure: str
) -> None:
    Power().install(monkeypatch)
    store = SqliteStateStore(tmp_path / "ferry.db")
    record = ResourceRecord("vm.web01.conversion", "conversion", Status.IN_PROGRESS, OFF)
    store.write([record], [])
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    events = Events(None, (HumanView(console),))
    after = {"power_off": {"policy": "graceful", "on_failure": on_failure}}
    snapshot = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, after)
    ctx = context(store, events=events)
    ctx.say = lambda vm, line: events.emit("step", vm=vm, message=line)
    Cutover(fake_applier(ctx, [snapshot])).settle_sources()
    cli._say_what_did_not_run(WalkResult(), events, console)
    shown = out.getvalue()
    said = (
        "vm.web01: source powered off by ferry at 1970-01-01 00:00:40 UTC, no server yet"
        if on_failure == "leave_off"
        else "vm.web01: source powered back on"
    )
    assert shown.count(said) == 1, shown
    store.close()
