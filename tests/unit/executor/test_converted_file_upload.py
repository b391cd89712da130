"""An image is uploaded only from the file its conversion left (break-it 16 F1: a work_dir file
changed out of band was re-uploaded, after its image was deleted, as "the disk as converted at
the cutover", and a server booted from it). A real SQLite state and a real file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import FerryError
from engine.executor.image import ImageCutover, file_identity
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

IMAGE = "vm.web01.image[2001]"


def _cutover(store: SqliteStateStore, path: Path, converted: str | None) -> ImageCutover:
    attrs = {"path": str(path), **({"converted_id": converted} if converted else {})}
    store.write([ResourceRecord("vm.web01.disk[2001]", "disk_file", Status.READY, attrs)], [])
    return ImageCutover(fakes.fake_applier(fakes.context(store)))


def test_a_file_changed_since_its_conversion_is_not_uploaded(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    path = tmp_path / "disk-2001.raw"
    path.write_bytes(bytes(8192))
    cutover = _cutover(store, path, file_identity(path))
    cutover._check_converted_file(IMAGE, path)  # as the conversion left it
    with path.open("r+b") as f:  # a stray write (9 bytes at 4096)
        f.seek(4096)
        f.write(b"ninebytes")
    os.utime(path, ns=(1, 1))
    with pytest.raises(FerryError, match="is not the file its conversion left"):
        cutover._check_converted_file(IMAGE, path)


def test_a_record_from_before_the_identity_was_kept_is_not_checked(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    path = tmp_path / "disk-2001.raw"
    path.write_bytes(bytes(4096))
    _cutover(store, path, None)._check_converted_file(IMAGE, path)
