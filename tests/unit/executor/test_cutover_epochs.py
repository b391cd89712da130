"""The cutover's guards on recorded state (a real SQLite state store; Cinder calls recorded):
a server never boots from volumes written since their conversion, and a protection snapshot
is reverted to only when no sync wrote the volume after it was taken."""

from __future__ import annotations

import pytest

from engine.errors import FerryError
from engine.executor import cutover as module
from engine.executor.cutover import Cutover
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

CONVERSION = "vm.web01.conversion"


def disk(key: int, change_id: str, epoch: str) -> ResourceRecord:
    attrs = {"volume_id": f"vol-{key}", "change_id": change_id, "epoch": epoch}
    return ResourceRecord(f"vm.web01.disk[{key}]", "volume", Status.READY, attrs)


def conversion(tool: str | None, held: str) -> ResourceRecord:
    return ResourceRecord(
        CONVERSION, "conversion", Status.READY,
        {"tool": tool, "protection": {"vol-2000": "snap-a"},
         "protected_change_ids": {"vol-2000": held}, "epochs": {"2000": "e1"}},
    )  # fmt: skip


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        module.compute, "revert", lambda _c, v, s: seen.append(("revert", s)) or True
    )
    monkeypatch.setattr(module.compute, "delete_snapshot", lambda _c, s: seen.append(("del", s)))
    monkeypatch.setattr(module.volumes, "detach", lambda _c, _h, _v: None)
    monkeypatch.setattr(module.volumes, "exists", lambda _c, _v: True)
    monkeypatch.setattr(module.volumes, "updated_at", lambda _c, _v: None)
    monkeypatch.setattr(module.compute, "snapshot_exists", lambda _c, _s: True)
    monkeypatch.setattr(module.compute, "newer_snapshots", lambda _c, _v, _s: [])
    return seen


def cutover(store: SqliteStateStore) -> Cutover:
    applier = fakes.fake_applier(fakes.context(store), host_for=lambda _: ("c", "h"))
    return Cutover(applier)


def test_boot_refuses_volumes_written_since_their_conversion(store: SqliteStateStore) -> None:
    store.write([disk(2000, "c/1", "e2")], [])
    with pytest.raises(FerryError, match=r"disk\(s\) 2000 changed since their conversion"):
        cutover(store)._check_converted("web01", [2000], {"epochs": {"2000": "e1"}})
    cutover(store)._check_converted("web01", [2000], {"epochs": {"2000": "e2"}})  # matches


def test_a_stale_protection_snapshot_is_deleted_never_reverted_to(
    store: SqliteStateStore, calls: list[tuple[str, str]]
) -> None:
    store.write([disk(2000, "c/2", "e5"), conversion("virt-v2v-in-place", "c/1")], [])
    cutover(store).release_protection("web01", "vol-2000")
    assert calls == [("del", "snap-a")]  # a sync wrote c/2 after the snapshot of c/1
    attrs = store.read().resources[CONVERSION].attributes
    assert attrs["protection"] == {} and "epochs" not in attrs


def test_a_fresh_protection_snapshot_undoes_the_conversion(
    store: SqliteStateStore, calls: list[tuple[str, str]]
) -> None:
    store.write([disk(2000, "c/1", "e1"), conversion("virt-v2v-in-place", "c/1")], [])
    cutover(store).release_protection("web01", "vol-2000")
    assert calls == [("revert", "snap-a"), ("del", "snap-a")]
    resources = store.read().resources
    assert resources["vm.web01.disk[2000]"].attributes["epoch"] != "e1"  # a new content epoch
    assert "epochs" not in resources[CONVERSION].attributes


def test_without_a_conversion_tool_nothing_is_reverted(
    store: SqliteStateStore, calls: list[tuple[str, str]]
) -> None:
    store.write([disk(2000, "c/1", "e1"), conversion(None, "c/1")], [])
    cutover(store).release_protection("web01", "vol-2000")
    assert calls == [("del", "snap-a")]
