"""A lost state adopts an image VM's running server with its images and volumes (break-it 16 F2:
a second volume beside the attached one, then `failed: vm.X.server: 'vm.X.disk[2000]'` at every
apply): the reads record what the plan found and change nothing in the cloud but this state's
lineage stamped on the image and the volume (img16c item 1: then another state's plan neither
adopts nor deletes them), the server's adoption needs no disk file record, and a step's error is
never a bare exception repr. A real SQLite state; the cloud connection is one that fails on any
call, or records the lineage stamps."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import FerryError, step_error
from engine.executor.image import ImageCutover
from engine.executor.volume_ownership import VolumeOwnership
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.volumes import FOUND_LINEAGE
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes


class NoCloud:
    """A cloud connection any use of which fails the test: an adoption calls nothing."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the cloud was called: {name}")


class Stamps:
    """Glance and Cinder as an adoption calls them: the image's properties read and patched
    (`patched`: the JSON patch ops by image id), the volume's metadata set (`metadata`)."""

    def __init__(self) -> None:
        self.patched: dict[str, list[dict[str, str]]] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        lost = {"ferry_state": "lineage-lost"}  # as the plan found them (--adopt-lineage)
        self.image = SimpleNamespace(
            get=self._get,
            patch=self._patch,
            get_image=lambda image_id: SimpleNamespace(id=image_id, properties=lost),
        )
        self.block_storage = SimpleNamespace(
            set_volume_metadata=self._set,
            get_volume=lambda volume_id: SimpleNamespace(id=volume_id, metadata=lost),
        )

    def _get(self, url: str) -> Any:
        return SimpleNamespace(json=lambda: {"id": url, "ferry_state": "lineage-lost"})

    def _patch(self, url: str, json: list[dict[str, str]], headers: dict[str, str]) -> None:
        self.patched[url.rsplit("/", 1)[1]] = json

    def _set(self, volume_id: str, **metadata: str) -> None:
        self.metadata[volume_id] = metadata


def _images(store: SqliteStateStore, said: list[str], conn: Any = None) -> ImageCutover:
    ctx = fakes.context(store, said, conn=conn or NoCloud())
    return ImageCutover(fakes.fake_applier(ctx, targets={"web01": "web01"}, lineage="mine"))


def test_an_adopted_image_and_volume_are_recorded_as_found(store: SqliteStateStore) -> None:
    said: list[str] = []
    cloud = Stamps()
    images = _images(store, said, cloud)
    found = {FOUND_LINEAGE: "lineage-lost"}  # the plan's: the lineage each was found with
    image_after = {"disk_key": 2000, "disk_format": "raw", "image_id": "img-2000", **found}
    images.image(Change("vm.web01.image[2000]", "image", Action.READ, "adopt", None, image_after))
    volume_after = {"disk_key": 2000, "volume_id": "vol-2000", "image_id": "img-2000", **found}
    images.volume(
        Change("vm.web01.volume[2000]", "image_volume", Action.READ, "adopt", None, volume_after)
    )
    records = store.read().resources
    assert records["vm.web01.image[2000]"].status is Status.READY
    assert records["vm.web01.image[2000]"].attributes["image_id"] == "img-2000"
    assert records["vm.web01.volume[2000]"].kind == "image_volume"
    assert records["vm.web01.volume[2000]"].attributes["volume_id"] == "vol-2000"
    assert said == [
        "vm.web01.image[2000]: adopted image img-2000",
        "vm.web01.volume[2000]: adopted volume vol-2000",
    ]
    # --adopt-lineage lineage-lost: this state's lineage replaces the lost one's, as on volumes
    assert cloud.patched == {
        "img-2000": [{"op": "replace", "path": "/ferry_state", "value": "mine"}]
    }
    assert cloud.metadata == {"vol-2000": {"ferry_state": "mine"}}


def _server(after: dict[str, Any]) -> Change:
    return Change("vm.web01.server", "server", Action.READ, "adopt", None, after)


