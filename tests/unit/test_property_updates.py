"""Images and boot volumes made by an earlier apply keep the properties of their making; when the
source or ferry's rule changed since, the plan updates them (before → after of the changed keys)
and the apply sets them: Glance image properties by one JSON patch, Cinder volume image metadata
set and unset. A re-plan after the update is a no-op."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.properties import (
    delta,
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
