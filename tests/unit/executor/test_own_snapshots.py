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
from engine.model.observed import (
    CBT_SNAPSHOT_DESCRIPTION,
    SYNC_SNAPSHOT_DESCRIPTION,
    snapshot_description,
)
from engine.model.plan import Action, Change
from tests.unit.executor.fakes import one_vm_applier


def tree(name: str, description: str = "", *children: Any) -> Any:
    return SimpleNamespace(name=name, description=description, childSnapshotList=list(children))


def applier(reader: str, sources: Any, *snapshots: Any) -> Any:
    plan = SimpleNamespace(vms=[SimpleNamespace(name="build-old", reader=reader)])
    ctx = SimpleNamespace(si=None, sources=sources)
    fake: Any = SimpleNamespace(plan=plan, ctx=ctx, lineage="lineage-a")
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


def test_another_states_snapshot_stops_a_base_extent_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another ferry state's snapshot (break-it 16b F5: a rehearsal's copy running) froze the
    base extent as much as a backup's: only this state's (lineage-a) is its own."""
    theirs = snapshot_description(SYNC_SNAPSHOT_DESCRIPTION, "lineage-b")
    ours = snapshot_description(SYNC_SNAPSHOT_DESCRIPTION, "lineage-a")
    fake = applier("https", object(), tree("ferry-build-old", theirs, tree("ferry-web01", ours)))
    with pytest.raises(SourceChangedError, match=r"has snapshot\(s\) ferry-build-old now") as e:
        check(fake, monkeypatch)
    assert str(e.value).endswith(
        "older than the VM's current state; read this VM with source.reader: vddk, then run "
        "`ferry plan` again (ferry-build-old: another ferry state's, removed when its apply "
        "ends; plan again then, do not delete it under a running apply)"
    )
    check(applier("https", object(), tree("ferry-build-old", ours)), monkeypatch)


def test_leftovers_are_this_states_and_an_older_ferrys_never_another_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break-it 16b F5: a second state's apply removed a first state's snapshot under its
    running copy as "left by an interrupted apply". Now: this state's (lineage-a) and an
    older ferry's (no lineage) go; another state's (lineage-b) stays, said; a user's stays."""
    found = [
        tree("ferry-db01", snapshot_description(SYNC_SNAPSHOT_DESCRIPTION, "lineage-b")),
        tree("ferry-db01", snapshot_description(SYNC_SNAPSHOT_DESCRIPTION, "lineage-a")),
        tree("ferry-cbt-db01", snapshot_description(CBT_SNAPSHOT_DESCRIPTION, "lineage-a")),
        tree("ferry-db01", SYNC_SNAPSHOT_DESCRIPTION),
        tree("ferry-backup", "before the migration (ferry state lineage-a)"),
    ]
    for i, t in enumerate(found):
        t.snapshot = SimpleNamespace(_moId=f"snapshot-{i}")
    fake = applier("vddk", object(), *found)
    said: list[str] = []
    fake.ctx.say = lambda _vm, line: said.append(line)
    fake._leave_other_states = lambda *a: Applier._leave_other_states(fake, *a)
    removed: list[str] = []
    monkeypatch.setattr(module, "fetch_property", lambda _si, _vm, _path: fake.snapshots)
    monkeypatch.setattr(module, "remove_snapshot", lambda _si, s: removed.append(s._moId))
    assert Applier._remove_leftovers(fake, "db01", "vm-ref") == 3
    assert sorted(removed) == ["snapshot-1", "snapshot-2", "snapshot-3"]
    assert said[0] == (
        "vm.db01: snapshot snapshot-0 (ferry-db01) was taken by ferry state lineage-b: left "
        "alone (an apply of that state may be copying from it)"
    )
    assert len(said) == 4  # the line above, then one per removed snapshot
    removed.clear()
    assert Applier._remove_leftovers(fake, "db01", "vm-ref", {"snapshot-0"}) == 0
    assert removed == []  # a planned moref of another state's is not removed either
