"""The snapshot step refuses a VM read from its base extent that has a snapshot of someone else's
now (break-it 12c item 10: a backup job's snapshot taken between `plan --out` and apply froze
the base extent the https reader reads; the copy recorded ferry's changeId over older bytes, 2
MiB lost, then "No changes"). ferry's own snapshots, the vddk reader and the lab's per-snapshot
files are not concerned. Fakes for vCenter's snapshot tree (pure unit test)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import SourceChangedError
from engine.executor import source_steps as module
from engine.executor.apply import Applier
from engine.executor.seams import LabSources
from engine.model.observed import SYNC_SNAPSHOT_DESCRIPTION


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
