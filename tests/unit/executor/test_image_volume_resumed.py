"""output: image, a volume made from a disk's image (break-it 16g L1): a re-run after an apply
stopped at once (Ctrl-C twice, or killed) while Cinder made the volume used to delete the one
its in-progress record named and make it again, or, killed before the record, make a second
one beside it. The step now finds this state's volume made from the image it uses (ferry's
metadata: ferry_image_vm, ferry_image_disk, ferry_state, ferry_image_id), waits for it and
records it; the others of this state for the disk that nothing records or attaches (an older
image's, in error, duplicates) are deleted; another state's are left alone. A fake Cinder; a
real SQLite state and the real Applier."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openstack import exceptions as os_exc

from engine.executor.apply import Applier
from engine.model.plan import Action, Change, Plan
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore

ADDRESS = "vm.web01.volume[2000]"
AFTER = {"size_gib": 1, "volume_type": None, "disk_key": 2000, "image": "vm.web01.image[2000]"}


class Cinder:
    """Volumes by id: (status, metadata, attachments); a volume waited for becomes available,
    deletes and creates recorded."""

    def __init__(self) -> None:
        self.volumes: dict[str, tuple[str, dict[str, str], list[Any]]] = {}
        self.deleted: list[str] = []
        self.created: list[dict[str, str]] = []

    def add(self, volume_id: str, status: str, lineage: str, image_id: str, **more: Any) -> None:
        meta = {"ferry_image_vm": "u1", "ferry_image_disk": "2000", "ferry_state": lineage}
        meta |= {"ferry_image_id": image_id} if image_id else {}
        self.volumes[volume_id] = (status, meta, more.get("attachments", []))

    def _volume(self, volume_id: str) -> Any:
        status, meta, attachments = self.volumes[volume_id]
        return SimpleNamespace(
            id=volume_id, status=status, metadata=meta, attachments=attachments,
            created_at=volume_id, volume_image_metadata={},
        )  # fmt: skip

    def get_volume(self, volume_id: str) -> Any:
        if volume_id not in self.volumes:
            raise os_exc.NotFoundException(volume_id)
        status, meta, attachments = self.volumes[volume_id]
        if status in ("creating", "downloading"):  # Cinder finishes the copy
            self.volumes[volume_id] = ("available", meta, attachments)
        return self._volume(volume_id)

    def list(self, details: bool = True) -> list[Any]:
        return [self._volume(i) for i in sorted(self.volumes)]

    def delete(self, volume_id: str) -> None:
        self.deleted.append(volume_id)
        del self.volumes[volume_id]

    def create(self, **fields: Any) -> Any:
        self.created.append(dict(fields["metadata"]))
        self.volumes["vol-new"] = ("available", dict(fields["metadata"]), [])
        return SimpleNamespace(id="vol-new")


def _applier(tmp_path: Path, cinder: Cinder, volume: ResourceRecord | None) -> Applier:
    store = SqliteStateStore(tmp_path / "ferry.db")
    image = ResourceRecord("vm.web01.image[2000]", "image", Status.READY, {"image_id": "img-1"})
    store.write([image, *([volume] if volume else [])], [])
    conn = SimpleNamespace(
        block_storage=SimpleNamespace(
            get_volume=cinder.get_volume, volumes=cinder.list, delete_volume=cinder.delete,
            create_volume=cinder.create, snapshots=lambda details=True: [],
        )
    )  # fmt: skip
    said: list[str] = []
    ctx: Any = SimpleNamespace(
        store=store, conn=conn, log_names={}, snapshots={}, say=lambda _vm, line: said.append(line)
    )
    applier = Applier(Plan("d", store.read().lineage, 1, (), (), ()), ctx)
    applier.uuids = {"web01": "u1"}
    applier.targets = {"web01": "web01"}
    applier.said = said  # type: ignore[attr-defined]
    return applier


def _create(applier: Applier) -> None:
    applier.images.volume(Change(ADDRESS, "image_volume", Action.CREATE, "", None, AFTER))


def _recorded(applier: Applier) -> tuple[str, Any]:
    record = applier.ctx.store.read().resources[ADDRESS]
    return record.status.value, record.attributes.get("volume_id")


def test_the_volume_an_in_progress_record_names_is_waited_for_and_used(tmp_path: Path) -> None:
    """The lab's case: the record in progress names the volume Cinder is still copying the
    image into; the re-run waits for it, records it, makes none, deletes it not."""
    cinder = Cinder()
    began = ResourceRecord(ADDRESS, "image_volume", Status.IN_PROGRESS, {"volume_id": "vol-a"})
    applier = _applier(tmp_path, cinder, began)
    cinder.add("vol-a", "downloading", applier.lineage, "img-1")
    _create(applier)
    assert (cinder.created, cinder.deleted) == ([], [])
    assert _recorded(applier) == ("ready", "vol-a")
    assert applier.ctx.store.read().resources[ADDRESS].attributes["image_id"] == "img-1"
    assert any("vol-a an interrupted apply made from image img-1 found and used" in line
               for line in applier.said)  # type: ignore[attr-defined]  # fmt: skip


def test_one_made_before_its_record_is_found_by_metadata_and_leftovers_go(
    tmp_path: Path,
) -> None:
    """Killed between Cinder's create and the record: no record; the volume is found by ferry's
    metadata and used. This state's others of the disk attached to nothing (an older image's, one
    in error) are deleted; one attached (a server's) and another state's are left alone."""
    cinder = Cinder()
    applier = _applier(tmp_path, cinder, None)
    mine = applier.lineage
    cinder.add("vol-b", "available", mine, "img-1")
    cinder.add("vol-c", "available", mine, "img-0")  # an older conversion's image
    cinder.add("vol-d", "available", "other-lineage", "img-1")  # a rehearsal's
    cinder.add("vol-e", "error", mine, "img-1")
    cinder.add("vol-f", "in-use", mine, "img-1", attachments=[{"server_id": "s1"}])
    _create(applier)
    assert cinder.created == []
    assert _recorded(applier) == ("ready", "vol-b")
    assert sorted(cinder.deleted) == ["vol-c", "vol-e"]


def test_none_found_a_new_volume_names_its_image(tmp_path: Path) -> None:
    """Nothing to resume: a new volume, whose metadata names the image it is made from (Cinder
    sets its image metadata only once the copy is done: a re-run killed before finds it by
    this)."""
    cinder = Cinder()
    began = ResourceRecord(ADDRESS, "image_volume", Status.IN_PROGRESS, {"volume_id": "vol-gone"})
    applier = _applier(tmp_path, cinder, began)
    cinder.add("vol-old", "available", applier.lineage, "")  # an older ferry's: image unknown
    _create(applier)
    assert cinder.deleted == ["vol-old"]
    assert cinder.created == [
        {"ferry_image_vm": "u1", "ferry_image_disk": "2000", "ferry_state": applier.lineage,
         "ferry_image_id": "img-1"}
    ]  # fmt: skip
    assert _recorded(applier) == ("ready", "vol-new")
