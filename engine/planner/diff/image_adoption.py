"""destination.output: image, a cut-over VM's objects found in the cloud (pure): the server
ferry booted for it, running while this state has no record of it (a lost state, a second
operator's), is adopted with the images and the volumes made from them (never uploaded and made
again beside the server's); images and volumes another ferry state manages are error concerns,
as volume mode's adoption concerns are (engine.planner.diff.lineage)."""

from __future__ import annotations

from collections.abc import Mapping

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import (
    Destination,
    ObservedImage,
    ObservedImageVolume,
    ObservedServer,
)
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord
from engine.planner.diff.ownership import hand_over
from engine.planner.diff.volumes import FOUND_LINEAGE


def adopts(vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination | None) -> bool:
    """The plan adopts the cut-over VM's server as it runs (an ACTIVE server ferry booted for
    it, and no server record: a lost state, or a second operator's: server_change's read), so
    its images and the volumes made from them are adopted too (`adopted_volume`), never
    uploaded and made again beside the server's (break-it 16 F2)."""
    server = served_by(vm, cloud)
    if server is None or server.status != "ACTIVE":
        return False
    return str(Address("vm", vm.name, "server")) not in records


def adopted_volume(
    vm: DesiredVM, key: int, cloud: Destination
) -> tuple[ObservedImageVolume | None, str]:
    """The one volume ferry made from its images for disk `key` (metadata ferry_image_vm,
    ferry_image_disk) attached to the VM's server, and "" ; else None and why it cannot be
    adopted (Cinder not read, none attached, several attached: the server's disk is not
    known, and a new volume beside it would be a copy no server uses)."""
    server = served_by(vm, cloud)
    assert server is not None
    if cloud.volumes_from_images is None:
        return None, "Cinder's volumes made from ferry's images were not read (Glance not listed)"
    mine = [
        v
        for v in cloud.volumes_from_images
        if v.vm_uuid == vm.source.instance_uuid and v.disk_key == key
    ]
    attached = [v for v in mine if server.id in v.server_ids]
    if len(attached) == 1:
        return attached[0], ""
    if attached:
        ids = ", ".join(v.id for v in attached)
        return None, f"volumes {ids} made from its images for disk {key} are all attached to it"
    others = f" ({', '.join(v.id for v in mine)} not attached to it)" if mine else ""
    return None, (
        f"no volume made from its images for disk {key} (metadata ferry_image_vm, "
        f"ferry_image_disk) is attached to it{others}"
    )


def adopt_volume(vm: DesiredVM, key: int, made: Change, cloud: Destination | None) -> Change:
    """The volume change of an adopted server's disk (`adopts`): a read of the volume attached
    to it (`adopted_volume`); `made` unchanged when there is none (`unadopted` blocks the VM)."""
    found, _ = adopted_volume(vm, key, cloud) if cloud is not None else (None, "")
    if found is None or made.after is None:
        return made
    server = served_by(vm, cloud)
    assert server is not None
    return Change(
        made.address,
        made.kind,
        Action.READ,
        f"found volume {found.id} ferry made from image {found.image_id or '?'} for this "
        f"disk, attached to server {server.id}: adopt it",
        None,
        {
            **made.after,
            "volume_id": found.id,
            "image_id": found.image_id,
            FOUND_LINEAGE: found.lineage or "",
        },
    )


def adopted_image(vm: DesiredVM, n: int, cloud: Destination) -> tuple[ObservedImage | None, str]:
    """The Glance image an adopted server's `n`th disk was made from (boot: image's boot disk:
    the image the server boots from; else the image of the volume `adopted_volume` finds),
    when it is among ferry's active images for this disk; else None. Also its id as Nova or
    Cinder name it ("" when unknown)."""
    key = vm.volumes[n].disk_key
    server = served_by(vm, cloud)
    assert server is not None and vm.image is not None
    boot_image = n == 0 and vm.image.boot == "image"
    volume, _ = (None, "") if boot_image else adopted_volume(vm, key, cloud)
    made_from = server.image_id if boot_image else volume.image_id if volume else None
    found = (cloud.images or {}).get(made_from or "")
    mine = found is not None and found.vm_uuid == vm.source.instance_uuid
    if found is None or not mine or found.disk_key != key or found.status != "active":
        return None, made_from or ""
    return found, made_from or ""


