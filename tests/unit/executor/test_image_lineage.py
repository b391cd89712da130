"""output: image's images and volumes carry the lineage of the state that made them, as every
volume ferry makes does (img16c item 1), and a state deletes or writes only its own (item 2: an
image reused from another state was deleted by this state's --destroy). A volume made from an
image is stamped `ferry_state` at its creation; an image or a volume made from one that another
ferry state manages now (taken over with --adopt-lineage since the plan was made) is neither
deleted nor written: the step fails with one line, the object untouched; a saved plan that would
delete such a volume is refused whole (handed_since). A fake Glance and Cinder; a real SQLite
state and the real Applier."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.executor.apply import Applier
from engine.executor.volume_ownership import handed_since
from engine.model.plan import Action, Change, Plan
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore


class Cloud:
    """Glance images and Cinder volumes by id with their `ferry_state` (`lineages`); deletes,
    property patches and new volumes (with their metadata) recorded. A new volume is
    available at once."""

    def __init__(self, lineages: dict[str, str]) -> None:
        self.lineages = lineages
        self.deleted: list[str] = []
        self.written: list[str] = []
        self.created: list[dict[str, str]] = []
        self.image = SimpleNamespace(
            get_image=self._get, delete_image=self._delete_image, get=self._get_json,
            patch=self._patch,
        )  # fmt: skip
        self.block_storage = SimpleNamespace(
            get_volume=self._get, volumes=self._volumes, delete_volume=self.deleted.append,
            create_volume=self._create, snapshots=lambda details=True: [],
            set_volume_metadata=lambda volume_id, **_: self.written.append(volume_id),
        )  # fmt: skip

    def _get(self, object_id: str) -> Any:
        if object_id not in self.lineages:
            raise os_exc.NotFoundException(object_id)
        state = {"ferry_state": self.lineages[object_id]} if self.lineages[object_id] else {}
        return SimpleNamespace(
            id=object_id, status="available", metadata=state, properties=state, attachments=[]
        )

    def _volumes(self, details: bool = True) -> list[Any]:
        return [self._get(i) for i in self.lineages if i.startswith("vol")]

    def _delete_image(self, image_id: str, ignore_missing: bool) -> None:
        self.deleted.append(image_id)

    def _get_json(self, url: str) -> Any:
        image = self._get(url.rsplit("/", 1)[1])
        return SimpleNamespace(json=lambda: {"id": image.id, **image.properties})

    def _patch(self, url: str, json: Any, headers: Any) -> None:
        self.written.append(url.rsplit("/", 1)[1])

    def _create(self, **fields: Any) -> Any:
        self.created.append(dict(fields["metadata"]))
        self.lineages["vol-new"] = fields["metadata"].get("ferry_state", "")
        return SimpleNamespace(id="vol-new")


def _applier(tmp_path: Path, cloud: Cloud, records: list[ResourceRecord]) -> Applier:
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write(records, [])
    ctx: Any = SimpleNamespace(store=store, conn=cloud, log_names={}, snapshots={}, say=print)
    applier = Applier(Plan("d", store.read().lineage, 1, (), (), ()), ctx)
    applier.uuids = {"web01": "u1"}
    applier.targets = {"web01": "web01"}
    return applier


IMAGE = ResourceRecord("vm.web01.image[2000]", "image", Status.READY, {"image_id": "img-1"})
VOLUME = ResourceRecord(
    "vm.web01.volume[2000]",
    "image_volume",
    Status.READY,
    {"volume_id": "vol-1", "image_id": "img-1"},
)


def test_a_volume_made_from_an_image_carries_this_states_lineage(tmp_path: Path) -> None:
    cloud = Cloud({})
    applier = _applier(tmp_path, cloud, [IMAGE])
    after = {"size_gib": 1, "volume_type": None, "disk_key": 2000, "image": IMAGE.address}
    applier.images.volume(Change(VOLUME.address, "image_volume", Action.CREATE, "", None, after))
    lineage = applier.ctx.store.read().lineage
    assert cloud.created == [
        {
            "ferry_image_vm": "u1",
            "ferry_image_disk": "2000",
            "ferry_state": lineage,
            "ferry_image_id": "img-1",  # what a killed apply's next run finds it by
        }
    ]


@pytest.mark.parametrize("action", [Action.DELETE, Action.UPDATE])
def test_an_image_another_state_manages_now_is_neither_deleted_nor_written(
    tmp_path: Path, action: Action
) -> None:
    cloud = Cloud({"img-1": "other-lineage"})
    applier = _applier(tmp_path, cloud, [IMAGE])
    after = None if action is Action.DELETE else {"properties": {"os_type": "linux"}}
    step = Change(IMAGE.address, "image", action, "--destroy", dict(IMAGE.attributes), after)
    with pytest.raises(OpenStackError, match="image img-1 is managed by ferry state other-lineage"):
        applier.images.image(step)
    assert cloud.deleted == [] and cloud.written == []
    assert IMAGE.address in applier.ctx.store.read().resources
    cloud.lineages["img-1"] = ""  # uploaded before images carried a lineage: this state's
    applier.images.image(step)
    assert (cloud.deleted or cloud.written) == ["img-1"]


def test_a_volume_made_from_an_image_another_state_manages_is_not_deleted(
    tmp_path: Path,
) -> None:
    cloud = Cloud({"vol-1": "other-lineage"})
    applier = _applier(tmp_path, cloud, [VOLUME])
    step = Change(VOLUME.address, "image_volume", Action.DELETE, "", dict(VOLUME.attributes), None)
    with pytest.raises(
        OpenStackError, match="volume vol-1 is managed by ferry state other-lineage"
    ):
        applier.images.volume(step)
    assert cloud.deleted == [] and VOLUME.address in applier.ctx.store.read().resources
    plan = Plan("d", "mine", 3, (), (step,), ())  # a saved destroy: refused before the walk
    assert handed_since(cloud, plan) == [
        "vm.web01.volume[2000]: volume vol-1 is managed by ferry state other-lineage now (taken "
        "over since this plan was made, with --adopt-lineage or by hand): not deleted"
    ]
