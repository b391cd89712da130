"""A cutover whose state is lost after the source's power-off (break-it 12c item 6): the apply
settles what it did from its own knowledge — the source powered back on (unless leave_off, a
server maybe booting, or another ferry holding the state now), each line saying what the state
lacks; a source the state says ferry powered off but that runs is recorded anew. A real SQLite
store behind a switch that makes it unreachable; the vSphere calls recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StateError, StateLockedError, StateUnreachableError
from engine.executor.cutover import Cutover
from engine.model.state import ResourceRecord, State, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

GONE = StateUnreachableError(
    "state pg (schema ferry) unreachable: the connection was lost and not made again in 30 s "
    "(since 17:00:00 UTC: connection refused)",
    brief="state pg (schema ferry) unreachable since 17:00:00 UTC",
)


class Switchable:
    """A real store whose reads and writes fail with `lost` once it is set."""

    def __init__(self, inner: SqliteStateStore) -> None:
        self.inner = inner
        self.lost: StateError | None = None
        self.lost_after_reads: int | None = None  # reads still answered before `lost` applies

    def read(self) -> State:
        if self.lost is not None and not self.lost_after_reads:
            raise self.lost
        if self.lost_after_reads:
            self.lost_after_reads -= 1
        return self.inner.read()

    def write(self, puts: list[ResourceRecord], deletes: list[str]) -> int:
        if self.lost is not None:
            raise self.lost
        return self.inner.write(puts, deletes)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Switchable]:
    inner = SqliteStateStore(tmp_path / "ferry.db")
    yield Switchable(inner)
    inner.close()


@pytest.fixture
def powered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return fakes.Power().install(monkeypatch).calls


def cutover(store: Switchable, on_failure: str = "power_on") -> tuple[Cutover, list[str]]:
    said: list[str] = []
    changes = [fakes.snapshot("web01", on_failure, "hard")]
    return fakes.cutover(store, said, changes, uuids={"web01": "u1", "db01": "u2"}), said


def test_the_source_goes_back_on_from_the_apply_own_knowledge(
    store: Switchable, powered: list[str]
) -> None:
    cut, said = cutover(store)
    cut.power_off_source("web01", "ref-web01", {"policy": "hard"})
    store.lost = GONE
    lines = cut.settle_sources()
    assert powered == ["off ref-web01", "on ref-web01"]
    assert len(lines) == 1 and lines[0] in said
    assert lines[0].startswith("vm.web01: source powered back on (ferry powered it off at ")
    assert lines[0].endswith(
        "the state still says it is off until the next apply; state not written: "
        "state pg (schema ferry) unreachable since 17:00:00 UTC"
    )


def test_leave_off_a_server_maybe_booting_or_another_ferry_keep_it_off(
    store: Switchable, powered: list[str]
) -> None:
    cut, _ = cutover(store, "leave_off")
    cut.power_off_source("web01", "ref-web01", {"policy": "hard"})
    store.lost = GONE
    (line,) = cut.settle_sources()
    assert "source powered off by ferry at" in line and "(on_failure: leave_off)" in line

    cut, _ = cutover(store)
    store.lost = None
    cut.power_off_source("web01", "ref-web01", {"policy": "hard"})
    cut.booting.add("web01")
    store.lost = GONE
    (line,) = cut.settle_sources()
    assert line.startswith("vm.web01: source left off: its server may have booted; state not")

    cut.booting.clear()
    store.lost = StateLockedError("state pg: ... another ferry locked the state")
    (line,) = cut.settle_sources()
    assert "left as it is (another ferry holds the state now)" in line
    assert powered.count("on ref-web01") == 0


def test_a_state_readable_but_not_writable_still_powers_every_source_on(
    store: Switchable, powered: list[str]
) -> None:
    cut, _ = cutover(store)
    cut.power_off_source("web01", "ref-web01", {"policy": "hard"})
    store.lost, store.lost_after_reads = GONE, 1  # settle's read answered, its write lost
    (line,) = cut.settle_sources()
    assert powered[-1] == "on ref-web01"
    assert line.startswith("vm.web01: source powered back on; state not written: ")


def test_a_source_running_though_the_state_says_ferry_powered_it_off_is_recorded_anew(
    store: Switchable, powered: list[str]
) -> None:
    """The apply that powered it back on could not record it: the next power-off starts a new
    downtime (the state's 40.0 is an old one) and records the source as running."""
    address = "vm.web01.conversion"
    old = {"source_power": "poweredOn", "powered_off": "hard", "powered_off_at": 40.0}
    store.write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, old)], [])
    cut, _ = cutover(store)
    cut.power_off_source("web01", "ref-web01", {"policy": "hard"})
    attrs = store.read().resources[address].attributes
    assert attrs["source_power"] == "poweredOn" and attrs["powered_off_at"] > 40.0
    assert cut.powered_off["web01"] == attrs["powered_off_at"]
