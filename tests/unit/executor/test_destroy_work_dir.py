"""--destroy of an image VM's disk files removes the qcow2 copy a killed upload left beside a
file, the VM's `<work_dir>/<lineage>/<uuid>/` folder with its last file (break-it 16 L3: both
stayed) and the state's `<lineage>/` folder with its last VM; a folder that still holds a file,
or that is not the VM's, stays. A file outside the state's lineage folder (an older ferry's
`<work_dir>/<uuid>/disk-K.raw`) is deleted only while it is the file this state last wrote:
another state sharing the work_dir rewrote it (break-it 16b F2: a rehearsal's --destroy deleted
the real state's replica), it stays. Real files, a real state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.executor.image import DiskFiles, file_identity
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes


def _delete(store: SqliteStateStore, folder: Path, key: int, **more: Any) -> list[str]:
    """The --destroy of disk `key`'s file in `folder` (its record: `more` added); the lines."""
    address = f"vm.web01.disk[{key}]"
    attrs = {"path": str(folder / f"disk-{key}.raw"), "disk_key": key, **more}
    store.write([ResourceRecord(address, "disk_file", Status.READY, attrs)], [])
    said: list[str] = []
    files = DiskFiles(fakes.fake_applier(fakes.context(store, said)))
    files.sync(Change(address, "disk_file", Action.DELETE, "--destroy", attrs, None))
    assert address not in store.read().resources
    return said


def test_destroy_removes_the_files_a_leftover_qcow2_and_the_empty_folders(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    # the state's folder (fake_applier's lineage), then the VM's instance UUID (web01: u1)
    folder = tmp_path / "work" / "fake-lineage" / "u1"
    folder.mkdir(parents=True)
    for name in ("disk-2000.raw", "disk-2001.raw", "disk-2001.qcow2"):
        (folder / name).write_bytes(b"x")
    _delete(store, folder, 2001)
    assert sorted(p.name for p in folder.iterdir()) == ["disk-2000.raw"]  # still the VM's
    _delete(store, folder, 2000)
    assert not folder.exists() and not folder.parent.exists()
    assert (tmp_path / "work").exists()  # the work_dir is the user's


def test_a_folder_that_is_not_the_vms_stays(store: SqliteStateStore, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "disk-2000.raw").write_bytes(b"x")
    _delete(store, folder, 2000, file_id=file_identity(folder / "disk-2000.raw"))
    assert folder.exists() and not any(folder.iterdir())


def test_an_older_ferrys_file_another_state_rewrote_stays(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    """Break-it 16b F2: states A and B shared `<work_dir>/<uuid>/disk-K.raw` (ferry before the
    lineage folder); B's full copy rewrote A's file, A's --destroy deleted B's replica. A file
    still as this state's last sync (file_id) or conversion (converted_id) left it is deleted;
    one written since stays, said, its record goes."""
    folder = tmp_path / "work" / "u1"
    folder.mkdir(parents=True)
    ours, theirs = folder / "disk-2000.raw", folder / "disk-2001.raw"
    ours.write_bytes(b"x")
    theirs.write_bytes(b"x")
    before = file_identity(theirs)
    theirs.write_bytes(b"written by another state")
    said = _delete(store, folder, 2001, file_id=before)
    assert theirs.read_bytes() == b"written by another state"
    assert said == [
        f"vm.web01.disk[2001]: {theirs} left in place: it is outside this state's folder "
        "(fake-lineage) and not the file this state last wrote (another ferry state sharing "
        "the work_dir may have written it since); the record goes"
    ]
    assert _delete(store, folder, 2000, converted_id=file_identity(ours)) == []
    assert not ours.exists() and folder.exists()  # disk-2001.raw is not this state's