def test_an_image_vms_server_is_adopted_without_disk_file_records(
    store: SqliteStateStore,
) -> None:
    cutover = fakes.cutover(store, conn=NoCloud())
    after = {"name": "web01", "volumes": [2000, 2001], "boot": "volume", "image": None}
    cutover._served(_server(after), "web01", after, "srv-1")
    records = store.read().resources
    server = records["vm.web01.server"]
    assert server.status is Status.READY and server.attributes["server_id"] == "srv-1"
    for key in (2000, 2001):  # cut over: no later plan copies the disks again
        disk = records[f"vm.web01.disk[{key}]"]
        assert (disk.kind, disk.status, disk.attributes) == (
            "disk_file",
            Status.READY,
            {"disk_key": key, "converted": True},
        )


def test_a_volume_vms_server_without_its_disk_records_fails_with_a_clear_line(
    store: SqliteStateStore,
) -> None:
    cutover = fakes.cutover(store, conn=NoCloud())
    after = {"name": "web01", "volumes": [2000]}
    with pytest.raises(FerryError, match=r"vm.web01.disk\[2000\] has no record in this state"):
        cutover._served(_server(after), "web01", after, "srv-1")
    assert "vm.web01.server" not in store.read().resources


def test_a_step_error_is_never_a_bare_exception_repr() -> None:
    assert step_error(FerryError("volume v1 is gone")) == "volume v1 is gone"
    line = step_error(KeyError("vm.web01.disk[2000]"))
    assert line.startswith("internal error (KeyError: 'vm.web01.disk[2000]'): a fault in ferry")


def test_a_conversion_of_a_disk_adopted_without_a_file_fails_with_a_clear_line(
    store: SqliteStateStore,
) -> None:
    adopted = {"disk_key": 2000, "converted": True}
    store.write([ResourceRecord("vm.web01.disk[2000]", "disk_file", Status.READY, adopted)], [])
    after = {"disks": [{"key": 2000}], "tool": None}
    change = Change("vm.web01.conversion", "conversion", Action.CREATE, "convert", None, after)
    with pytest.raises(FerryError, match=r"disk\[2000\] has no file in this state"):
        _images(store, []).conversion(change)


class Unlabelled(Stamps):
    """Glance and Cinder holding an older ferry's image and volume: no `ferry_state`."""

    def __init__(self) -> None:
        super().__init__()
        self.block_storage.get_volume = lambda volume_id: SimpleNamespace(metadata={})

    def _get(self, url: str) -> Any:
        return SimpleNamespace(json=lambda: {"id": url})


def test_a_label_update_stamps_the_lineage_and_changes_nothing_else(
    store: SqliteStateStore,
) -> None:
    """break-it 16c F1: a state that records an older ferry's image and volume (no
    `ferry_state`) labels them with its lineage in place: metadata only, no upload, no new
    volume, the records as they were."""
    said: list[str] = []
    cloud = Unlabelled()
    images = _images(store, said, cloud)
    # the Applier's own label step (VolumeOwnership), its ownership check passing as above
    images.a.label_volume = partial(VolumeOwnership.label_volume, images.a)
    image = {"disk_key": 2000, "disk_format": "raw", "image_id": "img-2000", "properties": {}}
    volume = {"disk_key": 2000, "volume_id": "vol-2000", "image": "vm.web01.image[2000]"}
    store.write(
        [
            ResourceRecord("vm.web01.image[2000]", "image", Status.READY, image),
            ResourceRecord("vm.web01.volume[2000]", "image_volume", Status.READY, volume),
        ],
        [],
    )
    label = {"label_lineage": True}
    images.image(
        Change("vm.web01.image[2000]", "image", Action.UPDATE, "label", image, image | label)
    )
    images.volume(
        Change(
            "vm.web01.volume[2000]", "image_volume", Action.UPDATE, "label", volume, volume | label
        )
    )
    assert cloud.patched == {"img-2000": [{"op": "add", "path": "/ferry_state", "value": "mine"}]}
    assert cloud.metadata == {"vol-2000": {"ferry_state": "mine"}}
    assert said == [
        "vm.web01.image[2000]: image img-2000 labelled with this state's lineage",
        "vm.web01.volume[2000]: volume vol-2000 labelled with this state's lineage",
    ]
    records = store.read().resources
    assert records["vm.web01.image[2000]"].attributes == image
    assert records["vm.web01.volume[2000]"].attributes == volume
