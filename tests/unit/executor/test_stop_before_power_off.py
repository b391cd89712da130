"""A stop asked before a running step crosses into an irreversible action (break-it 12e item
4): the cutover's snapshot step readies the destination (~3-5 s) and then powered the source
off without looking at the stop: a Ctrl-C 2.7 s before the power-off still hard-powered
production off (and with on_failure: leave_off left it off). Now the power-off, a
conversion's start and a boot go through Cutover.go_ahead: a stop that came first powers
nothing off, starts nothing, and says what it left. The signal handler sets the stop under the
same gate (a real SQLite state store; vSphere's and OpenStack's calls recorded)."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest
from rich.console import Console

from engine.cli.apply import _stop_on_signals
from engine.errors import StoppedError
from engine.executor import cutover as module
from engine.executor.cutover import Cutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

CONVERSION = "vm.web01.conversion"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "ferry.db")
    yield opened
    opened.close()


def cutover(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, on_failure: str = "power_on"
) -> tuple[Cutover, list[str], list[str]]:
    """A cutover of web01 (running) whose vSphere power calls are recorded in `calls`."""
    calls = fakes.Power().install(monkeypatch).calls
    said: list[str] = []
    return fakes.cutover(store, said, [fakes.snapshot("web01", on_failure)]), said, calls


@pytest.mark.parametrize("on_failure", ["power_on", "leave_off"])
def test_a_stop_before_the_power_off_leaves_the_source_on(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, on_failure: str
) -> None:
    """The f4 run: the stop came while ready_destination ran; the old code powered web01 off
    (hard), then on again 0.55 s later, or (leave_off) left it off with 'source powered off by
    ferry at …, no server yet'."""
    cut, said, calls = cutover(store, monkeypatch, on_failure)
    cut.ctx.stop.set()  # Ctrl-C during ready_volumes / ready_destination
    line = "vm.web01: stopped before the power-off: the source is left as it was (poweredOn)"
    with pytest.raises(StoppedError) as stopped:
        cut.power_off_source("web01", "ref-web01", {"policy": "graceful"})
    assert str(stopped.value) == line
    assert said == [line]
    assert calls == []  # neither off nor (after the walk) on again
    assert CONVERSION not in store.read().resources  # no 'powered off by ferry' recorded
    assert cut.powered_off == {}  # nothing for the signal handler to wait for
    assert cut.settle_sources() == []
    assert calls == []


def test_a_stop_after_the_go_ahead_is_put_back(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that comes once the power-off is under way: the power-off is recorded before the
    call (the handler and settle_sources see it), and the source is powered back on."""
    cut, _, calls = cutover(store, monkeypatch)

    def off_while_stopping(_si: Any, vm: Any, _policy: Any, *_: Any, **_k: Any) -> str:
        cut.ctx.stop.set()
        assert "web01" in cut.powered_off  # what a second Ctrl-C now would leave off
        calls.append(f"off {vm}")
        return "hard"

    fakes.patch_vsphere(monkeypatch, power_off=off_while_stopping)
    assert cut.power_off_source("web01", "ref-web01", {"policy": "graceful"}) == "hard"
    assert cut.settle_sources() == []
    assert calls == ["off ref-web01", "on ref-web01"]


def test_a_stop_before_the_boot_makes_no_server(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut, said, _ = cutover(store, monkeypatch)
    made: list[Any] = []
    monkeypatch.setattr(module.compute, "find_server", lambda _conn, _uuid: None)
    monkeypatch.setattr(module.compute, "others_named", lambda _conn, _name, _uuid: [])
    monkeypatch.setattr(module.compute, "create_server", lambda _conn, spec: made.append(spec))
    disk = {"volume_id": "vol-1", "epoch": "e1"}
    store.write(
        [
            ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, disk),
            ResourceRecord("vm.web01.port[0]", "port", Status.READY, {"port_id": "p0"}),
            ResourceRecord(CONVERSION, "conversion", Status.READY, {"epochs": {"2000": "e1"}}),
        ],
        [],
    )
    fakes.patch_vsphere(
        monkeypatch,
        power_state=lambda _si, _vm: "poweredOff",
        disk_change_ids=lambda _si, _vm: {},  # none moved
    )
    after = {"name": "web01", "flavor": "m1", "volumes": [2000], "ports": 1, "key_pair": None}
    cut.ctx.stop.set()
    with pytest.raises(StoppedError, match="stopped before the boot: no server was made"):
        cut.server(Change("vm.web01.server", "server", Action.CREATE, "", None, after))
    assert made == []
    assert "vm.web01.server" not in store.read().resources
    assert "web01" not in cut.booting  # the settle may put the source back
    assert said[-1] == "vm.web01: stopped before the boot: no server was made"


def test_a_stop_before_the_conversion_protects_and_converts_nothing(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut, _, _ = cutover(store, monkeypatch)
    disk = {"volume_id": "vol-1", "epoch": "e1"}
    store.write([ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, disk)], [])
    protected: list[str] = []
    monkeypatch.setattr(
        module.compute, "protection_snapshot", lambda _c, v, _n: protected.append(v) or "s"
    )
    after = {"disks": [{"key": 2000}], "tool": "virt-v2v-in-place"}
    cut.ctx.stop.set()
    with pytest.raises(StoppedError, match="stopped before the conversion"):
        cut.conversion(Change(CONVERSION, "conversion", Action.CREATE, "", None, after))
    assert protected == []
    assert CONVERSION not in store.read().resources


class Gate:
    """A stand-in for the cutover's gate that records whether the stop was set on entering
    and on leaving it."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.seen: list[tuple[str, bool]] = []

    def __enter__(self) -> None:
        self.seen.append(("enter", self.stop.is_set()))

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.seen.append(("exit", self.stop.is_set()))


def test_the_signal_handler_sets_the_stop_inside_the_gate() -> None:
    """The check in go_ahead and the handler's stop are atomic: a step that passed the gate
    has recorded its power-off (powered_off) before the handler's stop is set, so a second
    Ctrl-C reading `unsettled()` knows the source is off."""
    stop = threading.Event()
    gate = Gate(stop)
    walker = SimpleNamespace(stop=lambda: None)
    events = SimpleNamespace(emit=lambda *_a, **_k: None)
    with _stop_on_signals(walker, stop, events, Console(file=io.StringIO()), gate=gate):  # type: ignore[arg-type]
        os.kill(os.getpid(), signal.SIGINT)  # handled before the next line
    assert gate.seen == [("enter", False), ("exit", True)]
