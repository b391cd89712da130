"""Image properties made by an earlier apply, brought to what the plan wants now (pure).

A Glance image ferry uploaded (destination.output: image) keeps the properties of its upload, and
a boot volume keeps the image metadata it got (set by ferry before the boot with output: volume;
copied by Cinder from the image with output: image). When the source changed since (firmware
switched to EFI, another NIC model) or ferry's rule did, the plan shows a `~ update` with the
changed keys (before → after) and the apply sets them: the image's properties (Glance), the
volume's image metadata (Cinder). Properties are compared by Nova's keys (NOVA_KEYS); ferry's
own (ferry_vm_uuid, ferry_disk_key) never change. A server already booted keeps what Nova read
at its boot; the new values serve a server built from the image or volume again (a rebuild, a
new server).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.model.desired import DesiredVM
from engine.model.observed import ObservedVolume
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner import image_properties as nova

# the properties ferry derives (image_properties); any other key is left as it is
NOVA_KEYS = (
    "hw_firmware_type",
    "hw_machine_type",
    "os_secure_boot",
    "hw_disk_bus",
    "hw_scsi_model",
    "hw_vif_model",
    "os_type",
)
SERVED = (
    "a server already booted keeps what Nova read at its boot; a server built from it again "
    "gets these"
)


def nova_part(properties: Mapping[str, Any] | None) -> dict[str, str]:
    """The Nova keys of `properties` ({} for None), as strings."""
    return {k: str(v) for k, v in (properties or {}).items() if k in NOVA_KEYS}


def delta(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """The changed keys as a plan says them, in NOVA_KEYS order: 'k: old → new', '+ k=new',
    '- k (was old)'; '' when nothing differs."""
    out = []
    for key in NOVA_KEYS:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if old is None:
            out.append(f"+ {key}={new}")
        elif new is None:
            out.append(f"- {key} (was {old})")
        else:
            out.append(f"{key}: {old} → {new}")
    return ", ".join(out)


def volume_delta(observed: Mapping[str, str], wanted: Mapping[str, str]) -> str:
    """As delta, for a volume whose wanted metadata leaves out what Nova assumes without any
    (image_properties.volume_image_metadata): an observed key equal to Nova's default is no
    change when it is not wanted."""
    have = {
        k: v
        for k, v in nova_part(observed).items()
        if k in wanted or nova.NOVA_DEFAULTS.get(k) != v
    }
    return delta(have, nova_part(wanted))


def recorded_image(
    change: Change, record: ResourceRecord | None, wanted: Mapping[str, str]
) -> Change:
    """A recorded, ready image (`change` a no-op) whose uploaded properties differ from `wanted`
    (all of the image's properties): an update of its properties, before → after in the reason;
    else `change` (also when the record does not say what was uploaded)."""
    if change.action is not Action.NOOP or record is None or record.status is not Status.READY:
        return change
    if "properties" not in record.attributes:  # not recorded: nothing to compare with
        return change
    recorded = dict(record.attributes["properties"] or {})
    said = delta(nova_part(recorded), nova_part(wanted))
    if not said:
        return change
    return Change(
        change.address,
        "image",
        Action.UPDATE,
        f"image properties changed since the upload: {said} (Glance image update; {SERVED})",
        dict(record.attributes),
        {**record.attributes, "properties": dict(wanted)},
    )


def recorded_image_volume(
    change: Change,
    record: ResourceRecord | None,
    image: ResourceRecord | None,
    wanted: Mapping[str, str],
) -> Change:
    """The boot volume made from the boot disk's image (`change` a no-op): Cinder copied the
    image's properties at its creation (the `image` record's), or ferry set them since (its
    `image_metadata`); when they differ from `wanted`, an update of its image metadata."""
    if change.action is not Action.NOOP or record is None or record.status is not Status.READY:
        return change
    attrs = record.attributes
    had = attrs.get("image_metadata")
    if had is None:  # what Cinder copied from the image, when the image's record says it
        had = image.attributes.get("properties") if image else None
    if had is None:
        return change
    said = delta(nova_part(had), nova_part(wanted))
    if not said:
        return change
    return Change(
        change.address,
        "image_volume",
        Action.UPDATE,
        f"the boot volume's image metadata changed: {said} (Cinder volume image metadata; "
        f"{SERVED})",
        dict(attrs),
        {
            **attrs,
            "image_metadata": nova_part(wanted),
            "unset": sorted(set(nova_part(had)) - set(nova_part(wanted))),
        },
    )


def booted_volume(
    vm: DesiredVM,
    change: Change,
    record: ResourceRecord | None,
    observed: Mapping[tuple[str, Any], ObservedVolume],
) -> Change:
    """output: volume: a server ferry booted (`change` its no-op) whose boot volume's image
    metadata, as the cloud reports it, differs from what the plan sets now: an update of the
    server's `image_metadata` (the boot volume's); else `change`."""
    if (
        vm.image is not None
        or not vm.volumes
        or change.action is not Action.NOOP
        or record is None
        or record.status is not Status.READY
    ):
        return change
    found = observed.get((vm.source.instance_uuid or "", vm.volumes[0].disk_key))
    if found is None or found.image_metadata is None:
        return change
    wanted = nova.volume_image_metadata(vm.source, converted=vm.convert)
    said = volume_delta(found.image_metadata, wanted)
    if not said:
        return change
    boot = Address("vm", vm.name, "disk", vm.volumes[0].disk_key)
    return replace(
        change,
        action=Action.UPDATE,
        reason=f"the boot volume's image metadata changed: {said} (Cinder volume image "
        f"metadata of {boot}, volume {found.id}; {SERVED})",
        after={
            **record.attributes,
            "image_metadata": wanted,
            "unset": sorted(set(nova_part(found.image_metadata)) - set(wanted)),
            "boot_volume_id": found.id,
        },
    )
