"""Objects an older ferry made without a state lineage (pure): Glance images, volumes made from
them, and volumes that carry no `ferry_state` (made before ferry recorded it).

A state that records such an object labels it with its lineage (`labelled`: an in-place update,
metadata only), so from its next apply on any other state's plan is refused by the "managed by
ferry state X" concerns. A state with no record of a VM whose server runs does not adopt the
unlabelled objects beside that server (`unlabeled_beside_server`): an older ferry's state may
manage them (break-it 16c F1, high: a fresh state, a rehearsal or a typo in --state, adopted a
live state's server, images and volumes, and its --destroy deleted the production server);
nor, output: volume, the unlabelled volumes ferry made for a VM no server runs
(`unlabeled_volume`, break-it 16d F2: a fresh state took an older ferry's replicas silently).
Taking them over is explicit: `--adopt-lineage unlabeled` (UNLABELED). os-migrate's volumes
(found by name, no server) are adopted as before."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import Destination, ObservedServer, ObservedVolume
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status

# a change's `after` key: stamp this state's lineage on the object (metadata only, no bytes)
LABEL = "label_lineage"
# --adopt-lineage's value that takes over objects carrying no lineage (an older ferry's)
UNLABELED = "unlabeled"
LABEL_REASON = "label with this state's lineage (made by an older ferry)"
# a volume copy labels what it writes: its sync stamps the lineage (nothing more to plan)
SYNC_LABELS = "the sync labels it with this state's lineage (made by an older ferry)"
# record kind → the id key of the cloud object it names
LABELLED_KINDS = {
    "image": "image_id",
    "image_volume": "volume_id",
    "volume": "volume_id",
    "port": "port_id",  # its description's ferry_state (break-it 16g L4)
}


def cloud_lineages(cloud: Destination) -> dict[str, str | None]:
    """Object id → its `ferry_state` (None: none set) for ferry's images, volumes made from
    them, volumes and ports (those its description says ferry made), as refresh read them (an
    object not read is not listed)."""
    return {
        **{p.id: p.lineage for p in cloud.ports if p.vm_uuid},
        **{v.id: v.lineage for v in cloud.volumes},
        **{v.id: v.lineage for v in cloud.volumes_from_images or ()},
        **{i.id: i.lineage for i in (cloud.images or {}).values() if i.status == "active"},
    }


def labelled(
    changes: list[Change],
    records: Mapping[str, ResourceRecord],
    cloud: Destination | None,
    lineage: str,
) -> list[Change]:
    """`changes` with each recorded, ready image, image volume or volume (`LABELLED_KINDS`)
    whose cloud object carries no lineage (`cloud_lineages`: None) labelled with this state's
    `lineage`: a no-op becomes an update (after: the record, and LABEL), an update of an
    image's properties or a boot volume's image metadata labels too; a volume copy (its sync
    stamps the lineage) says so in its reason. A state not written yet ("") is left as it
    is."""
    if cloud is None or not lineage:
        return changes
    found = cloud_lineages(cloud)
    return [_label(c, records.get(c.address), found) for c in changes]


def _label(
    change: Change, record: ResourceRecord | None, found: Mapping[str, str | None]
) -> Change:
    key = LABELLED_KINDS.get(change.kind)
    if key is None or record is None or record.status is not Status.READY:
        return change
    object_id = str(record.attributes.get(key) or "")
    if not object_id or object_id not in found or found[object_id] is not None:
        return change
    if change.action is Action.NOOP:
        after = {**record.attributes, LABEL: True}
        return replace(change, action=Action.UPDATE, reason=LABEL_REASON, after=after)
    if change.action is Action.UPDATE and change.kind != "volume":
        after = {**(change.after or {}), LABEL: True}
        return replace(change, reason=f"{change.reason}; {LABEL_REASON}", after=after)
    if change.action is Action.UPDATE and change.after is not None:  # a volume's sync
        return replace(change, reason=f"{change.reason}; {SYNC_LABELS}")
    return change


def label_only(change: Change) -> bool:
    """The update labels the object and changes nothing else (its `after` is its `before`
    and LABEL)."""
    after = {k: v for k, v in (change.after or {}).items() if k != LABEL}
    return bool((change.after or {}).get(LABEL)) and after == (change.before or {})


def unlabeled_beside_server(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    server: ObservedServer | None,
    found: tuple[str, ...],
    adopt_lineages: frozenset[str],
) -> tuple[Concern, ...]:
    """An error when this state has no record of the VM's server, `server` (ferry's for the VM)
    exists, and the plan would adopt objects beside it that carry no lineage (`found`: their
    ids): an older ferry's state may manage them, and a fresh state (a rehearsal, a typo in
    --state) must not take a live state's server over (break-it 16c F1). Nothing with
    `--adopt-lineage unlabeled` (UNLABELED in `adopt_lineages`): taken over explicitly."""
    if server is None or not found or UNLABELED in adopt_lineages:
        return ()
    if str(Address("vm", vm.name, "server")) in records:
        return ()
    one = len(found) == 1
    things = "object beside it carries" if one else "objects beside it carry"
    them, adopted = ("it", "it is not adopted") if one else ("them", "none is adopted")
    return (
        Concern(
            ConcernLevel.ERROR,
            "unlabeled-beside-server",
            f"server {server.id} runs this VM, and {len(found)} {things} no ferry state "
            f"lineage ({', '.join(found)}: made by an older ferry): the state that made "
            f"{them} may still manage {them}, so {adopted}. Plan with that state (its next "
            f"apply labels {them} with its lineage); if no state does, take {them} over with "
            f"--adopt-lineage {UNLABELED}",
        ),
    )


def unlabeled_volumes(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    found: Mapping[int, ObservedVolume],
    origins: tuple[str, ...] = ("ferry", "os-migrate"),
) -> tuple[str, ...]:
    """The ids of the volumes found by metadata for the VM's disks (output: volume; `found`:
    by disk key) that this state does not record and that carry no lineage; `origins`: the
    makers counted (ferry's, by ferry_vm and ferry_disk; os-migrate's, by name)."""
    return tuple(
        observed.id
        for key, observed in sorted(found.items())
        if observed.lineage is None
        and observed.origin in origins
        and str(Address("vm", vm.name, "disk", key)) not in records
    )


def unlabeled_volume(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    server: ObservedServer | None,
    found: Mapping[int, ObservedVolume],
    adopt_lineages: frozenset[str],
    *,
    ports: tuple[str, ...] = (),
) -> tuple[Concern, ...]:
    """An error when the plan would adopt volumes ferry made for the VM's disks (output:
    volume; `found`: by disk key, origin "ferry") that this state does not record and that
    carry no lineage, and no ferry server runs the VM that this state does not record
    (`server`: `unlabeled_beside_server` says it then, once): an older ferry's state may still
    manage them, and a fresh state (a rehearsal, a typo in --state) must not take them over
    without saying so (break-it 16d F2); nor a state that records the VM's server but not one
    of its disks (its record lost, or the disk added since). os-migrate's volumes (found by
    name) are adopted as before; with `--adopt-lineage unlabeled` ferry's are too. Output:
    image adopts nothing but beside an adopted server (its copies are files under the state's
    lineage; images and their volumes only beside an adopted server:
    `engine.planner.diff.image_adoption.unlabeled`). `ports`: the ids of the ports ferry made
    for the VM's NICs that this state does not record and that carry no lineage (either output;
    break-it 16g L4): named in the same line (unlabeled-port when there are only ports)."""
    if UNLABELED in adopt_lineages:
        return ()
    if server is not None and str(Address("vm", vm.name, "server")) not in records:
        return ()
    volumes = () if vm.image is not None else unlabeled_volumes(vm, records, found, ("ferry",))
    ids = (*volumes, *ports)
    if not ids:
        return ()
    one = len(ids) == 1
    them, they = ("it", "it is") if one else ("them", "they are")
    named = " and ".join(
        f"{what}{'' if len(those) == 1 else 's'} {', '.join(those)}"
        for what, those in (("volume", volumes), ("port", ports))
        if those
    )
    return (
        Concern(
            ConcernLevel.ERROR,
            "unlabeled-volume" if volumes else "unlabeled-port",
            f"{named} {'carries' if one else 'carry'} ferry's metadata for this VM but no ferry "
            "state lineage (made by an "
            f"older ferry), and this state has no record of {them}: the state that made {them} "
            f"may still manage {them}, so {they} not adopted. Plan with that state (its next "
            f"apply labels {them} with its lineage); if no state does, take {them} over with "
            f"--adopt-lineage {UNLABELED}",
        ),
    )


def server_lineages(cloud: Destination, lineage: str) -> dict[str, str]:
    """Server id → the lineage of another ferry state than this one (`lineage`) that manages
    a volume or image the server runs on or from (a volume attached to it, as the attachments
    API or Cinder lists them; its boot image): that state's server, whatever this state's
    records say (break-it 16c F2: a rehearsal's records named the real state's server).
    A state not written yet ("") manages none."""
    if not lineage:
        return {}
    out: dict[str, str] = {}
    for volume in cloud.volumes:
        for attachment in volume.attachments or ():
            _other(out, attachment.server_id, volume.lineage, lineage)
    for made in cloud.volumes_from_images or ():
        for server_id in made.server_ids:
            _other(out, server_id, made.lineage, lineage)
    images = cloud.images or {}
    for server in cloud.servers:
        image = images.get(server.image_id or "")
        _other(out, server.id, image.lineage if image else None, lineage)
    return out


def _other(out: dict[str, str], server_id: str, other: str | None, lineage: str) -> None:
    if server_id and other and other != lineage:
        out.setdefault(server_id, other)
