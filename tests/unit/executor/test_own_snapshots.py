"""The snapshot step refuses a VM read from its base extent that has a snapshot of someone else's
now (break-it 12c item 10: a backup job's snapshot taken between `plan --out` and apply froze
the base extent the https reader reads; the copy recorded ferry's changeId over older bytes, 2
MiB lost, then "No changes"). ferry's own snapshots, the vddk reader and the lab's per-snapshot
files are not concerned. Fakes for vCenter's snapshot tree (pure unit test)."""

from __future__ import annotations

from dataclasses import replace as with_fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import SourceChangedError
from engine.executor import source_steps as module
from engine.executor.apply import Applier
from engine.executor.seams import LabSources
from engine.model.observed import SYNC_SNAPSHOT_DESCRIPTION
from engine.model.plan import Action, Change
from tests.unit.executor.fakes import one_vm_applier


def tree(name: str, description: str = "", *children: Any) -> Any:
    return SimpleNamespace(name=name, description=description, childSnapshotList=list(children))


def applier(reader: str, sources: Any, *snapshots: Any) -> Any:
    plan = SimpleNamespace(vms=[SimpleNamespace(name="build-old", reader=reader)])
    fake: Any = SimpleNamespace(plan=plan, ctx=SimpleNamespace(si=None, sources=sources))
    fake.snapshots = SimpleNamespace(rootSnapshotList=list(snapshots))
    return fake


def check(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "fetch_property", lambda _si, _vm, _path: fake.snapshots)
    Applier._check_own_snapshots(fake, "build-old", "vm-ref")


def test_someone_elses_snapshot_stops_a_base_extent_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours = tree("ferry-build-old", SYNC_SNAPSHOT_DESCRIPTION, tree("backup-job"))
    fake = applier("https", object(), ours)
    with pytest.raises(SourceChangedError, match=r"has snapshot\(s\) backup-job now"):
        check(fake, monkeypatch)
    fake = applier("datastore_path", object(), tree("backup-job"))
    with pytest.raises(SourceChangedError, match="the datastore_path reader reads the base"):
        check(fake, monkeypatch)


@pytest.mark.parametrize(
    ("reader", "lab_files"), [("https", False), ("vddk", False), ("datastore_path", True)]
)
def test_ferrys_own_other_readers_and_the_lab_files_are_fine(
    monkeypatch: pytest.MonkeyPatch, reader: str, lab_files: bool
) -> None:
    # not named `lab`: tests/conftest.py takes a test with a `lab` argument for a lab test
    sources = LabSources(Path("/nonexistent")) if lab_files else object()
    snapshots = [tree("ferry-build-old", SYNC_SNAPSHOT_DESCRIPTION)]
    if reader != "https":
        snapshots.append(tree("backup-job"))
    check(applier(reader, sources, *snapshots), monkeypatch)


def test_a_snapshot_taken_before_ferrys_own_stops_the_step_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 15 F1: a backup job's snapshot taken after the first check (during a cutover's
    graceful shutdown, minutes) froze the base extent before ferry's: the step fails once
    ferry's snapshot is taken (it stays recorded for the cleanup to remove), before any copy
    reads the stale extent (before: copied, verified, exit 0, the server without the guest's
    last writes)."""
    snapshot = Change("vm.web01.snapshot", "source_snapshot", Action.CREATE, "", None, {})
    real = one_vm_applier(tmp_path, "web01", "replicate", (snapshot,))
    real.plan = with_fields(real.plan, vms=(with_fields(real.plan.vms[0], reader="https"),))
    ours = SimpleNamespace(_moId="snapshot-2")
    trees = iter([[], []])  # the leftovers' read and the first check: no snapshot yet

    def fetch(_si: Any, _vm: Any, path: str) -> Any:
        if path != "snapshot":
            return []
        found = next(trees, None)
        backup = tree("veeam-backup", "job 17", tree("ferry-web01", SYNC_SNAPSHOT_DESCRIPTION))
        backup.childSnapshotList[0].snapshot = ours
        backup.childSnapshotList[0].state = "poweredOn"
        backup.snapshot = SimpleNamespace(_moId="snapshot-1")
        return SimpleNamespace(rootSnapshotList=[] if found is not None else [backup])

    monkeypatch.setattr(module, "fetch_property", fetch)
    monkeypatch.setattr(module, "create_snapshot", lambda *_a: ours)
    monkeypatch.setattr(module, "snapshot_disks", lambda *_a: [])
    monkeypatch.setattr(real, "_vm", lambda _name: "vm-ref")
    with pytest.raises(SourceChangedError, match=r"has snapshot\(s\) veeam-backup now"):
        real._snapshot(snapshot)
    assert real.ctx.snapshots["web01"][0] is ours  # the cleanup removes it
