"""A protection snapshot an interrupted cutover left in Cinder is deleted, never reused (break-it
12c item 1: a cutover stopped between two protection snapshots left one in no record; the next
cutover took it as its protection, its boot failed, and the revert put disk 2000 back to before a
later sync: 5 MiB lost, then "No changes"). A fake block-storage proxy (pure unit test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from openstack import exceptions as os_exc

from engine.providers.openstack import compute


@dataclass
class Snapshot:
    id: str
    volume_id: str
    status: str = "available"
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: str = ""


class BlockStorage:
    def __init__(self, snapshots: list[Snapshot]) -> None:
        self.items = {s.id: s for s in snapshots}
        self.deleted: list[str] = []

    def snapshots(self, details: bool = True) -> list[Snapshot]:
        return list(self.items.values())

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        found = self.items[snapshot_id]
        if found.status == "creating":
            found.status = "available"
        return found

    def delete_snapshot(self, snapshot_id: str, ignore_missing: bool = True) -> None:
        self.deleted.append(snapshot_id)
        self.items[snapshot_id].status = "deleting"

    def wait_for_delete(self, snapshot: Snapshot, interval: float = 2, wait: int = 0) -> None:
        assert self.items[snapshot.id].status == "deleting"
        del self.items[snapshot.id]

    def create_snapshot(self, **fields: Any) -> Snapshot:
        made = Snapshot(f"snap-{len(self.items) + 1}-new", fields["volume_id"], "creating")
        made.metadata = dict(fields["metadata"])
        self.items[made.id] = made
        return made


@dataclass
class Conn:
    block_storage: BlockStorage


def test_a_left_protection_is_deleted_and_a_new_one_taken() -> None:
    left = Snapshot("snap-old", "vol-1", "available", {"ferry_protects": "vol-1"})
    still_made = Snapshot("snap-half", "vol-1", "creating", {"ferry_protects": "vol-1"})
    other = Snapshot("snap-other", "vol-2", "available", {"ferry_protects": "vol-2"})
    users = Snapshot("snap-user", "vol-1", "available", {})
    storage = BlockStorage([left, still_made, other, users])
    made = compute.protection_snapshot(Conn(storage), "vol-1", "ferry-protect-vol-1")
    assert made not in ("snap-old", "snap-half")
    assert storage.items[made].metadata == {"ferry_protects": "vol-1"}
    assert storage.items[made].status == "available"
    assert sorted(storage.deleted) == ["snap-half", "snap-old"]
    assert set(storage.items) == {made, "snap-other", "snap-user"}  # others' are left alone


def test_the_snapshots_of_a_volume_taken_after_its_protection_are_named() -> None:
    """Break-it 12h F2: Cinder reverts only to a volume's newest snapshot."""
    ours = Snapshot("snap-p", "vol-1", "available", {"ferry_protects": "vol-1"})
    older = Snapshot("snap-old", "vol-1")
    backup = Snapshot("snap-nightly", "vol-1")
    elsewhere = Snapshot("snap-2", "vol-2")
    for snapshot, at in zip(
        (older, ours, backup, elsewhere),
        ("2026-12-01T10:00:00", "2026-12-01T11:00:00", "2026-12-01T11:30:00", "2026-12-01T12:00"),
        strict=True,
    ):
        snapshot.created_at = at
    conn = Conn(BlockStorage([ours, older, backup, elsewhere]))
    assert compute.newer_snapshots(conn, "vol-1", "snap-p") == ["snap-nightly"]
    assert compute.newer_snapshots(conn, "vol-1", "snap-nightly") == []
    assert compute.newer_snapshots(conn, "vol-1", "snap-gone") == []


class Refusing(BlockStorage):
    """Cinder's answer to a revert to a snapshot that is not the volume's newest."""

    def get_volume(self, volume_id: str) -> Any:
        return SimpleNamespace(id=volume_id, status="available")

    def revert_volume_to_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        raise os_exc.BadRequestException(
            f"Invalid snapshot: Specified snapshot {snapshot_id} is None or not the latest one "
            f"of volume {volume_id}."
        )


def test_a_revert_refused_as_not_the_latest_is_told_apart() -> None:
    assert compute.revert(Conn(Refusing([])), "vol-1", "snap-p") is False
