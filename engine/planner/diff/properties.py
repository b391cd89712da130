"""Image properties made by an earlier apply, brought to what the plan wants now (pure).

A Glance image ferry uploaded (destination.output: image) keeps the properties of its upload, and
a boot volume keeps the image metadata it got (set by ferry before the boot with output: volume;
copied by Cinder from the image with output: image). When the source changed since (firmware
switched to EFI, another NIC model) or ferry's rule did, the plan shows a `~ update` with the
changed keys (before → after) and the apply sets them: the image's properties (Glance), the
volume's image metadata (Cinder). A server already booted keeps what Nova read at its boot; the
new values serve a server built from the image or volume again (a rebuild, a new server).

Drift (Terraform's word: the cloud changed outside the tool): refresh lists ferry's images in
Glance and reads the image metadata of the volumes made from them in Cinder, and what the cloud
holds now is compared, not what the state recorded: a property someone changed or removed by hand
is an update whose reason says it changed in Glance (or Cinder), the cloud's value → the spec's.
Without that reading (None) the state's record is compared. An image the state records that is
gone from Glance is uploaded again (`gone_image`).

Ownership: ferry owns Nova's keys it derives (NOVA_KEYS): one it sets is set back, one it does
not set for the VM is removed (`unset`). Every other property (hw_qemu_guest_agent, hw_rng_model,
a team's own label, added by hand or by another tool) is not ferry's: never compared, changed or
removed. ferry's own (ferry_vm_uuid, ferry_disk_key) never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.model.desired import DesiredVM
from engine.model.observed import ObservedImage, ObservedVolume
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
GONE = ("killed", "deleted", "pending_delete")  # Glance statuses of an image that is no more
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
    change: Change,
    record: ResourceRecord | None,
    wanted: Mapping[str, str],
    glance: Mapping[str, ObservedImage] | None = None,
) -> Change:
    """A recorded, ready image (`change` a no-op) whose properties differ from `wanted` (all of
    the image's properties): an update of its properties, before → after in the reason; else
    `change`. `glance`: ferry's images as Glance lists them now, by id (None: not read): the
    properties Glance holds are compared (a hand change is drift, its reason says so, `unset`
    names the Nova keys to remove); else the recorded ones (no comparison when the record does
    not say what was uploaded). An image gone from Glance is gone_image's."""
    if change.action is not Action.NOOP or record is None or record.status is not Status.READY:
        return change
    found = (glance or {}).get(str(record.attributes.get("image_id") or ""))
    if found is not None and found.status not in GONE:
        return _glance_drift(change, record, found, wanted)
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


def _glance_drift(
    change: Change, record: ResourceRecord, found: ObservedImage, wanted: Mapping[str, str]
) -> Change:
    """The image's Nova keys as Glance holds them against `wanted`: an update when they differ,
    said as drift when Glance no longer holds what the record says was uploaded."""
    held = nova_part(found.properties)
    said = delta(held, nova_part(wanted))
    if not said:
        return change
    recorded = record.attributes.get("properties")
    where = (
        "image properties changed since the upload"
        if recorded is not None and nova_part(recorded) == held
        else f"drift: image {found.id}'s properties changed in Glance (outside ferry), Glance's "
        "→ the spec's"
    )
    return Change(
        change.address,
        "image",
        Action.UPDATE,
        f"{where}: {said} (Glance image update; {SERVED})",
        dict(record.attributes),
        {
            **record.attributes,
            "properties": dict(wanted),
            "unset": sorted(set(held) - set(nova_part(wanted))),
        },
    )


def gone_image(
    change: Change,
    record: ResourceRecord | None,
    glance: Mapping[str, ObservedImage] | None,
    after: Mapping[str, object],
) -> Change:
    """A recorded, ready image (`change` a no-op) that Glance no longer lists, or lists as
    killed or being deleted (deleted outside ferry): uploaded again from the converted file
    (`after`: the spec's upload), the reason says why; else `change` (also when Glance was not
    read: `glance` None)."""
    if change.action is not Action.NOOP or not image_lost(record, glance):
        return change
    assert record is not None and glance is not None
    image_id = str(record.attributes.get("image_id") or "")
    found = glance.get(image_id)
    return Change(
        change.address,
        "image",
        Action.CREATE,
        f"drift: recorded image {image_id} {lost(found)}: upload the converted file again (a "
        "new image; a server already booted keeps running)",
        dict(record.attributes),
        dict(after),
    )


def image_lost(record: ResourceRecord | None, glance: Mapping[str, ObservedImage] | None) -> bool:
    """Is the recorded, ready image gone from Glance (not listed, or listed as killed or being
    deleted: deleted outside ferry)? False when Glance was not read (`glance` None) or the
    record names no image."""
    if record is None or record.status is not Status.READY or glance is None:
        return False
    image_id = str(record.attributes.get("image_id") or "")
    if not image_id:
        return False
    found = glance.get(image_id)
    return found is None or found.status in GONE


def lost(found: ObservedImage | None) -> str:
    """How an image is lost, for a plan line: 'is gone from Glance (deleted outside ferry)' when
    Glance does not list it, 'is killed in Glance (outside ferry)' by its status."""
    if found is None:
        return "is gone from Glance (deleted outside ferry)"
    return f"is {found.status} in Glance (outside ferry)"


def recorded_image_volume(
    change: Change,
    record: ResourceRecord | None,
    image: ResourceRecord | None,
    wanted: Mapping[str, str],
    cinder: Mapping[str, Mapping[str, str]] | None = None,
) -> Change:
    """The boot volume made from the boot disk's image (`change` a no-op): Cinder copied the
    image's properties at its creation (the `image` record's), or ferry set them since (its
    `image_metadata`); `cinder`: the image metadata of ferry's image volumes as Cinder holds it
    now, by volume id (None: not read): compared when it has the record's volume (a hand change
    is drift, its reason says so), else the recorded one. When it differs from `wanted`, an
    update of its image metadata (`unset`: the Nova keys to remove)."""
    if change.action is not Action.NOOP or record is None or record.status is not Status.READY:
        return change
    attrs = record.attributes
    had = attrs.get("image_metadata")
    if had is None:  # what Cinder copied from the image, when the image's record says it
        had = image.attributes.get("properties") if image else None
    found = (cinder or {}).get(str(attrs.get("volume_id") or ""))
    held = found if found is not None else had
    if held is None:
        return change
    said = delta(nova_part(held), nova_part(wanted))
    if not said:
        return change
    where = "the boot volume's image metadata changed"
    if found is not None and (had is None or nova_part(had) != nova_part(found)):
        where = (
            "drift: the boot volume's image metadata changed in Cinder (outside ferry), "
            "Cinder's → the spec's"
        )
    return Change(
        change.address,
        "image_volume",
        Action.UPDATE,
        f"{where}: {said} (Cinder volume image metadata; {SERVED})",
        dict(attrs),
        {
            **attrs,
            "image_metadata": nova_part(wanted),
            "unset": sorted(set(nova_part(held)) - set(nova_part(wanted))),
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
