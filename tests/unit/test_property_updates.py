"""Images and boot volumes made by an earlier apply keep the properties of their making; when the
source or ferry's rule changed since, the plan updates them (before → after of the changed keys)
and the apply sets them: Glance image properties by one JSON patch, Cinder volume image metadata
set and unset. A re-plan after the update is a no-op. Drift: what Glance and Cinder hold now
(refresh reads them) is compared, a hand change is set back, only Nova's keys are ferry's, an
image gone from Glance is uploaded again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import engine.executor.apply  # noqa: F401 - image.py is imported through the applier, as ferry does
from engine.executor.image import ImageCutover
from engine.model.observed import ObservedImage
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.properties import (
    delta,
    gone_image,
    recorded_image,
    recorded_image_volume,
    volume_delta,
)
from engine.providers.openstack.compute import unset_image_metadata
from engine.providers.openstack.images import property_ops, set_properties

OLD = {
    "hw_firmware_type": "bios",
    "hw_disk_bus": "virtio",
    "os_type": "linux",
    "ferry_disk_key": "1",
}
NEW = {
    "hw_firmware_type": "uefi",
    "hw_machine_type": "q35",
    "os_type": "linux",
    "ferry_disk_key": "1",
}


def _noop(address: str, kind: str, attrs: dict[str, Any]) -> tuple[Change, ResourceRecord]:
    record = ResourceRecord(address, kind, Status.READY, attrs)
    return Change(address, kind, Action.NOOP, "up to date", attrs, attrs), record


def test_the_changed_keys_read_before_to_after() -> None:
    assert delta(OLD, NEW) == (
        "hw_firmware_type: bios → uefi, + hw_machine_type=q35, - hw_disk_bus (was virtio)"
    )
    assert delta(NEW, NEW) == ""
    # a volume's metadata leaves Nova's defaults out: one that says the default is no change
    assert volume_delta({"hw_disk_bus": "virtio", "checksum": "x"}, {}) == ""
    assert volume_delta({"hw_vif_model": "vmxnet3"}, {}) == "- hw_vif_model (was vmxnet3)"


def test_an_uploaded_image_is_updated_once_then_no_change() -> None:
    change, record = _noop("vm.a.image[1]", "image", {"image_id": "i-1", "properties": OLD})
    update = recorded_image(change, record, NEW)
    assert update.action is Action.UPDATE
    assert "hw_firmware_type: bios → uefi" in update.reason
    assert update.after == {"image_id": "i-1", "properties": NEW}
    again, applied = _noop("vm.a.image[1]", "image", dict(update.after or {}))
    assert recorded_image(again, applied, NEW).action is Action.NOOP
    # a record that does not say what was uploaded: nothing to compare with
    bare, unknown = _noop("vm.a.image[1]", "image", {"image_id": "i-1"})
    assert recorded_image(bare, unknown, NEW) is bare


def test_the_boot_volume_follows_its_image_then_its_own_record() -> None:
    _, image = _noop("vm.a.image[1]", "image", {"image_id": "i-1", "properties": OLD})
    change, record = _noop("vm.a.volume[1]", "image_volume", {"volume_id": "v-1"})
    update = recorded_image_volume(change, record, image, NEW)
    assert update.action is Action.UPDATE
    assert update.after == {
        "volume_id": "v-1",
        "image_metadata": {k: v for k, v in NEW.items() if not k.startswith("ferry_")},
        "unset": ["hw_disk_bus"],
    }
    attrs = {k: v for k, v in (update.after or {}).items() if k != "unset"}
    again, applied = _noop("vm.a.volume[1]", "image_volume", attrs)
    assert recorded_image_volume(again, applied, image, NEW).action is Action.NOOP


def test_one_json_patch_adds_replaces_and_removes() -> None:
    current = {
        "id": "i-1",
        "hw_firmware_type": "bios",
        "hw_scsi_model": "lsilogic",
        "os_type": "linux",
    }
    ops = property_ops(
        current,
        {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_type": "linux"},
        ["hw_scsi_model", "absent"],
    )
    assert ops == [
        {"op": "replace", "path": "/hw_firmware_type", "value": "uefi"},
        {"op": "add", "path": "/hw_machine_type", "value": "q35"},
        {"op": "remove", "path": "/hw_scsi_model"},
    ]
    sent: list[Any] = []
    image = SimpleNamespace(
        get=lambda url: SimpleNamespace(json=lambda: dict(current)),
        patch=lambda url, json, headers: sent.append((url, json, headers)),
    )
    changed = set_properties(SimpleNamespace(image=image), "i-1", {"os_type": "linux"})
    assert changed == [] and sent == []  # already so: no request
    set_properties(SimpleNamespace(image=image), "i-1", {"os_type": "windows"})
    assert sent == [
        (
            "/images/i-1",
            [{"op": "replace", "path": "/os_type", "value": "windows"}],
            {"Content-Type": "application/openstack-images-v2.1-json-patch"},
        )
    ]


def test_unset_removes_the_keys_in_one_call() -> None:
    calls: list[Any] = []
    storage = SimpleNamespace(delete_volume_image_metadata=lambda v, keys: calls.append((v, keys)))
    unset_image_metadata(SimpleNamespace(block_storage=storage), "v-1", ["b", "a"])
    unset_image_metadata(SimpleNamespace(block_storage=storage), "v-1", [])
    assert calls == [("v-1", ["a", "b"])]


# drift: what Glance and Cinder hold now, read by refresh, against what the spec sets
UPLOADED = {"hw_firmware_type": "bios", "hw_disk_bus": "virtio", "os_type": "linux"}


def _glance(properties: dict[str, str], status: str = "active") -> dict[str, ObservedImage]:
    return {"i-1": ObservedImage("i-1", status, "u", 1, {**properties, "ferry_disk_key": "1"})}


def _uploaded() -> tuple[Change, ResourceRecord]:
    return _noop("vm.a.image[1]", "image", {"image_id": "i-1", "properties": dict(UPLOADED)})


def test_a_property_changed_in_glance_is_drift_set_back_to_the_spec() -> None:
    change, record = _uploaded()
    glance = _glance({**UPLOADED, "hw_disk_bus": "ide"})
    update = recorded_image(change, record, UPLOADED, glance)
    assert update.action is Action.UPDATE
    assert update.reason.startswith(
        "drift: image i-1's properties changed in Glance (outside ferry), Glance's → the "
        "spec's: hw_disk_bus: ide → virtio ("
    )
    assert (update.after or {})["properties"] == UPLOADED and (update.after or {})["unset"] == []
    # the record alone (Glance not read) sees nothing: the old code's blind spot
    assert recorded_image(change, record, UPLOADED) is change
    # applied: Glance holds the spec's again, no change
    assert recorded_image(change, record, UPLOADED, _glance(UPLOADED)) is change


def test_a_property_removed_in_glance_is_added_back() -> None:
    change, record = _uploaded()
    glance = _glance({k: v for k, v in UPLOADED.items() if k != "os_type"})
    update = recorded_image(change, record, UPLOADED, glance)
    assert update.action is Action.UPDATE and "+ os_type=linux" in update.reason


def test_only_novas_keys_are_ferrys_others_added_by_hand_stay() -> None:
    change, record = _uploaded()
    theirs = {**UPLOADED, "hw_qemu_guest_agent": "yes", "owner_team": "payments"}
    assert recorded_image(change, record, UPLOADED, _glance(theirs)) is change
    owned = {**UPLOADED, "hw_scsi_model": "lsilogic"}  # a Nova key ferry does not set here
    update = recorded_image(change, record, UPLOADED, _glance(owned))
    assert "- hw_scsi_model (was lsilogic)" in update.reason
    assert (update.after or {})["unset"] == ["hw_scsi_model"]


def test_glance_as_recorded_but_not_as_wanted_says_since_the_upload() -> None:
    change, record = _uploaded()  # the source (or ferry's rule) changed, nobody touched Glance
    wanted = {**UPLOADED, "hw_firmware_type": "uefi", "hw_machine_type": "q35"}
    update = recorded_image(change, record, wanted, _glance(UPLOADED))
    assert update.reason.startswith("image properties changed since the upload: ")


def test_an_image_gone_from_glance_is_uploaded_again() -> None:
    change, record = _uploaded()
    spec = {"name": "a-disk-1", "file": "/w/u/disk-1.raw", "properties": UPLOADED}
    again = gone_image(change, record, {}, spec)
    assert (again.action, again.after) == (Action.CREATE, spec)
    assert "recorded image i-1 is gone from Glance (deleted outside ferry)" in again.reason
    killed = gone_image(change, record, _glance(UPLOADED, "killed"), spec)
    assert "is killed in Glance" in killed.reason and killed.action is Action.CREATE
    assert gone_image(change, record, _glance(UPLOADED), spec) is change
    assert gone_image(change, record, None, spec) is change  # Glance not read: no claim


def test_the_boot_volumes_metadata_changed_in_cinder_is_drift() -> None:
    _, image = _uploaded()
    change, record = _noop("vm.a.volume[1]", "image_volume", {"volume_id": "v-1"})
    copied = {**UPLOADED, "image_id": "i-1", "checksum": "x"}  # as Cinder copied it
    assert recorded_image_volume(change, record, image, UPLOADED, {"v-1": copied}) is change
    edited = {**copied, "hw_machine_type": "pc", "backup": "daily"}
    update = recorded_image_volume(change, record, image, UPLOADED, {"v-1": edited})
    assert update.reason.startswith(
        "drift: the boot volume's image metadata changed in Cinder (outside ferry), Cinder's → "
        "the spec's: - hw_machine_type (was pc) ("
    )
    assert (update.after or {})["unset"] == ["hw_machine_type"]  # not `backup`: not ferry's


def test_the_apply_removes_the_keys_the_plan_unsets() -> None:
    current = {"id": "i-1", **UPLOADED, "hw_scsi_model": "lsilogic", "owner_team": "x"}
    sent: list[Any] = []
    image = SimpleNamespace(
        get=lambda url: SimpleNamespace(json=lambda: dict(current)),
        patch=lambda url, json, headers: sent.append(json),
    )
    written: list[Any] = []
    applier = SimpleNamespace(
        ctx=SimpleNamespace(
            conn=SimpleNamespace(image=image),
            say=lambda *a: None,
            store=SimpleNamespace(read=lambda: SimpleNamespace(resources={})),  # no record
        ),
        _write=lambda records, gone: written.extend(records),
        lineage="mine",
    )
    before = {"image_id": "i-1", "properties": dict(UPLOADED)}
    after = {**before, "unset": ["hw_scsi_model"]}
    change = Change("vm.a.image[1]", "image", Action.UPDATE, "drift", before, after)
    ImageCutover(cast(Any, applier)).image(change)
    assert sent == [[{"op": "remove", "path": "/hw_scsi_model"}]]  # owner_team stays
    assert "unset" not in written[0].attributes