def adopt_image(vm: DesiredVM, n: int, upload: Change, cloud: Destination | None) -> Change:
    """The upload change of an adopted server's disk (`adopts`, no image record): a read of the
    Glance image the server's volume was made from (`adopted_image`); when there is none
    nothing is uploaded (the server runs from its volumes; a later upload would have no file
    ferry knows as converted to take) and the no-op says so."""
    if upload.action is not Action.CREATE or upload.before is not None or cloud is None:
        return upload
    key = vm.volumes[n].disk_key
    server = served_by(vm, cloud)
    assert server is not None and vm.image is not None
    found, made_from = adopted_image(vm, n, cloud)
    if found is None:
        what = f"image {made_from}" if made_from else "the image"
        return Change(
            upload.address,
            upload.kind,
            Action.NOOP,
            f"server {server.id} is adopted as it runs; {what} its disk {key} was made from is "
            "not among ferry's active images in Glance: none adopted, none uploaded",
            None,
            None,
        )
    volume, _ = adopted_volume(vm, key, cloud)
    why = (
        f"server {server.id} boots from it"
        if n == 0 and vm.image.boot == "image"
        else f"volume {volume.id if volume else '?'} was made from it"
    )
    return Change(
        upload.address,
        upload.kind,
        Action.READ,
        f"found image {found.id} ferry uploaded for this disk ({why}): adopt it",
        None,
        {**(upload.after or {}), "image_id": found.id, FOUND_LINEAGE: found.lineage or ""},
    )


def other_states(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    cloud: Destination,
    lineage: str,
    adopt_lineages: frozenset[str] = frozenset(),
    *,
    beside: bool = True,
) -> tuple[Concern, ...]:
    """Error concerns for the images and the volumes made from them (output: image) that another
    ferry state manages (their `ferry_state` names another lineage), as volume mode's
    adoption_concerns says of its volumes: one the plan would adopt beside a server it adopts
    (`adopts`), unless --adopt-lineage names that state (`adopt_lineages`: the apply then
    stamps this state's lineage on it); and one this state records that another state took
    over since (this state writes and deletes it no more). `lineage`: this state's ("" for a
    state not written yet, which manages nothing). `beside` False: the server is not taken
    (server-not-from-replica says so), so nothing beside it is adopted or said."""
    if vm.image is None:
        return ()
    found: list[tuple[str, str, str, bool]] = []  # (what, id, its lineage, recorded here)
    if beside and adopts(vm, records, cloud):
        for n, volume in enumerate(vm.volumes):
            image, _ = adopted_image(vm, n, cloud)
            if image is not None and image.lineage:
                found.append(("image", image.id, image.lineage, False))
            made, _ = adopted_volume(vm, volume.disk_key, cloud)
            if made is not None and made.lineage and not (n == 0 and vm.image.boot == "image"):
                found.append(("volume", made.id, made.lineage, False))
    recorded = _recorded_lineages(vm, records, cloud)
    here = {(what, object_id) for what, object_id, _, _ in recorded}  # recorded here wins
    theirs: dict[str, list[tuple[str, str]]] = {}  # other lineage -> (what, id) beside
    for what, object_id, other, _ in found:
        if (what, object_id) not in here and other not in (lineage, *adopt_lineages):
            theirs.setdefault(other, []).append((what, object_id))
    handed: dict[str, list[tuple[str, str]]] = {}  # other lineage -> (what, id) recorded here
    for what, object_id, other, _ in recorded:
        if other != lineage:
            handed.setdefault(other, []).append((what, object_id))
    return tuple(_beside(other, held, lineage) for other, held in theirs.items()) + tuple(
        _handed(other, held, lineage) for other, held in handed.items()
    )


def unlabeled(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination
) -> tuple[str, ...]:
    """The ids of the images and volumes made from them that the plan would adopt beside the
    server it adopts (`adopts`) and that carry no lineage (an older ferry's: break-it 16c F1,
    engine.planner.diff.lineage)."""
    if vm.image is None or not adopts(vm, records, cloud):
        return ()
    out = []
    for n, volume in enumerate(vm.volumes):
        key = volume.disk_key
        image, _ = adopted_image(vm, n, cloud)
        if image is not None and image.lineage is None:
            out += [] if str(Address("vm", vm.name, "image", key)) in records else [image.id]
        made, _ = adopted_volume(vm, key, cloud)
        if made is None or made.lineage is not None or (n == 0 and vm.image.boot == "image"):
            continue
        out += [] if str(Address("vm", vm.name, "volume", key)) in records else [made.id]
    return tuple(out)


