"""output: image: a sync builds on a recorded disk file only when the file at the path is the one
the record names and, after a complete sync, still the file that sync wrote (break-it 12c items 13
and 15: a work_dir changed since a failed cutover, or an older copy back at the same path when its
mount returned, took a delta onto the wrong bytes, then "No changes"). Real files, no lab."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import engine.executor.apply  # noqa: F401 - image.py is imported through the applier, as ferry does
from engine.executor.image import _known_file, file_identity


def _written(path: Path, data: bytes) -> dict[str, object]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"path": str(path), "change_id": "52 aa/3", "file_id": file_identity(path)}


def test_the_file_the_last_sync_wrote_is_built_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "work" / "disk-2000.raw"
    record = _written(path, b"synced")
    assert _known_file(record, path) == (record, "")
    monkeypatch.chdir(tmp_path)  # the same file spelled ./work/…: one path
    same = {**record, "path": "./work/disk-2000.raw"}
    assert _known_file(same, Path("work/disk-2000.raw")) == (same, "")


def test_no_record_gone_moved_replaced_or_changed_is_a_full_copy(tmp_path: Path) -> None:
    path = tmp_path / "work" / "disk-2000.raw"
    assert _known_file({}, path) == ({}, "")
    record = _written(path, b"synced")
    elsewhere = tmp_path / "work2" / "disk-2000.raw"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"synced")
    assert _known_file(record, elsewhere) == ({}, f"the last sync went to {path}, not {elsewhere}")
    path.unlink()
    assert _known_file(record, path) == ({}, f"{path} is gone")
    path.write_bytes(b"synced")  # an older copy back at the path: another inode
    assert "is not the file the last sync wrote" in _known_file(record, path)[1]
    record = _written(path, b"synced")
    os.utime(path, ns=(1, 1))  # written by something else since (its mtime moved)
    assert "is not the file the last sync wrote" in _known_file(record, path)[1]


def test_a_converted_file_and_an_old_record_are_left_to_their_own_rules(tmp_path: Path) -> None:
    path = tmp_path / "disk-2000.raw"
    record = _written(path, b"synced")
    path.write_bytes(b"converted")  # virt-v2v wrote it: the converted_file rule copies it in full
    converted = {**record, "converted_file": True}
    assert _known_file(converted, path) == (converted, "")
    older = {"path": str(path), "change_id": "52 aa/3"}  # a ferry that recorded no file_id
    assert _known_file(older, path) == (older, "")
