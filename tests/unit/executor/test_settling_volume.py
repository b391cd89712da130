"""Before a cutover powers the source off (ready_volumes), break-it 14c: a volume Cinder is still
detaching (an interrupted apply's host letting it go) is waited for, not refused as stuck with a
state reset advised (F1); a volume a copy left attached to a conversion host the spec no longer
lists (its record's conversion_host) is detached from it there, not refused as "attached to
another server" (F2). A fake block-storage proxy and a real SQLite state store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.executor.apply import Applier
from engine.model.plan import Action, Change, Plan
from engine.model.state import RECORDED_HOST, ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore

DISK = "vm.web01.disk[2000]"


class BlockStorage:
    """One volume, 'detaching' for its first `busy` reads, attached to `servers` until a
    detach."""

    def __init__(self, busy: int, servers: list[str]) -> None:
        self.busy, self.servers = busy, servers

    def get_volume(self, volume_id: str) -> Any:
        self.busy -= 1
        status = "detaching" if self.busy >= 0 else ("in-use" if self.servers else "available")
        attachments = [{"server_id": s, "attachment_id": f"att-{s}"} for s in self.servers]
        return SimpleNamespace(id=volume_id, status=status, metadata={}, attachments=attachments)

    def attachments(self) -> list[Any]:
        return [
            SimpleNamespace(id=f"att-{s}", status="attached", instance=s, volume_id="vol-1")
            for s in self.servers
        ]


def applier(tmp_path: Path, storage: BlockStorage, attrs: dict[str, Any]) -> Applier:
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write([ResourceRecord(DISK, "volume", Status.IN_PROGRESS, attrs)], [])
    ctx: Any = SimpleNamespace(
        store=store,
        conn=SimpleNamespace(block_storage=storage),
        log_names={},
        conversion_host_id="srv-a",
        host_ids={"conv-a": "srv-a"},
        say=lambda _vm, _line: None,
        remote=None,
        conversion_host_name="conv-a",
    )
    change = Change(DISK, "volume", Action.UPDATE, "resume", dict(attrs), dict(attrs))
    return Applier(Plan("d", store.read().lineage, 1, (), (change,), ()), ctx)


def test_a_volume_cinder_is_detaching_is_waited_for_before_the_power_off(
    tmp_path: Path,
) -> None:
    storage = BlockStorage(busy=6, servers=[])
    a = applier(tmp_path, storage, {"volume_id": "vol-1", "copied_bytes": 1024})
    a.ready_volumes("web01")  # before: "is 'detaching' ... reset it (openstack volume set ...)"
    assert storage.busy < 0


def test_a_volume_left_on_a_host_the_spec_dropped_is_detached_there_before_the_power_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = BlockStorage(busy=0, servers=["srv-old"])
    attrs = {"volume_id": "vol-1", "copied_bytes": 1024, RECORDED_HOST: "conv-old"}
    a = applier(tmp_path, storage, attrs)
    detached: list[tuple[str, str]] = []

    def detach_from(host: str, volume_id: str) -> bool:
        detached.append((host, volume_id))
        storage.servers.clear()
        return True

    monkeypatch.setattr(a, "host_of", lambda _c: "conv-a")
    monkeypatch.setattr(a, "_detach_from", detach_from)
    a.ready_volumes("web01")  # before: "attached to server srv-old ..., not to ferry's ..."
    assert detached == [("conv-old", "vol-1")]
