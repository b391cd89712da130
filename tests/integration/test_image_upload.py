"""destination.output: image's Glance side against the lab's real Glance and Cinder (issue 16):
a converted disk file uploaded with ferry's properties, found again by them (a second upload of
the same file reuses the image; an upload a killed apply left half-done is replaced: one image
per disk, never a duplicate), a volume made from the image holding the file's bytes, and the
images deleted (as --destroy does); a stopped upload ends at its next chunk, its partial
image deleted. A 4 MiB file: a few seconds."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoppedError
from engine.lab.lab import Lab
from engine.providers.openstack import images
from tests.integration.converge import volume_file

pytestmark = pytest.mark.lab

MiB = 2**20


@pytest.fixture
def conn(lab: Lab, new_cloud_objects: None) -> Iterator[Any]:
    connection = lab.openstack("ferry-lab")
    yield connection
    images.delete(connection, [str(i.id) for i in images.find_images(connection, UUID)])


UUID = "4215ffff-0000-4000-8000-00000000image"
MINE, OTHER = "lineage-of-this-state", "lineage-of-a-rehearsal"


def test_upload_is_found_again_replaced_when_partial_and_turned_into_a_volume(
    lab: Lab, conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "disk-2000.raw"
    disk.write_bytes(os.urandom(MiB) + bytes(3 * MiB))  # data, then a hole's worth of zeros
    props = {
        "ferry_vm_uuid": UUID,
        "ferry_disk_key": "2000",
        "hw_firmware_type": "bios",
        "hw_disk_bus": "virtio",
        "os_type": "linux",
    }
    first, uploaded = images.upload(conn, disk, "image16-disk-2000", "raw", props, lineage=MINE)
    assert uploaded
    image = conn.image.get_image(first)
    assert (image.status, image.hash_value) == ("active", images.file_sha512(disk))
    assert (image.hw_disk_bus, image.os_type) == ("virtio", "linux")
    assert image.properties["ferry_disk_key"] == "2000"
    assert image.properties["ferry_state"] == MINE  # whose it is (img16c item 2)

    again, uploaded = images.upload(conn, disk, "image16-disk-2000", "raw", props, lineage=MINE)
    assert (again, uploaded) == (first, False)  # a restarted apply: no second image
    # another state (a rehearsal) uploading the same bytes gets its own image, never this
    # one: its --destroy would delete it under this state's records
    theirs, uploaded = images.upload(conn, disk, "image16-disk-2000", "raw", props, lineage=OTHER)
    assert uploaded and theirs != first
    assert conn.image.get_image(first).status == "active"

    # a killed apply's upload: an image record of the same disk with no data (queued), and the
    # file converted again since (other bytes): the new upload replaces both
    partial = conn.image.post(
        "/images",
        json={"name": "image16-disk-2000", "disk_format": "raw", "container_format": "bare",
              "tags": [images.TAG], **props, "ferry_state": MINE},
    ).json()["id"]  # fmt: skip
    disk.write_bytes(os.urandom(MiB) + bytes(3 * MiB))
    last, uploaded = images.upload(  # the state's record named the first (L7: only that)
        conn, disk, "image16-disk-2000", "raw", props, lineage=MINE, replaces=[first]
    )
    assert uploaded and last not in (first, partial)
    found = [str(i.id) for i in images.find_images(conn, UUID, 2000)]
    assert sorted(found) == sorted([theirs, last])  # Glance's created_at is to the second
    stopped_mid_upload(conn, tmp_path / "next.raw", props, monkeypatch)
    found = [str(i.id) for i in images.find_images(conn, UUID, 2000)]
    assert sorted(found) == sorted([theirs, last])  # Glance's created_at is to the second

    volume = images.volume_from_image(
        conn, last, name="image16-disk-2000", size_gib=1, volume_type=None, metadata={}
    )
    with volume_file(lab, volume).open("rb") as f:
        assert hashlib.sha512(f.read(4 * MiB)).hexdigest() == images.file_sha512(disk)

    images.delete(conn, [last, theirs])
    assert images.find_images(conn, UUID) == []


class StopAfter(threading.Event):
    """The apply's stop Event, set (as Ctrl-C sets it) once it has been asked `checks` times:
    the hash of a file of n chunks asks n + 1 times, then the upload once per chunk."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.left = checks

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0 or super().is_set()


def stopped_mid_upload(
    conn: Any, disk: Path, props: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during an upload (break-it 16 F3: it ran to its end) through the real HTTP stack
    (openstacksdk, keystoneauth, requests): the upload of a 4 MiB file ends after its first
    1 MiB chunk and the partial image is deleted; the disk's active image is untouched."""
    monkeypatch.setattr(images, "CHUNK", MiB)
    disk.write_bytes(os.urandom(4 * MiB))
    with pytest.raises(StoppedError, match=r"stopped after 1\.0 MiB: the partial image deleted"):
        images.upload(
            conn, disk, "image16-disk-2000", "raw", props, lineage=MINE, stop=StopAfter(5 + 1)
        )
    monkeypatch.undo()


def test_a_qcow2_upload_sends_no_holes_and_its_volume_holds_the_raw_bytes(
    lab: Lab, conn: Any, tmp_path: Path
) -> None:
    """disk_format qcow2 (the default): a 64 MiB file of 1 MiB data is converted by qemu-img
    and uploaded (~1.2 MiB sent, not 64 MiB: HTTP has no holes); Cinder makes a volume of it
    holding the raw file's bytes (the lab's driver wrote a qcow2 image's bytes as they came,
    so the volume held the qcow2 file); converted again after a restart, the same bytes are
    found by sha512 and reused."""
    raw = tmp_path / "disk-2001.raw"
    with raw.open("wb") as f:
        f.truncate(64 * MiB)
        f.seek(32 * MiB)
        f.write(os.urandom(MiB))
    qcow2 = raw.with_suffix(".qcow2")
    images.to_qcow2(raw, qcow2)
    props = {"ferry_vm_uuid": UUID, "ferry_disk_key": "2001", "hw_firmware_type": "bios"}
    image_id, uploaded = images.upload(
        conn, qcow2, "image16-disk-2001", "qcow2", props, lineage=MINE
    )
    image = conn.image.get_image(image_id)
    assert uploaded and image.disk_format == "qcow2"
    assert image.size == qcow2.stat().st_size < 2 * MiB  # bytes Glance received

    again = tmp_path / "again.qcow2"
    images.to_qcow2(raw, again)
    reused = images.upload(conn, again, "image16-disk-2001", "qcow2", props, lineage=MINE)
    assert reused == (image_id, False)

    volume = images.volume_from_image(
        conn, image_id, name="image16-disk-2001", size_gib=1, volume_type=None, metadata={}
    )
    with volume_file(lab, volume).open("rb") as f:
        assert hashlib.sha512(f.read(64 * MiB)).hexdigest() == images.file_sha512(raw)