def _recorded_lineages(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination
) -> list[tuple[str, str, str, bool]]:
    """(what, id, lineage, True) for each image and image volume this state records for `vm`
    whose `ferry_state` names a state (any: the caller keeps another's)."""
    lineages = {
        **{i.id: i.lineage for i in (cloud.images or {}).values() if i.lineage},
        **{v.id: v.lineage for v in cloud.volumes_from_images or () if v.lineage},
    }
    out = []
    for record in records.values():
        what = {"image": "image", "image_volume": "volume"}.get(record.kind)
        object_id = str(record.attributes.get(f"{what}_id") or "") if what else ""
        if what and object_id in lineages:
            out.append((what, object_id, lineages[object_id], True))
    return out


def _handed(other: str, held: list[tuple[str, str]], lineage: str) -> Concern:
    """The error concern of the images and image volumes this state records (`held`: what, id)
    that another ferry state (`other`) manages now: one line for them all (one error per
    cause: break-it 16d L3); its code names images when there are any (image-handed-over),
    else volumes."""
    named, one, images = _named(held)
    it = "it" if one else "them"
    the = f"the {held[0][0]}" if one else "them"
    return Concern(
        ConcernLevel.ERROR,
        "image-handed-over" if images else "volume-handed-over",
        f"{named}, recorded here, {'is' if one else 'are'} managed by ferry state {other} now "
        "(adopted with --adopt-lineage, or handed over by hand): this state writes and "
        f"deletes {it} no more. Drop the VM from this spec (this state forgets its records, "
        f"deleting nothing of the other state's), or hand {the} back "
        f"({hand_over(_ordered(held), lineage)})",
    )


def _named(held: list[tuple[str, str]]) -> tuple[str, bool, bool]:
    """`held` (what, id) named by kind ("images A, B and volume C"), whether it is one
    object, and whether any is an image."""
    images = [i for what, i in held if what == "image"]
    volumes = [i for what, i in held if what == "volume"]
    named = " and ".join(
        f"{what}{'s' if len(ids) > 1 else ''} {', '.join(ids)}"
        for what, ids in (("image", images), ("volume", volumes))
        if ids
    )
    return named, len(held) == 1, bool(images)


def _ordered(held: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`held` (what, id), images first, as `_named` names them."""
    return [h for h in held if h[0] == "image"] + [h for h in held if h[0] != "image"]


def _beside(other: str, held: list[tuple[str, str]], lineage: str) -> Concern:
    """The error concern of the images and image volumes (`held`: what, id) beside the server
    the plan would adopt that another ferry state (`other`) manages: one line for them all
    (one error per cause, not one per object: break-it 16d L3); its code names images when
    there are any (image-of-another-state), else volumes."""
    named, one, images = _named(held)
    this = f"this {held[0][0]}" if one else "them"
    hand = hand_over(_ordered(held), lineage)
    this_one = f"; this one is {lineage}" if lineage else ""
    return Concern(
        ConcernLevel.ERROR,
        "image-of-another-state" if images else "volume-of-another-state",
        f"{named} found beside the server this plan would adopt {'is' if one else 'are'} "
        f"managed by another ferry state (lineage {other}{this_one}): not adopted. Plan with "
        "that state (--state or its DSN); if that state is lost, plan with --adopt-lineage "
        f"{other} (this state adopts every volume and image of it), or hand {this} over "
        f"({hand})",
    )


def unadopted(
    vm: DesiredVM, records: Mapping[str, ResourceRecord], cloud: Destination
) -> tuple[Concern, ...]:
    """An error concern per disk of a server the plan adopts (`adopts`) whose volume it cannot
    adopt (`adopted_volume`): ferry never makes a second volume beside the server's, and never
    boots or converts for a server that runs. The line says what to do."""
    if vm.image is None or not adopts(vm, records, cloud):
        return ()
    server = served_by(vm, cloud)
    assert server is not None
    out = []
    for n, volume in enumerate(vm.volumes):
        address = str(Address("vm", vm.name, "volume", volume.disk_key))
        if (n == 0 and vm.image.boot == "image") or address in records:
            continue
        found, why = adopted_volume(vm, volume.disk_key, cloud)
        if found is not None:
            continue
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "image-volume-unknown",
                f"server {server.id} ferry booted for this VM runs, this state has no record "
                f"of it, and {why}: ferry cannot tell which volume holds the disk and makes no "
                "second one beside the server's. Apply with the state that cut it over, attach "
                "the disk's volume to the server, or take the VM out of the spec to leave it "
                "as it is",
            )
        )
    return tuple(out)


def served_by(vm: DesiredVM, cloud: Destination | None) -> ObservedServer | None:
    """The cloud's server ferry booted for `vm` (by its instance UUID), None when there is none
    or the cloud was not read."""
    uuid = vm.source.instance_uuid
    if cloud is None or not uuid:
        return None
    return next((s for s in cloud.servers if s.vm_uuid == uuid), None)
