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
from engine.executor.volume_ownership import handed_since
from engine.model.plan import Action, Change, Plan
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore


class BlockStorage:
    """Volumes by id with their metadata; deletes and metadata writes recorded."""

    def __init__(self, lineages: dict[str, str]) -> None:
        self.lineages = lineages
        self.deleted: list[str] = []
        self.stamped: list[str] = []
        self.metadata: dict[str, dict[str, str]] = {}
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
        self.metadata.setdefault(volume_id, {}).update(metadata)
        if "ferry_state" in metadata:
            self.lineages[volume_id] = metadata["ferry_state"]


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


def adoption(disk: int, volume_id: str, found: str) -> Change:
    """The adopt-and-copy step the planner makes of a volume found with `ferry_state` `found`
    (adopt_then_sync: --adopt-lineage's lost state, in cutover mode, or with no changeId to
    trust), in the plan file's own shape."""
    before = {"volume_id": volume_id, "lineage": found}
    after = {"size_gib": 1, "volume_type": None, "bootable": False, "disk_key": disk}
    return Change(
        f"vm.web01.disk[{disk}]",
        "volume",
        Action.UPDATE,
        "found ferry volume … (of ferry state lost): adopt it, then a full copy (no changeId)",
        before,
        after,
    )


def test_a_plan_adopting_a_lineage_writes_its_volumes_and_no_other() -> None:
    """Break-it 12i F3: `apply --adopt-lineage lost` refused every volume it adopts and copies
    in the same step ("the plan is stale: … managed by ferry state lost now (taken over since
    this plan was made …)"), at every apply. The lineage a step found its volume with is the
    one it adopts; a volume of any other lineage, or one a plain delta writes, is refused."""
    storage = BlockStorage({"vol-a": "lost", "vol-b": "third", "vol-c": "lost"})
    plan = Plan(
        "d",
        "mine",
        3,
        (),
        (
            adoption(2000, "vol-a", "lost"),  # the lineage it adopts: written
            adoption(2001, "vol-b", "lost"),  # taken over by a third state since: refused
            change(2002, Action.UPDATE, "vol-c"),  # recorded here, not adopted: refused
        ),
        (),
    )
    lines = handed_since(SimpleNamespace(block_storage=storage), plan)
    assert [line.split(":")[0] for line in lines] == ["vm.web01.disk[2001]", "vm.web01.disk[2002]"]
    assert "ferry state third now" in lines[0] and "ferry state lost now" in lines[1]


