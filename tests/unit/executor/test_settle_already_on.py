"""Break-it 12d item 7e, its whole kind: "source powered back on" is said only of a source ferry
powered on. The settle with the state (test_settle_wording), without it (state unreachable), and
the power-on of an undone cutover (back to replicate, destroy) each say 'already powered on (not
by ferry)' of a source someone else powered on first. A real SQLite store; vSphere's power-on
faked (its answer: whether this call powered the VM on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import StateUnreachableError, VSphereError
from engine.executor.cutover import Cutover
from engine.executor.settle import ALREADY_ON
from engine.model.plan import Action, Change
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor.fakes import Power, cutover

AFTER = {"power_off": {"policy": "hard", "on_failure": "power_on"}}
SNAPSHOT = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, AFTER)


class Unreachable(SqliteStateStore):
    def read(self) -> Any:
        raise StateUnreachableError("state unreachable", brief="state unreachable since 17:00")


def _cutover(store: SqliteStateStore, lines: list[str]) -> Cutover:
    return cutover(store, lines, [SNAPSHOT])


@pytest.mark.parametrize("ferry_powered_it_on", [True, False])
def test_without_the_state_the_line_says_who_powered_the_source_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ferry_powered_it_on: bool
) -> None:
    Power(powers_on=ferry_powered_it_on).install(monkeypatch)
    store, lines = Unreachable(tmp_path / "ferry.db"), []
    cut = _cutover(store, lines)
    cut.powered_off["web01"] = 40.0
    (line,) = cut.settle_sources()
    done = "source powered back on" if ferry_powered_it_on else ALREADY_ON
    assert line.startswith(f"vm.web01: {done} (ferry powered it off at 00:00:40 UTC)"), line
    assert (ALREADY_ON in line) is not ferry_powered_it_on
    store.close()


@pytest.mark.parametrize("ferry_powered_it_on", [True, False])
def test_an_undone_cutover_says_who_powered_the_source_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ferry_powered_it_on: bool
) -> None:
    Power(powers_on=ferry_powered_it_on).install(monkeypatch)
    store, lines = SqliteStateStore(tmp_path / "ferry.db"), []
    _cutover(store, lines)._power_back_on("web01", {"powered_off_at": 40.0})
    done = "source powered back on (ferry powered it off at 00:00:40 UTC)"
    assert lines == [f"vm.web01: {done if ferry_powered_it_on else ALREADY_ON}"]
    store.close()


@pytest.mark.parametrize("off_in_time", [False, True])
def test_an_undone_cutover_waits_for_a_guest_still_going_off_from_ferrys_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, off_in_time: bool
) -> None:
    """Break-it 12f F1: a cutover killed during its graceful wait (no shutdown_asked_at), then
    backed out (replicate, destroy) while the guest is still shuttingDown: the power-on said
    "already powered on (not by ferry)", the record went, and the guest went off seconds later
    with no word. Now the guest is waited for: off in time, it is powered back on; still going,
    the step fails with the loud line and the record stays."""
    power = Power().install(monkeypatch)
    power.guest, power.off_in_time = "shuttingDown", off_in_time
    store, lines = SqliteStateStore(tmp_path / "ferry.db"), []
    cut = _cutover(store, lines)
    if off_in_time:
        cut._power_back_on("web01", {"powered_off_at": 40.0})
        assert lines == ["vm.web01: source powered back on (ferry powered it off at 00:00:40 UTC)"]
        assert power.calls == ["wait ref-web01", "off ref-web01", "on ref-web01"]
    else:
        with pytest.raises(VSphereError, match=r"source still shutting down \(guest shuttingDown"):
            cut._power_back_on("web01", {"powered_off_at": 40.0})
        assert power.powered_on == [] and lines == []
    store.close()


def test_an_undone_cutover_leaves_a_guest_someone_else_runs_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guest that runs (not shuttingDown) was powered on by someone: not waited for."""
    power = Power(powers_on=False).install(monkeypatch)
    store, lines = SqliteStateStore(tmp_path / "ferry.db"), []
    _cutover(store, lines)._power_back_on("web01", {"powered_off_at": 40.0})
    assert lines == [f"vm.web01: {ALREADY_ON}"] and "wait ref-web01" not in power.calls
    store.close()


def test_without_the_state_a_guest_still_going_off_is_waited_for_then_powered_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12f F3's kind: the settle without the state (unreachable) after a stop during
    the graceful wait found the guest still shuttingDown (poweredOn) and said "already powered
    on (not by ferry)"; now it waits for the guest and powers it back on."""
    power = Power().install(monkeypatch)
    power.guest, power.off_in_time = "shuttingDown", True
    store, lines = Unreachable(tmp_path / "ferry.db"), []
    cut = _cutover(store, lines)
    cut.powered_off["web01"] = 40.0
    (line,) = cut.settle_sources()
    assert line.startswith("vm.web01: source powered back on (ferry powered it off at 00:00:40")
    assert power.calls == ["wait ref-web01", "off ref-web01", "on ref-web01"]
    store.close()
