"""A volume another ferry state took over since the plan was made (--adopt-lineage stamped its
lineage in the volume's `ferry_state`) is never deleted or written by this state's plan (break-it
12e item 3: a saved `plan --destroy` deleted both of web01's volumes, 67 MiB of the other state's
replica, exit 0; a saved delta plan wrote one and stamped it back). A saved plan is refused whole
before the apply (handed_since); a step that meets such a volume during an apply (taken over
while the apply ran) fails with one line, the volume untouched. A fake block-storage proxy and a
real SQLite state store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.executor.apply import Applier
from engine.executor.volume_steps import handed_since
from engine.model.plan import Action, Change, Plan
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore


class BlockStorage:
    """Volumes by id with their metadata; deletes and metadata writes recorded."""

    def __init__(self, lineages: dict[str, str]) -> None:
        self.lineages = lineages
        self.deleted: list[str] = []
        self.stamped: list[str] = []
        self.listings = 0

    def volumes(self, details: bool = True) -> Any:
        self.listings += 1
        return [self.get_volume(volume_id) for volume_id in self.lineages]

    def get_volume(self, volume_id: str) -> Any:
        if volume_id not in self.lineages:
            raise os_exc.NotFoundException(f"volume {volume_id}")
        metadata = {"ferry_state": self.lineages[volume_id]} if self.lineages[volume_id] else {}
        return SimpleNamespace(id=volume_id, status="available", metadata=metadata)

    def snapshots(self, details: bool = True) -> list[Any]:
        return []  # none: the volume delete does not wait

    def delete_volume(self, volume_id: str) -> None:
        self.deleted.append(volume_id)

    def set_volume_metadata(self, volume_id: str, **metadata: str) -> None:
        self.stamped.append(volume_id)


def change(disk: int, action: Action, volume_id: str) -> Change:
    before = {"volume_id": volume_id, "change_id": "52 aa/1"}
    after = None if action is Action.DELETE else {**before, "change_id": "52 aa/2"}
    return Change(f"vm.web01.disk[{disk}]", "volume", action, "--destroy", before, after)


def test_a_saved_plan_touching_a_handed_volume_is_refused_whole() -> None:
    storage = BlockStorage({"vol-a": "other-lineage", "vol-b": "mine", "vol-c": ""})
    changes = (
        change(2000, Action.DELETE, "vol-a"),  # taken over since the plan: refused
        change(2001, Action.DELETE, "vol-b"),  # still this state's
        change(2002, Action.UPDATE, "vol-c"),  # no lineage (an older ferry's): this state's
        change(2003, Action.DELETE, "vol-gone"),  # gone: nothing to refuse
        replace_action(change(2004, Action.DELETE, "vol-a"), Action.FORGET),  # forgotten: fine
    )
    plan = Plan("d", "mine", 3, (), changes, ())
    assert handed_since(SimpleNamespace(block_storage=storage), plan) == [
        "vm.web01.disk[2000]: volume vol-a is managed by ferry state other-lineage now (taken "
        "over since this plan was made, with --adopt-lineage or by hand): not deleted"
    ]
    written = Plan("d", "mine", 3, (), (change(2000, Action.UPDATE, "vol-a"),), ())
    assert handed_since(SimpleNamespace(block_storage=storage), written)[0].endswith("not written")
    assert storage.deleted == [] and storage.stamped == []
    assert storage.listings == 2  # one listing per plan, whatever its number of volume steps
    nothing = Plan("d", "mine", 3, (), (replace_action(changes[0], Action.FORGET),), ())
    assert handed_since(SimpleNamespace(block_storage=storage), nothing) == []
    assert storage.listings == 2  # no volume step: no listing


def replace_action(c: Change, action: Action) -> Change:
    return Change(c.address, c.kind, action, c.reason, c.before, None)


@pytest.mark.parametrize("action", [Action.DELETE, Action.UPDATE])
def test_a_step_meeting_a_handed_volume_fails_and_leaves_it(tmp_path: Path, action: Action) -> None:
    """Taken over while the apply ran (or a plan made and applied at once, hours of copies
    before the step): the delete or the sync of that volume fails with one line; the record
    stays (the next plan says volume-handed-over or forgets it on --destroy)."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    step = change(2000, action, "vol-a")
    store.write([ResourceRecord(step.address, "volume", Status.READY, dict(step.before or {}))], [])
    storage = BlockStorage({"vol-a": "other-lineage"})
    ctx: Any = SimpleNamespace(
        store=store, conn=SimpleNamespace(block_storage=storage), log_names={}, snapshots={}
    )
    plan = Plan("d", store.read().lineage, 1, (), (step,), ())
    applier = Applier(plan, ctx)
    applier._repair_attachments = lambda _c: None  # type: ignore[method-assign]
    with pytest.raises(OpenStackError, match="is managed by ferry state other-lineage now"):
        applier._volume(step)
    assert storage.deleted == [] and storage.stamped == []
    assert step.address in store.read().resources
    storage.lineages["vol-a"] = store.read().lineage  # handed back: deleted as planned
    if action is Action.DELETE:
        applier._volume(step)
        assert storage.deleted == ["vol-a"]
    store.close()
