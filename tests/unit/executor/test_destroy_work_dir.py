"""--destroy of an image VM's disk files removes the qcow2 copy a killed upload left beside a
file and the VM's `<work_dir>/<uuid>/` folder with its last file (break-it 16 L3: both stayed);
a folder that still holds a file, or that is not the VM's, stays. Real files, a real state."""

from __future__ import annotations

from pathlib import Path

from engine.executor.image import DiskFiles
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes


def _delete(store: SqliteStateStore, folder: Path, key: int) -> None:
    address = f"vm.web01.disk[{key}]"
    attrs = {"path": str(folder / f"disk-{key}.raw"), "disk_key": key}
    store.write([ResourceRecord(address, "disk_file", Status.READY, attrs)], [])
    files = DiskFiles(fakes.fake_applier(fakes.context(store)))
    files.sync(Change(address, "disk_file", Action.DELETE, "--destroy", attrs, None))
    assert address not in store.read().resources


def test_destroy_removes_the_files_a_leftover_qcow2_and_the_empty_vm_folder(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    folder = tmp_path / "work" / "u1"  # the VM's instance UUID (fake_applier's web01: u1)
    folder.mkdir(parents=True)
    for name in ("disk-2000.raw", "disk-2001.raw", "disk-2001.qcow2"):
        (folder / name).write_bytes(b"x")
    _delete(store, folder, 2001)
    assert sorted(p.name for p in folder.iterdir()) == ["disk-2000.raw"]  # still the VM's
    _delete(store, folder, 2000)
    assert not folder.exists()
    assert (tmp_path / "work").exists()  # the work_dir is the user's


def test_a_folder_that_is_not_the_vms_stays(store: SqliteStateStore, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "disk-2000.raw").write_bytes(b"x")
    _delete(store, folder, 2000)
    assert folder.exists() and not any(folder.iterdir())
