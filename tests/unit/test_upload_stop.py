"""Ctrl-C during a Glance upload (break-it 16 F3: the stop waited for the whole upload, 41 s
for 3 GiB, hours of a production VM off for 2 TB): the upload ends at its next chunk and its
partial image is deleted (or, when Glance refuses, left for the next upload of the disk, and
the line says so); the hash before it and qemu-img's qcow2 copy stop too. A fake Glance that
reads the streamed body as requests would; real files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import StoppedError
from engine.providers.openstack import images

PROPS = {"ferry_vm_uuid": "u1", "ferry_disk_key": "2000"}


class Glance:
    """Glance's image API as upload calls it: a new image's id, the data PUT read chunk by
    chunk (the apply's stop set after `stop_after` chunks), deletes recorded (`refuse`: each
    fails)."""

    def __init__(self, stop: threading.Event, stop_after: int, refuse: bool = False) -> None:
        self.stop, self.stop_after, self.refuse = stop, stop_after, refuse
        self.received = 0
        self.deleted: list[str] = []

    def images(self, tag: list[str]) -> list[Any]:
        return []

    def post(self, _url: str, json: dict[str, Any]) -> Any:
        return SimpleNamespace(json=lambda: {"id": "img-new"})

    def put(self, _url: str, data: Any, headers: dict[str, str]) -> None:
        for n, chunk in enumerate(data, 1):
            self.received += len(chunk)
            if n == self.stop_after:
                self.stop.set()

    def delete_image(self, image_id: str, ignore_missing: bool) -> None:
        if self.refuse:
            raise os_exc.HttpException("503 Service Unavailable")
        self.deleted.append(image_id)


def _disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(images, "CHUNK", 4096)
    disk = tmp_path / "disk-2000.raw"
    disk.write_bytes(bytes(range(256)) * 16 * 10)  # 10 chunks of 4 KiB
    return disk


def test_a_stop_ends_the_upload_at_its_next_chunk_and_deletes_the_partial_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, stop = _disk(tmp_path, monkeypatch), threading.Event()
    glance = Glance(stop, stop_after=2)
    with pytest.raises(StoppedError) as stopped:
        images.upload(
            SimpleNamespace(image=glance), disk, "web01-2000", "raw", PROPS, lineage="l1", stop=stop
        )
    assert glance.received == 2 * 4096  # not the 10 chunks of the whole file
    assert glance.deleted == ["img-new"]
    assert str(stopped.value) == (
        f"upload of {disk} to image img-new stopped after 8.0 KiB: the partial image deleted"
    )


def test_a_partial_image_glance_does_not_delete_is_left_for_the_next_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, stop = _disk(tmp_path, monkeypatch), threading.Event()
    glance = Glance(stop, stop_after=1, refuse=True)
    with pytest.raises(StoppedError, match="the next upload of this disk deletes it"):
        images.upload(
            SimpleNamespace(image=glance), disk, "web01-2000", "raw", PROPS, lineage="l1", stop=stop
        )
    assert glance.received == 4096


def test_a_stop_before_the_upload_ends_the_hash_and_makes_no_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, stop = _disk(tmp_path, monkeypatch), threading.Event()
    stop.set()
    glance = Glance(stop, stop_after=0)
    with pytest.raises(StoppedError, match=r"hashing .* stopped after 0 B"):
        images.upload(
            SimpleNamespace(image=glance), disk, "web01-2000", "raw", PROPS, lineage="l1", stop=stop
        )
    assert (glance.received, glance.deleted) == (0, [])


def test_a_stop_ends_qemu_img_and_deletes_its_partial_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, out = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
    raw.write_bytes(bytes(4096))
    slow = tmp_path / "bin" / "qemu-img"  # a 2 TB conversion: writes its output, then works on
    slow.parent.mkdir()
    slow.write_text('#!/bin/sh\nfor last; do :; done\necho partial > "$last"\nexec sleep 60\n')
    slow.chmod(0o755)
    monkeypatch.setenv("PATH", f"{slow.parent}:/usr/bin:/bin")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(StoppedError, match=r"qemu-img convert of .* stopped"):
        images.to_qcow2(raw, out, stop)
    assert time.monotonic() - began < 5
    assert not out.exists()


def test_the_qcow2_copy_of_a_disk_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Break-it 16b F4: qemu-img wrote disk-K.qcow2 0644 (any local user could read the guest's
    disk during the upload, and after a kill) while ferry makes the raw file 0600."""
    raw, out = tmp_path / "disk-2000.raw", tmp_path / "disk-2000.qcow2"
    raw.write_bytes(b"guest" * 1000)
    images.to_qcow2(raw, out)
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_fully_allocated_disk_is_uploaded_raw_not_as_a_larger_qcow2(tmp_path: Path) -> None:
    """A fully allocated disk's qcow2 copy is its bytes plus qcow2's tables, so larger than the
    disk: Cinder rounds an image's size up to GiB and refuses a volume from it ("Size of
    specified image 2GB is larger than volume size 1GB", with or without Glance's
    virtual_size). Such a disk is uploaded raw (its file is the disk's capacity, never more
    than its volume); a sparse one as the smaller qcow2. Real qemu-img."""
    full = tmp_path / "full" / "disk-2000.raw"
    full.parent.mkdir()
    full.write_bytes(os.urandom(4 * 2**20))  # incompressible and every cluster allocated
    assert images.upload_file(full, "qcow2") == (full, "raw")
    assert not full.with_suffix(".qcow2").exists()  # the larger copy is not left behind
    sparse = tmp_path / "disk-2001.raw"
    with sparse.open("wb") as f:
        f.write(os.urandom(2**20))
        f.truncate(64 * 2**20)
    upload, disk_format = images.upload_file(sparse, "qcow2")
    assert (upload, disk_format) == (sparse.with_suffix(".qcow2"), "qcow2")
    assert upload.stat().st_size < 2 * 2**20
    assert images.upload_file(sparse, "raw") == (sparse, "raw")