def test_an_adopting_step_stamps_the_volume_before_its_copy(tmp_path: Path) -> None:
    """The adopt-and-copy step writes the found volume of the lineage it adopts: this state's
    lineage is stamped on it before the copy (an apply stopped in the copy leaves a volume this
    state records and manages, its next plan resumes), and the found lineage never enters the
    record. The same step meeting a volume of another lineage fails, nothing stamped."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write([ResourceRecord("vm.other.disk[1]", "volume", Status.READY, {})], [])  # a lineage
    mine = store.read().lineage
    storage = BlockStorage({"vol-a": "lost", "vol-b": "third"})
    ctx: Any = SimpleNamespace(
        store=store,
        conn=SimpleNamespace(block_storage=storage),
        log_names={},
        snapshots={"web01": (None, {2000: None, 2001: None})},
        said=[],
    )
    ctx.say = lambda _vm, line: ctx.said.append(line)
    steps = (adoption(2000, "vol-a", "lost"), adoption(2001, "vol-b", "lost"))
    applier = Applier(Plan("d", mine, 1, (), steps, ()), ctx)
    applier.uuids = {"web01": "4215-0001"}
    applier._repair_attachments = lambda _c: None  # type: ignore[method-assign]
    synced: list[dict[str, Any]] = []

    def sync(_change: Change, _address: Any, before: dict[str, Any], *_rest: Any) -> None:
        assert storage.metadata["vol-a"]["ferry_state"] == mine  # stamped before any byte
        synced.append(before)

    applier._sync = sync  # type: ignore[method-assign]
    applier._volume(steps[0])
    assert synced == [{"volume_id": "vol-a"}]
    assert storage.metadata["vol-a"] == {
        "ferry_vm": "4215-0001",
        "ferry_disk": "2000",
        "ferry_converted": "false",
        "ferry_state": mine,
        "ferry_change_id": "",  # the plan trusts none: a full copy
        "ferry_updated_at": "",  # the lost state's stamp vouches for nothing of this one's
    }
    assert any("adopted volume vol-a (of ferry state lost" in line for line in ctx.said)
    with pytest.raises(OpenStackError, match="is managed by ferry state third now"):
        applier._volume(steps[1])
    assert "vol-b" not in storage.stamped and len(synced) == 1
    store.close()


def test_a_cutover_adopting_a_lineage_powers_off_only_when_its_volumes_are_writable(
    tmp_path: Path,
) -> None:
    """The cutover-mode adoption (adopt it, then the final delta) is checked before the source
    is powered off (ready_volumes): the lineage it adopts passes (break-it 12i F3's a3: "failed:
    vm.web01.snapshot: … taken over since this plan was made", every time), another fails."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    storage = BlockStorage({"vol-a": "lost", "vol-b": "third"})
    storage.attachments = lambda: []  # type: ignore[attr-defined]
    ctx: Any = SimpleNamespace(
        store=store,
        conn=SimpleNamespace(block_storage=storage),
        log_names={},
        conversion_host_id="host-1",
        host_ids={},
    )
    lineage = store.read().lineage
    adopting = Applier(Plan("d", lineage, 1, (), (adoption(2000, "vol-a", "lost"),), ()), ctx)
    adopting.ready_volumes("web01")
    other = Applier(Plan("d", lineage, 1, (), (adoption(2000, "vol-b", "lost"),), ()), ctx)
    with pytest.raises(OpenStackError, match=r"ferry state third now .*not powered off"):
        other.ready_volumes("web01")
    assert storage.stamped == []
    store.close()


def test_a_label_step_stamps_an_older_ferrys_volume_and_copies_nothing(tmp_path: Path) -> None:
    """break-it 16c F1, output: volume: a recorded volume without `ferry_state` (an older
    ferry's, cut over: never synced again) is labelled with this state's lineage in place, no
    snapshot, no copy (`ctx.snapshots` is empty: a sync would fail), the record as it was; one
    another state took over since is refused, untouched."""
    store = SqliteStateStore(tmp_path / "ferry.db")
    before = {"volume_id": "vol-a", "change_id": "52 aa/1", "converted": True}
    step = Change(
        "vm.web01.disk[2000]",
        "volume",
        Action.UPDATE,
        "label with this state's lineage (made by an older ferry)",
        before,
        {**before, "label_lineage": True},
    )
    store.write([ResourceRecord(step.address, "volume", Status.READY, before)], [])
    storage = BlockStorage({"vol-a": ""})
    said: list[str] = []
    ctx: Any = SimpleNamespace(
        store=store,
        conn=SimpleNamespace(block_storage=storage),
        log_names={},
        snapshots={},
        say=lambda _name, line: said.append(line),
    )
    lineage = store.read().lineage
    applier = Applier(Plan("d", lineage, 1, (), (step,), ()), ctx)
    applier._volume(step)
    assert storage.metadata == {"vol-a": {"ferry_state": lineage}}
    assert said == ["vm.web01.disk[2000]: volume vol-a labelled with this state's lineage"]
    assert store.read().resources[step.address].attributes == before
    storage.lineages["vol-a"] = "other-lineage"  # taken over since the plan: not written
    with pytest.raises(OpenStackError, match="is managed by ferry state other-lineage now"):
        applier._volume(step)
    store.close()
