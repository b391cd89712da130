"""An upload deletes only the images of its disk that this state's record named or that are its
own partial uploads (break-it 16 L7: two ferry states migrating one VM, a rehearsal and the real
run, share Glance images by ferry_vm_uuid/ferry_disk_key, and each upload deleted the other's,
which its records and maybe a boot: image server use), and reuses by sha512 only its own (img16c
item 2: another state's image reused was deleted by this state's --destroy). Every upload
carries the state's lineage (`ferry_state`). A fake Glance; a real file; a real state."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import OpenStackError
from engine.executor.image import ImageCutover
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.providers.openstack import images
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

PROPS = {"ferry_vm_uuid": "u1", "ferry_disk_key": "2000"}
MINE, OTHER = "lineage-mine", "lineage-rehearsal"


def _image(
    image_id: str, status: str = "active", hash_value: str = "", lineage: str | None = MINE
) -> Any:
    state = {} if lineage is None else {"ferry_state": lineage}
    return SimpleNamespace(
        id=image_id,
        status=status,
        hash_value=hash_value,
        created_at=image_id,
        properties={**PROPS, **state},
    )


class Glance:
    """Glance with the disk's images `listed`; a new upload becomes active with the bytes it
    received; deletes recorded."""

    def __init__(self, listed: list[Any]) -> None:
        self.listed = listed
        self.deleted: list[str] = []
        self.received = hashlib.sha512()
        self.posted: list[dict[str, Any]] = []

    def images(self, tag: list[str]) -> list[Any]:
        return list(self.listed)

    def post(self, _url: str, json: dict[str, Any]) -> Any:
        self.posted.append(json)
        return SimpleNamespace(json=lambda: {"id": "img-new"})

    def put(self, _url: str, data: Any, headers: dict[str, str]) -> None:
        for chunk in data:
            self.received.update(chunk)

    def get_image(self, image_id: str) -> Any:
        return _image(image_id, hash_value=self.received.hexdigest())

    def delete_image(self, image_id: str, ignore_missing: bool) -> None:
        self.deleted.append(image_id)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk-2000.raw"
    path.write_bytes(b"converted" * 1000)
    return path


LISTED = [
    _image("img-a-rehearsal", lineage=OTHER),  # another state's, active: its records use it
    _image("img-b-partial", status="queued"),  # this state's killed upload
    _image("img-b-other-partial", status="saving", lineage=OTHER),  # the other's, under way
    _image("img-c-ours"),  # this state's older conversion
    _image("img-e-older-ferry", lineage=None),  # recorded here before images had a lineage
]


def test_an_upload_deletes_this_states_old_image_and_partial_ones_only(disk: Path) -> None:
    glance = Glance(LISTED)
    conn = SimpleNamespace(image=glance)
    replaces = ["img-c-ours", "img-e-older-ferry", "img-a-rehearsal"]  # the last handed over
    got = images.upload(conn, disk, "web01-2000", "raw", PROPS, lineage=MINE, replaces=replaces)
    assert got == ("img-new", True)
    assert glance.deleted == ["img-b-partial", "img-c-ours", "img-e-older-ferry"]
    assert glance.posted[0]["ferry_state"] == MINE  # whose it is, from its creation on


def test_another_states_image_of_the_same_bytes_is_never_reused(disk: Path) -> None:
    """The rehearsal's image holds the same bytes: reused, this state would record it and its
    --destroy delete it under the rehearsal's records (and maybe its boot: image server)."""
    same = _image("img-d-same", hash_value=images.file_sha512(disk), lineage=OTHER)
    glance = Glance([*LISTED, same])
    got = images.upload(
        SimpleNamespace(image=glance), disk, "web01-2000", "raw", PROPS, lineage=MINE
    )
    assert got == ("img-new", True)
    assert "img-d-same" not in glance.deleted and "img-a-rehearsal" not in glance.deleted


def test_an_image_reused_by_sha512_is_this_states_and_deletes_no_other_states_image(
    disk: Path,
) -> None:
    same = _image("img-f-same", hash_value=images.file_sha512(disk))
    glance = Glance([*LISTED, same])
    conn = SimpleNamespace(image=glance)
    got = images.upload(
        conn, disk, "web01-2000", "raw", PROPS, lineage=MINE, replaces=["img-c-ours"]
    )
    assert got == ("img-f-same", False)
    assert glance.deleted == ["img-b-partial", "img-c-ours"]
    assert glance.posted == []


def test_the_image_step_names_this_states_old_images_even_after_a_killed_upload(
    tmp_path: Path, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step passes the record's image as the one it replaces, and keeps it in its
    in-progress record: a killed upload's next run still deletes this state's old image."""
    asked: list[list[str]] = []

    def upload(*_a: Any, replaces: list[str], **_k: Any) -> tuple[str, bool]:
        asked.append(list(replaces))
        raise OpenStackError("killed")  # the apply dies mid upload

    monkeypatch.setattr(images, "upload", upload)
    store = SqliteStateStore(tmp_path / "ferry.db")
    address = "vm.web01.image[2000]"
    store.write([ResourceRecord(address, "image", Status.READY, {"image_id": "img-old"})], [])
    step = ImageCutover(fakes.fake_applier(fakes.context(store)))
    after = {"file": str(disk), "disk_format": "raw", "name": "web01-disk-2000", "properties": {}}
    for _ in range(2):  # the replace, then the next apply's create of the in-progress record
        with pytest.raises(OpenStackError):
            step.image(Change(address, "image", Action.REPLACE, "again", None, after))
    assert asked == [["img-old"], ["img-old"]]
    assert store.read().resources[address].attributes["replaces"] == ["img-old"]
    store.close()
