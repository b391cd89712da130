"""A plan's moves carried out on a real state store: a renamed VM's records re-keyed in one write
(two VMs that swapped names included), nothing else; a state that no longer fits is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import StateError
from engine.executor.applier_base import Context
from engine.executor.apply import Applier
from engine.executor.moved import moved_records
from engine.model.plan import Action, Change, Plan, VMPlan
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore

UA, UB = "4215aaaa-0000-4000-8000-00000000000a", "4215aaaa-0000-4000-8000-00000000000b"


def move(old: str, new: str, uuid: str) -> Change:
    return Change(
        f"vm.{new}",
        "moved",
        Action.MOVE,
        f"vm.{old} has moved to vm.{new}",
        {"address": f"vm.{old}", "instance_uuid": uuid},
        {"address": f"vm.{new}", "instance_uuid": uuid},
    )


def volume(address: str, volume_id: str, uuid: str | None = None) -> ResourceRecord:
    attributes = {"volume_id": volume_id, "change_id": "52 aa/1"}
    return ResourceRecord(
        address, "volume", Status.READY, attributes | ({"instance_uuid": uuid} if uuid else {})
    )


def store_with(tmp_path: Path, *records: ResourceRecord) -> SqliteStateStore:
    store = SqliteStateStore(tmp_path / "ferry.db")
    store.write(list(records), [])
    return store


def test_a_rename_re_keys_the_records_in_one_write_and_stamps_the_uuid(tmp_path: Path) -> None:
    store = store_with(
        tmp_path,
        volume("vm.db01.disk[2000]", "vol-1"),  # recorded before records carried the UUID
        volume("vm.db01.disk[2001]", "vol-2", UA),
        ResourceRecord("vm.db01.port[0]", "port", Status.READY, {"port_id": "p-1"}),
        volume("vm.web01.disk[2000]", "vol-3", UB),
    )
    before = store.read()
    puts, deletes = moved_records([move("db01", "db01-renamed", UA)], before.resources)
    store.write(puts, deletes)
    after = store.read()
    assert after.serial == before.serial + 1
    assert sorted(after.resources) == [
        "vm.db01-renamed.disk[2000]",
        "vm.db01-renamed.disk[2001]",
        "vm.db01-renamed.port[0]",
        "vm.web01.disk[2000]",
    ]
    moved = after.resources["vm.db01-renamed.disk[2000]"]
    assert moved.attributes == {"volume_id": "vol-1", "change_id": "52 aa/1", "instance_uuid": UA}
    assert after.resources["vm.web01.disk[2000]"] == before.resources["vm.web01.disk[2000]"]


def test_two_vms_that_swapped_names_keep_their_own_records(tmp_path: Path) -> None:
    store = store_with(
        tmp_path,
        volume("vm.app-a.disk[2000]", "vol-a", UA),
        volume("vm.app-b.disk[2000]", "vol-b", UB),
    )
    moves = [move("app-a", "app-b", UA), move("app-b", "app-a", UB)]
    puts, deletes = moved_records(moves, store.read().resources)
    assert deletes == []
    store.write(puts, deletes)
    found = store.read().resources
    assert found["vm.app-b.disk[2000]"].attributes["volume_id"] == "vol-a"
    assert found["vm.app-a.disk[2000]"].attributes["volume_id"] == "vol-b"


def test_a_state_that_no_longer_fits_the_plan_is_refused(tmp_path: Path) -> None:
    taken = store_with(
        tmp_path,
        volume("vm.db01.disk[2000]", "vol-1", UA),
        volume("vm.db01-renamed.disk[2000]", "v", UB),
    ).read()
    with pytest.raises(StateError, match=r"cannot move records onto vm\.db01-renamed\.disk"):
        moved_records([move("db01", "db01-renamed", UA)], taken.resources)
    other = {"vm.db01.disk[2000]": volume("vm.db01.disk[2000]", "vol-1", UB)}
    with pytest.raises(StateError, match="belongs to instance UUID"):
        moved_records([move("db01", "db01-renamed", UA)], other)


def vm_plan(name: str, uuid: str) -> VMPlan:
    return VMPlan(f"vm.{name}", name, uuid, name, "replicate", None, "", (), False)


def test_apply_moves_all_at_once_and_stamps_the_uuid_on_every_record_it_writes(
    tmp_path: Path,
) -> None:
    """The Applier's move node (the first of the plan's moves re-keys them all; the second
    finds them done) and its writes, which carry the VM's instance UUID from the plan."""
    store = store_with(
        tmp_path, volume("vm.app-a.disk[2000]", "vol-a", UA), volume("vm.app-b.disk[2000]", "vol-b")
    )
    moves = (move("app-a", "app-b", UA), move("app-b", "app-a", UB))
    plan = Plan("d" * 64, "", 1, (vm_plan("app-b", UA), vm_plan("app-a", UB)), moves, ())
    context = Context(None, None, store, None, None, "", log_dir=tmp_path / "logs")  # type: ignore[arg-type]
    applier = Applier(plan, context)
    serial = store.read().serial
    applier.run("vm.app-a")
    applier.run("vm.app-b")
    found = store.read()
    assert found.serial == serial + 1, "one write for every move"
    assert found.resources["vm.app-a.disk[2000]"].attributes["volume_id"] == "vol-b"
    assert found.resources["vm.app-a.disk[2000]"].attributes["instance_uuid"] == UB
    applier._write([ResourceRecord("vm.app-b.port[0]", "port", Status.READY, {"port_id": "p"})], [])
    assert store.read().resources["vm.app-b.port[0]"].attributes == {
        "port_id": "p",
        "instance_uuid": UA,
    }
