"""Whose found and recorded volumes are these (pure): a volume found by metadata for a disk this
state does not record is adopted only when no other ferry state manages it and its type is the
one the spec maps; a recorded one another state took over is written no more. One error per
cause, naming every volume of it, with the commands that hand them over."""

from __future__ import annotations

from collections.abc import Mapping

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.observed import ObservedVolume
from engine.model.state import ResourceRecord


def adoption_concerns(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    found: Mapping[int, ObservedVolume],
    lineage: str,
    adopt_lineages: frozenset[str] = frozenset(),
) -> tuple[Concern, ...]:
    """Error concerns for the volumes found by metadata for disks this state has no record of
    (`found`: by disk key) that cannot be adopted as they are: one per other state whose
    lineage their `ferry_state` metadata names (another ferry state manages them: two states
    writing one volume would each take the other's writes for their own; one error per cause,
    not one per volume: break-it 16d L3), and one per volume whose volume type is not the one the
    spec maps the disk's datastore to (adopted, the replica would live on the wrong backend
    for good). What can be checked is checked; a volume os-migrate made (no lineage) or a type
    the spec leaves to the cloud's default is adopted as before (an older ferry's volume, without
    a lineage: engine.planner.diff.lineage's unlabeled-volume).
    `lineage`: this state's ("" for a state not written yet, which manages nothing);
    `adopt_lineages` (--adopt-lineage): lost states whose volumes this one takes over, as
    Terraform's `import` takes over what another state made; adopting writes this state's
    lineage on the volume, so one apply hands it over."""
    out: list[Concern] = []
    theirs: dict[str, list[tuple[int, str]]] = {}  # other lineage -> (disk key, volume id)
    handed: dict[str, list[tuple[int, str]]] = {}  # the same, of volumes recorded here
    for volume in vm.volumes:
        observed = found.get(volume.disk_key)
        record = records.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
        if observed is not None and record is not None:
            other = _handed_over(volume.disk_key, record, observed, lineage)
            if other is not None:
                handed.setdefault(other, []).append((volume.disk_key, observed.id))
        if observed is None or record is not None:
            continue
        what = f"volume {observed.id} found for disk {volume.disk_key}"
        if observed.lineage and observed.lineage not in (lineage, *adopt_lineages):
            theirs.setdefault(observed.lineage, []).append((volume.disk_key, observed.id))
        elif volume.volume_type and observed.volume_type not in (None, volume.volume_type):
            out.append(
                Concern(
                    ConcernLevel.ERROR,
                    "adopted-volume-type",
                    f"{what} is of volume type {observed.volume_type}, and the spec maps the "
                    f"disk to {volume.volume_type} (volume_type_map): not adopted. Delete the "
                    "volume (a new one is copied in full), retype it (openstack volume set "
                    f"--type {volume.volume_type} {observed.id}), or map the datastore to "
                    f"{observed.volume_type}",
                )
            )
    return (
        tuple(_handed_over_concern(other, held, lineage) for other, held in handed.items())
        + tuple(_of_another_state(other, held, lineage) for other, held in theirs.items())
        + tuple(out)
    )


def _of_another_state(other: str, held: list[tuple[int, str]], lineage: str) -> Concern:
    """The error concern of the found volumes (`held`: disk key, volume id) another ferry
    state (`other`) manages: one line for them all."""
    ids = [volume_id for _, volume_id in held]
    one = len(held) == 1
    what = _volumes_of_disks(held, " found for", "")
    this, them = ("this volume", "it") if one else ("them", "them")
    disks = "the disk" if one else "the disks"
    return Concern(
        ConcernLevel.ERROR,
        "volume-of-another-state",
        f"{what} managed by another ferry state (lineage {other}"
        f"{'' if not lineage else f'; this one is {lineage}'}): not adopted. Plan with that "
        "state (--state or its DSN); if that state is lost, plan with --adopt-lineage "
        f"{other} (this state adopts every volume of it), hand {this} over "
        f"({hand_over([('volume', i) for i in ids], lineage)}) or delete {them} (this state "
        f"then copies {disks} in full)",
    )


def _volumes_of_disks(held: list[tuple[int, str]], how: str, after: str) -> str:
    """The subject of a line on volumes (`held`: disk key, volume id): "volume V<how> disk
    K<after> is", or "volumes V1, V2<how> disks K1, K2<after> are"."""
    ids = ", ".join(volume_id for _, volume_id in held)
    keys = ", ".join(str(key) for key, _ in held)
    if len(held) == 1:
        return f"volume {ids}{how} disk {keys}{after} is"
    return f"volumes {ids}{how} disks {keys}{after} are"


def hand_over(objects: list[tuple[str, str]], lineage: str) -> str:
    """How to hand another state's volumes or images (`objects`: "volume" or "image", id) over
    to this state by hand: stamp this state's lineage on each; a state not written yet ("")
    has none, so their `ferry_state` is unset and the plan takes them over with
    --adopt-lineage unlabeled (an unlabelled object is not adopted without it:
    engine.planner.diff.lineage). One command per object (the openstack client sets one at a
    time)."""
    if lineage:
        return "; ".join(
            f"openstack {what} set --property ferry_state={lineage} {i}" for what, i in objects
        )
    unset = "; ".join(f"openstack {what} unset --property ferry_state {i}" for what, i in objects)
    return f"{unset}, then plan with --adopt-lineage unlabeled"


def _handed_over(
    key: int, record: ResourceRecord, observed: ObservedVolume, lineage: str
) -> str | None:
    """The lineage of the other ferry state that manages the volume this state records for a
    disk now (its `ferry_state` names another lineage: that state adopted it with
    --adopt-lineage, or someone handed it over), else None."""
    if record.attributes.get("volume_id") != observed.id or not lineage:
        return None
    if not observed.lineage or observed.lineage == lineage:
        return None
    return observed.lineage


def _handed_over_concern(other: str, held: list[tuple[int, str]], lineage: str) -> Concern:
    """The error concern of the recorded volumes (`held`: disk key, volume id) another ferry
    state (`other`) manages now: two states writing one volume would each take the other's
    writes for their own, so this one writes them no more. One line for them all (one error
    per cause: break-it 16d L3)."""
    ids = [volume_id for _, volume_id in held]
    one = len(held) == 1
    what = _volumes_of_disks(held, ", recorded here for", ",")
    them, the = ("it", "the volume") if one else ("them", "them")
    return Concern(
        ConcernLevel.ERROR,
        "volume-handed-over",
        f"{what} managed by ferry state {other} now (adopted with --adopt-lineage, or handed "
        f"over by hand): this state writes {them} no more. Drop the VM from this spec (this "
        "state forgets its records, deleting nothing of the other state's), or hand "
        f"{the} back ({hand_over([('volume', i) for i in ids], lineage)})",
    )
