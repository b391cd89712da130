"""Break-it 12e items 1 and 2: the cutover's checks that the source has not run since its final
sync read only the power state, so a source powered on, written and powered off again (between a
killed boot and a saved plan's apply, or while its server booted) passed: a server adopted or
booted from volumes without those writes, exit 0, then "No changes". The checks now compare the
disks' changeIds with the ones the final sync recorded (a real SQLite state store; the vSphere
reads faked)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.errors import SourceChangedError
from engine.executor import source_off
from engine.executor.cutover import Cutover
from engine.model.state import VCENTER_OFF_AT, ResourceRecord, Status
from engine.planner.diff.cutover import moved_change_ids
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

SYNCED = {2000: "52 aa/7", 2001: "52 bb/3"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    opened = SqliteStateStore(tmp_path / "ferry.db")
    opened.write(
        [
            ResourceRecord(f"vm.web01.disk[{k}]", "volume", Status.READY, {"change_id": c})
            for k, c in SYNCED.items()
        ],
        [],
    )
    yield opened
    opened.close()


def cutover(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, power: str, now: dict[int, Any]
) -> Cutover:
    fakes.patch_vsphere(
        monkeypatch,
        power_state=lambda _si, _vm: power,
        disk_change_ids=lambda _si, _vm: now,
        powered_on_since=fakes.VCenter.powered_on_since,
    )
    return fakes.cutover(store)


def test_moved_change_ids_names_each_disk_that_moved() -> None:
    records = {
        f"vm.web01.disk[{k}]": ResourceRecord(f"vm.web01.disk[{k}]", "volume", Status.READY,
                                              {"change_id": c})
        for k, c in SYNCED.items()
    }  # fmt: skip
    assert moved_change_ids("web01", records, dict(SYNCED)) == {}
    now = {2000: "52 aa/8", 2001: "52 bb/3"}
    assert moved_change_ids("web01", records, now) == {2000: ("52 aa/7", "52 aa/8")}
    # CBT off on either side cannot tell: left out (a CBT-off disk is copied in full anyway)
    assert moved_change_ids("web01", records, {2000: None, 2001: "52 bb/3"}) == {}
    assert moved_change_ids("db01", records, now) == {}


@pytest.mark.parametrize("kind", ["found", "booted", "before"])
def test_a_source_powered_on_and_off_again_since_its_final_sync_is_refused(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Off now, but disk 2000's changeId moved: every check refuses (before: all passed)."""
    cut = cutover(store, monkeypatch, "poweredOff", {2000: "52 aa/9", 2001: "52 bb/3"})
    said = {
        "found": "server s1, booted by an interrupted apply, is not adopted: the source ran "
        "since its final sync (disk 2000's changeId moved from 52 aa/7 to 52 aa/9), though "
        "off now and the server lacks its writes since; to keep the source, delete the server "
        "(openstack server delete s1)",
        "booted": "the source ran while its server s1 booted (the source ran since its final "
        "sync (disk 2000's changeId moved from 52 aa/7 to 52 aa/9), though off now): the "
        "server is deleted",
        "before": "the source ran since its final sync (disk 2000's changeId moved",
    }[kind]
    with pytest.raises(SourceChangedError) as raised:
        cut.check_source_off("web01", **({kind: "s1"} if kind != "before" else {}))
    assert said in str(raised.value)
    if kind == "found":
        assert "the source stays off while that server exists" in str(raised.value)


def test_a_source_off_with_the_changeids_of_its_final_sync_boots(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = cutover(store, monkeypatch, "poweredOff", dict(SYNCED))
    cut.check_source_off("web01")
    cut.check_source_off("web01", found="s1")
    cut.check_source_off("web01", booted="s1")


def off_since(store: SqliteStateStore, at: datetime) -> None:
    """The conversion record of a final sync ferry took charge of at `at` (vCenter's clock)."""
    attrs = {"powered_off_at": at.timestamp(), VCENTER_OFF_AT: at.isoformat()}
    store.write(
        [ResourceRecord("vm.web01.conversion", "conversion", Status.IN_PROGRESS, attrs)], []
    )


@pytest.mark.parametrize("kind", ["found", "booted", "before"])
def test_a_source_without_cbt_powered_on_since_its_final_sync_is_refused(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Disks without changed block tracking have no changeId to move: a power cycle of such a
    source while its server boots (or before a found server is adopted) passed every check.
    vCenter's event history shows it: a power-on after ferry took charge of the source."""
    took = datetime(2026, 12, 1, 4, 0, 0, tzinfo=UTC)
    off_since(store, took)
    cut = cutover(store, monkeypatch, "poweredOff", {2000: None, 2001: None})
    cut.ctx.si.power_on(took - timedelta(minutes=5))  # before the final sync: fine alone
    cut.check_source_off("web01")
    cut.ctx.si.power_on(took + timedelta(seconds=42))
    with pytest.raises(SourceChangedError) as raised:
        cut.check_source_off("web01", **({kind: "s1"} if kind != "before" else {}))
    assert (
        "the source ran since its final sync (powered on at 04:00:42 UTC, vCenter's events), "
        "though off now" in str(raised.value)
    )


def test_a_record_without_vcenters_time_asks_no_events(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversion record an older ferry wrote (no vcenter_off_at): the changeIds alone."""
    cut = cutover(store, monkeypatch, "poweredOff", dict(SYNCED))
    cut.ctx.si.power_on(datetime.now(UTC))
    cut.check_source_off("web01", booted="s1")
    assert cut.ctx.si.queries == 0


def test_the_power_off_keeps_vcenters_time_for_the_final_sync(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each power-off for a final sync records vCenter's clock before it (every attempt: a
    later sync's boot is checked from its own sync, never refused for an earlier run)."""
    fakes.patch_vsphere(
        monkeypatch,
        power_state=lambda _si, _vm: "poweredOn",
        guest_state=lambda _si, _vm: "running",  # it runs again: not ferry's shutdown
    )
    monkeypatch.setattr(source_off, "power_off", lambda *_a, **_k: "graceful")
    cut = fakes.cutover(store, changes=[fakes.snapshot("web01", "power_on")])
    before = datetime.now(UTC)
    cut.power_off_source("web01", "ref-web01", {})
    first = records(store)["vm.web01.conversion"][VCENTER_OFF_AT]
    assert datetime.fromisoformat(first) >= before
    cut.power_off_source("web01", "ref-web01", {})
    assert records(store)["vm.web01.conversion"][VCENTER_OFF_AT] >= first


def records(store: SqliteStateStore) -> dict[str, dict[str, Any]]:
    return {a: dict(r.attributes) for a, r in store.read().resources.items()}
