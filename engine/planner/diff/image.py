"""destination.output: image (pure): a VM migrated without a conversion host.

Its disks are copied (the copy engine's full, delta and resumed copies, as for volumes) into files
`<work_dir>/<state lineage>/<instance uuid>/disk-<key>.raw` on the machine running ferry
(`disk_file` changes at the disks' addresses); at cutover virt-v2v-in-place converts the files,
each is uploaded to Glance (`vm.X.image[K]`), and a volume is made from each image
(`vm.X.volume[K]`) the server boots from; with `boot: image` the boot disk stays an image the
server boots from and only data disks become volumes. The work directory must hold the disks'
allocated bytes: a VM that does not fit is an error concern.

Drift after the cutover (objects deleted outside ferry): an image gone from Glance is uploaded
again from its converted file, but not the boot image of `boot: image` while its server exists
(Nova cannot re-point a running server to a new image id without a rebuild: a warning says what
the loss means instead); a volume made from an image that is gone from Cinder is made again from
its image when the server is gone too (the server's own drift boots it again), and blocks the VM
with an error while the server exists (ferry does not swap a server's volumes). A running server
ferry booted that this state does not record is adopted with its images and volumes
(engine.planner.diff.image_adoption).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from engine.addresses import Address
from engine.model.desired import Concern, ConcernLevel, DesiredVM, ImageOutput
from engine.model.observed import (
    Destination,
    ObservedServer,
)
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.planner import image_properties as nova
from engine.planner.diff.common import simple
from engine.planner.diff.image_adoption import adopt_image, adopt_volume, adopts, served_by
from engine.planner.diff.properties import (
    gone_image,
    image_lost,
    lost,
    recorded_image,
    recorded_image_volume,
)
from engine.planner.diff.volumes import full_bytes
from engine.units import exact, human

WRITES = (Action.CREATE, Action.UPDATE, Action.REPLACE)


def disk_path(
    image: ImageOutput, vm: DesiredVM, disk_key: int, records: Mapping[str, ResourceRecord]
) -> str:
    """The local file a disk is copied into: `<work_dir>/<lineage>/<instance uuid>/disk-<key>
    .raw`, under the state's lineage (two states sharing a work_dir, a rehearsal's and the real
    one, wrote one file, and one's --destroy deleted the other's replica: break-it 16b F2).
    A file an older ferry recorded (`records`, the VM's) at `<work_dir>/<instance uuid>/disk-
    <key>.raw`, without the lineage, stays where it is: read and written as recorded."""
    folder = vm.source.instance_uuid or vm.source.moref
    root = image.work_dir.rstrip("/")
    record = records.get(str(Address("vm", vm.name, "disk", disk_key)))
    recorded = str((record.attributes if record else {}).get("path") or "")
    if recorded and PurePath(recorded) == PurePath(f"{root}/{folder}/disk-{disk_key}.raw"):
        return recorded
    state = f"{image.lineage}/" if image.lineage else ""
    return f"{root}/{state}{folder}/disk-{disk_key}.raw"


def as_files(
    vm: DesiredVM,
    image: ImageOutput,
    copies: list[Change],
    records: Mapping[str, ResourceRecord] | None = None,
    files: frozenset[str] | None = None,
) -> list[Change]:
    """The VM's volume copies turned into copies to local files (same address, actions and
    bytes; the file path instead of the volume type). A file a conversion began on (recorded
    converted_file) and no server booted from is copied again in full: a delta would keep the
    conversion's writes, and the conversion runs again on the copy. A recorded file missing from
    `files` (the work_dir's disk files; None: not read) before the cutover is copied again in
    full from 0, as a recorded volume that no longer exists is."""
    out = []
    disks = {d.key: d for d in vm.source.disks}
    for planned in copies:
        if planned.kind != "volume":
            out.append(planned)
            continue
        change = planned
        record = (records or {}).get(change.address)
        attrs = record.attributes if record else {}
        key = int((change.after or change.before or {}).get("disk_key", -1))
        gone = _gone(attrs, files)
        moved = _moved(attrs, disk_path(image, vm, key, records or {}))
        if (gone or moved) and change.after:
            change = Change(
                change.address,
                change.kind,
                Action.CREATE,
                f"recorded file {gone} no longer exists: full copy from 0"
                if gone
                else f"the last sync went to {moved} (work_dir changed since): full copy into "
                "the new file",
                dict(attrs),
                {**change.after, "copy": "full"},
                full_bytes(disks[key]) if key in disks else change.bytes,
                estimate=True,
            )
        elif attrs.get("converted_file") and not attrs.get("converted") and change.after:
            key = int(change.after.get("disk_key", -1))
            change = Change(
                change.address,
                change.kind,
                Action.REPLACE,
                "a conversion began on the file since its last sync (no server booted from it): "
                "full copy, then convert again",
                dict(attrs),
                {**change.after, "copy": "full"},
                full_bytes(disks[key]) if key in disks else change.bytes,
                estimate=True,
            )
        key = int((change.after or change.before or {}).get("disk_key", -1))
        after = None
        if change.after is not None:
            after = {
                k: v for k, v in change.after.items() if k not in ("volume_type", "volume_id")
            } | {"path": disk_path(image, vm, key, records or {})}
        size = disks[key].capacity if key in disks else None
        reason = file_wording(change.reason, size)
        # a file's holes are punched, not written: no zero writes to count
        out.append(replace(change, kind="disk_file", after=after, reason=reason, zeros=None))
    return out


EXTENDS = (
    re.compile(r"extend the volume from \d+ to \d+ GiB \(Cinder extend\)"),
    re.compile(r"the volume is extended to \d+ GiB \(Cinder extend\)"),
)


def file_wording(reason: str, capacity: int | None) -> str:
    """A volume copy's reason said of a local file: its volume is the file, and a grown disk's
    file is extended by a local ftruncate to the disk's `capacity` (bytes, shown exactly; the
    volume's Cinder extend is to whole GiB) — break-it 16 L1."""
    grows = f"the file grows to {exact(capacity)} (a sparse local extend)" if capacity else ""
    for extend in EXTENDS:
        reason = extend.sub(grows or "the file grows", reason)
    return reason.replace("new volume", "new file").replace("volume", "file")


def _moved(attrs: Mapping[str, Any], path: str) -> str:
    """The recorded file's path when it is not `path` (work_dir changed) before the cutover's
    server, else "": a delta builds only on the file the last sync wrote."""
    recorded = str(attrs.get("path") or "")
    if not recorded or attrs.get("converted") or PurePath(recorded) == PurePath(path):
        return ""
    return recorded


def _gone(attrs: Mapping[str, Any], files: frozenset[str] | None) -> str:
    """The recorded file's path when it is not among the work_dir's `files`, else "". A cut-over
    VM's files are done with (its server boots from volumes), so their absence is no change."""
    path = str(attrs.get("path") or "")
    if files is None or not path or attrs.get("converted") or str(PurePath(path)) in files:
        return ""
    return path


def image_properties(vm: DesiredVM) -> dict[str, str]:
    """Glance properties Nova boots by (engine.planner.image_properties: firmware, machine type,
    Secure Boot, disk bus, NIC model, os_type, from the source VM) and ferry's own
    (ferry_vm_uuid, ferry_disk_key is added per disk) to find its images again."""
    return nova.image_properties(vm.source, converted=vm.convert) | {
        "ferry_vm_uuid": vm.source.instance_uuid or ""
    }


def image_changes(
    vm: DesiredVM,
    image: ImageOutput,
    records: Mapping[str, ResourceRecord],
    reconvert: bool,
    cloud: Destination | None = None,
) -> list[Change]:
    """Per disk, its Glance image and (boot: volume, or a data disk) the volume made from it;
    `reconvert`: the conversion runs again in this plan, so each image recorded is uploaded again
    (and its volume made again). A recorded image whose properties the plan now sets otherwise,
    and the boot volume made from it, are updated; one gone from Glance is uploaded again
    (engine.planner.diff.properties: `cloud`'s images and image volumes, as refresh read them,
    are compared; None: the records), except the boot image a server still boots from
    (`_upload`); a volume gone from Cinder is made again when the server is gone too
    (`_remade`)."""
    server = served_by(vm, cloud)
    adopting = adopts(vm, records, cloud)
    out: list[Change] = []
    for n, volume in enumerate(vm.volumes):
        upload = _upload(vm, image, n, records, reconvert=reconvert, cloud=cloud, server=server)
        out.append(adopt_image(vm, n, upload, cloud) if adopting else upload)
        if n == 0 and image.boot == "image":
            continue
        key = volume.disk_key
        address = str(Address("vm", vm.name, "volume", key))
        after: dict[str, Any] = {
            "size_gib": volume.size_gib,
            "volume_type": volume.volume_type,
            "bootable": volume.bootable,
            "disk_key": key,
            "image": str(Address("vm", vm.name, "image", key)),
        }
        reason = "volume made from the image"
        record = records.get(address)
        made = _again(simple(address, "image_volume", record, after, reason), reconvert, after)
        made = _remade(made, record, after, cloud, server)
        made = _interrupted(vm, key, made, record, cloud)
        if adopting and record is None:
            made = adopt_volume(vm, key, made, cloud)
        if n == 0:  # Nova boots by the boot volume's image metadata
            image_record = records.get(str(after["image"]))
            cinder = cloud.image_volumes if cloud else None
            made = recorded_image_volume(made, record, image_record, image_properties(vm), cinder)
        out.append(made)
    return out


def _interrupted(
    vm: DesiredVM,
    key: int,
    made: Change,
    record: ResourceRecord | None,
    cloud: Destination | None,
) -> Change:
    """A volume to make from disk `key`'s image that an interrupted apply of this state began
    (its record in progress, or a volume of this state's lineage for the disk found by ferry's
    metadata that nothing records nor attaches: killed before the record): the reason says it
    is used when it was made from the image this apply uses, not made again (the apply:
    engine.executor.image, break-it 16g L1)."""
    if made.action is not Action.CREATE or vm.image is None or not vm.image.lineage:
        return made
    recorded = record is not None and record.status is Status.IN_PROGRESS
    began = str(record.attributes.get("volume_id") or "") if recorded and record else ""
    listed = (cloud.volumes_from_images or ()) if cloud is not None else ()
    found = [
        v.id
        for v in listed
        if v.vm_uuid == vm.source.instance_uuid
        and v.disk_key == key
        and v.lineage == vm.image.lineage
        and not v.server_ids
    ]
    ids = ([began] if began else []) + [i for i in found if i != began]
    if not ids:
        return made
    what = f"volume {ids[0]}" if len(ids) == 1 else f"volumes {', '.join(ids)}"
    return replace(
        made,
        reason=f"{made.reason}: an interrupted apply began {what}; one made from the image this "
        "apply uses is waited for and used, not made again (others are deleted)",
    )


def _upload(
    vm: DesiredVM,
    image: ImageOutput,
    n: int,
    records: Mapping[str, ResourceRecord],
    *,
    reconvert: bool,
    cloud: Destination | None,
    server: ObservedServer | None,
) -> Change:
    """The upload of the `n`th disk's converted file (`vm.X.image[K]`).

    A recorded image gone from Glance is uploaded again (gone_image), except the boot image
    of `boot: image` while the server booted from it still exists (`server`): Nova keeps the
    server running from its copy on the hypervisor, and a new upload would get a new id that
    the server does not use (Nova changes a server's image only by a rebuild, which replaces
    its disk with the cutover's), so it would serve nothing while looking like a repair. It
    stays a no-op whose reason says so, and `served_boot_image` warns what the loss means
    (rebuild and evacuation need the image). With the server gone too, the image is uploaded
    again for the server booted again."""
    key = vm.volumes[n].disk_key
    address = str(Address("vm", vm.name, "image", key))
    properties = image_properties(vm)
    after: dict[str, Any] = {
        "name": f"{vm.target_name}-disk-{key}",
        "disk_format": image.disk_format,
        "container_format": "bare",
        "file": disk_path(image, vm, key, records),
        "disk_key": key,
        "properties": properties | {"ferry_disk_key": str(key)},
    }
    record = records.get(address)
    glance = cloud.images if cloud else None
    upload = simple(address, "image", record, after, _upload_reason(image, n, properties))
    upload = _again(upload, reconvert, after)
    boot_image = n == 0 and image.boot == "image"
    served = boot_image and server is not None and upload.action is Action.NOOP
    if served and server is not None and image_lost(record, glance):
        assert record is not None and glance is not None
        image_id = str(record.attributes.get("image_id"))
        return replace(
            upload,
            reason=f"image {image_id} {lost(glance.get(image_id))}; server {server.id} boots "
            "from it: not uploaded again (a new image would not be the server's; see the "
            "boot-image-gone warning)",
        )
    upload = gone_image(upload, record, glance, after)
    return _sent(vm, image, key, recorded_image(upload, record, after["properties"], glance))


def _sent(vm: DesiredVM, image: ImageOutput, key: int, upload: Change) -> Change:
    """An upload's bytes (an estimate, shown per image and summed as the plan's bytes to
    upload): HTTP has no holes, so a raw file sends its disk's whole capacity, a qcow2 copy
    about its allocated bytes (break-it 16 L2: 56 s for a 2 GiB raw upload under "0 B to
    copy")."""
    disk = next((d for d in vm.source.disks if d.key == key), None)
    if upload.action not in (Action.CREATE, Action.REPLACE) or disk is None:
        return upload
    sent = disk.capacity if image.disk_format == "raw" else full_bytes(disk)
    return replace(upload, bytes=sent, estimate=True)


def _volume_gone(record: ResourceRecord | None, cloud: Destination | None) -> str:
    """The recorded, ready volume's id when the cloud's volumes (read: `volume_ids`) do not
    have it (deleted outside ferry), else ""."""
    if record is None or record.status is not Status.READY or cloud is None:
        return ""
    volume_id = str(record.attributes.get("volume_id") or "")
    if cloud.volume_ids is None or not volume_id or volume_id in cloud.volume_ids:
        return ""
    return volume_id


def _remade(
    change: Change,
    record: ResourceRecord | None,
    after: dict[str, Any],
    cloud: Destination | None,
    server: ObservedServer | None,
) -> Change:
    """A recorded volume made from an image that is gone from Cinder (deleted outside ferry)
    while the VM's server is gone too: made again from its image (the disk as converted at the
    cutover; an image gone too is uploaded again first) for the server booted again (its own
    drift), and the reason says so. With the server still there nothing is planned:
    `lost_volumes`' error says what to do (ferry does not swap a running server's volumes)."""
    gone = _volume_gone(record, cloud)
    if change.action is not Action.NOOP or not gone or server is not None:
        return change
    assert record is not None
    return Change(
        change.address,
        change.kind,
        Action.CREATE,
        f"drift: recorded volume {gone} is gone from Cinder (deleted outside ferry): make it "
        f"again from {after['image']} (the disk as converted at the cutover)",
        dict(record.attributes),
        after,
    )


def _upload_reason(image: ImageOutput, n: int, properties: Mapping[str, str]) -> str:
    what = "upload the converted file to Glance"
    if image.disk_format == "qcow2":
        what += " (qemu-img convert to qcow2 first)"
    shown = {k: v for k, v in properties.items() if not k.startswith("ferry_")}
    what += f" with {nova.describe(shown)}"
    if n == 0 and image.boot == "image":
        what += (
            "; the server boots from this image on the hypervisor's local disk (boot: image: "
            "no volume for this disk; the image stays in Glance, --destroy deletes it)"
        )
    return what


def _again(change: Change, reconvert: bool, after: dict[str, Any]) -> Change:
    """A recorded upload (or volume made from it) done again after a new conversion, as the
    spec now says (`after`), never as the record says: a work_dir changed since the first
    attempt uploaded the old directory's file (break-it 12c item 13)."""
    if not reconvert or change.action is not Action.NOOP:
        return change
    return Change(
        change.address,
        change.kind,
        Action.REPLACE,
        "the files are converted again: upload again (the old one deleted after)",
        change.before,
        after,
    )


def server_after(vm: DesiredVM, image: ImageOutput, after: Mapping[str, Any]) -> dict[str, Any]:
    """The server change's `after` for an image VM: booted from the boot disk's image (boot:
    image) or from the volumes made from the images."""
    keys = [v.disk_key for v in vm.volumes]
    boot_image = image.boot == "image" and keys
    return {
        **after,
        "volumes": keys[1:] if boot_image else keys,
        "boot": "image" if boot_image else "volume",
        "image": keys[0] if boot_image else None,
    }


def local_bytes(vm: DesiredVM, changes: list[Change]) -> int:
    """Bytes this plan's copies may add to the work directory: a new or replaced file its disk's
    allocated bytes (its capacity when unknown), a delta its changed bytes; a qcow2 upload needs
    as much again for the converted copy."""
    disks = {d.key: d for d in vm.source.disks}
    total = 0
    for change in changes:
        if change.action not in WRITES:
            continue
        key = int((change.after or {}).get("disk_key", -1))
        if change.kind == "disk_file" and change.action is Action.UPDATE:
            total += change.bytes or 0
        elif key in disks and (
            change.kind == "disk_file"
            or (change.kind == "image" and (change.after or {}).get("disk_format") == "qcow2")
        ):
            total += full_bytes(disks[key])
    return total


@dataclass
class WorkDir:
    """The work directory's free bytes, taken VM by VM in plan order; None: not read (no
    concern)."""

    free: int | None
    taken: int = 0

    def take(self, vm: DesiredVM, changes: list[Change]) -> tuple[Concern, ...]:
        """An error concern when `vm`'s bytes do not fit in what the VMs before it left."""
        if vm.image is None or self.free is None:
            return ()
        need = local_bytes(vm, changes)
        left = self.free - self.taken
        if need <= left:
            self.taken += need
            return ()
        return (
            Concern(
                ConcernLevel.ERROR,
                "work-dir-short",
                f"needs {human(need)} in work_dir {vm.image.work_dir} (the disks' allocated "
                f"bytes), {human(max(left, 0))} free there after the VMs before it: free space "
                "or migrate it in a later wave",
            ),
        )


def cutover(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    changes: list[Change],
    cloud: Destination | None = None,
) -> list[Change]:
    """An image VM's cutover changes: the conversion (of the files), then its images and the
    volumes made from them, before the server booted from them; `cloud` as image_changes."""
    assert vm.image is not None
    out: list[Change] = []
    for change in changes:
        if change.kind == "conversion":
            after = change.after
            reason = change.reason
            if after is not None and change.action is not Action.NOOP:
                after = {**after, "output": "image", "work_dir": vm.image.work_dir}
                reason = (
                    reason.replace(
                        "protect the volumes (Cinder snapshots), then convert the guest for KVM",
                        f"convert the guest in its disk files for KVM (under {vm.image.work_dir})",
                    )
                    .replace(
                        "protect the volumes (Cinder snapshots); no conversion (convert: false)",
                        "no conversion (convert: false): the files are uploaded as copied",
                    )
                    .replace(
                        "the volumes are synced again (final delta): protect and convert again",
                        "the files are synced again (final delta): convert them again",
                    )
                    .replace(
                        "the volumes changed since their conversion (reverted or synced)",
                        "the files changed since their conversion (synced)",
                    )
                )
            out.append(replace(change, after=after, reason=reason))
            reconvert = change.action in (Action.CREATE, Action.REPLACE)
            out += image_changes(vm, vm.image, records, reconvert, cloud)
        elif change.kind == "server" and change.action is not Action.NOOP and change.after:
            after = server_after(vm, vm.image, change.after)
            reason = change.reason
            if after["boot"] == "image":
                boot = Address("vm", vm.name, "image", after["image"])
                data = "data volumes attached" if after["volumes"] else "no data volumes"
                reason = reason.replace("from the volumes", f"from image {boot}, {data}")
            out.append(replace(change, after=after, reason=reason))
        else:
            out.append(change)
    if not any(c.kind == "conversion" for c in changes):  # booted: recorded images stay
        out += image_changes(vm, vm.image, records, False, cloud)
    return out


def lost_images(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    cloud: Destination,
    changes: list[Change],
) -> tuple[Concern, ...]:
    """An error concern per recorded image of `vm` gone from Glance (deleted outside ferry) that
    `changes` (the VM's) upload again from its converted file (gone_image) while that file is gone
    from work_dir too and no copy in this plan writes it: nothing to upload from, the apply would
    fail. Nothing when the work_dir was not read (`cloud.work_dir_files` None)."""
    if vm.image is None or cloud.work_dir_files is None:
        return ()
    planned = {c.address: c for c in changes}
    out = []
    for volume in vm.volumes:
        address = str(Address("vm", vm.name, "image", volume.disk_key))
        record, upload = records.get(address), planned.get(address)
        copy = planned.get(str(Address("vm", vm.name, "disk", volume.disk_key)))
        path = disk_path(vm.image, vm, volume.disk_key, records)
        if (
            record is None
            or record.status is not Status.READY
            or upload is None
            or upload.action is not Action.CREATE
            or (copy is not None and copy.action in WRITES)
            or str(PurePath(path)) in cloud.work_dir_files
        ):
            continue
        found = (cloud.images or {}).get(str(record.attributes.get("image_id") or ""))
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "image-gone",
                f"recorded image {record.attributes.get('image_id')} ({address}) {lost(found)} "
                f"and its converted file {path} is gone too: nothing to upload it again from; "
                "restore the file, or take the VM out of the spec (a cut-over VM is then "
                "forgotten; its server stays)",
            )
        )
    return tuple(out)


def lost_volumes(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    cloud: Destination,
    server: ObservedServer | None,
) -> tuple[Concern, ...]:
    """An error concern per volume made from `vm`'s images (recorded, ready) that is gone from
    Cinder (deleted outside ferry: `cloud.volume_ids` does not list it) while `server`, the
    cloud's server for the VM, still exists: the server has lost that disk, and nothing ferry
    plans can give it back (Nova swaps a boot volume only by a new server). The concern says
    how to boot again from the images: delete the server and apply (`_remade` then makes the
    volume again from its image and the server's drift boots it). Nothing without a server:
    that is `_remade`'s plan."""
    if vm.image is None or server is None:
        return ()
    out = []
    for n, volume in enumerate(vm.volumes):
        address = str(Address("vm", vm.name, "volume", volume.disk_key))
        gone = _volume_gone(records.get(address), cloud)
        if not gone or (n == 0 and vm.image.boot == "image"):
            continue
        image = Address("vm", vm.name, "image", volume.disk_key)
        disk = "its boot disk" if n == 0 else f"its disk {volume.disk_key}"
        out.append(
            Concern(
                ConcernLevel.ERROR,
                "volume-gone",
                f"recorded volume {gone} ({address}, made from {image}) is gone from Cinder "
                f"(deleted outside ferry) while server {server.id} still exists: the server has "
                f"lost {disk}, and ferry does not swap a server's volumes. To boot it again "
                f"from the images: delete the server (openstack server delete {server.id}) and "
                f"apply again (the volume is made again from {image}: the guest as converted at "
                "the cutover, without what the server wrote since); or take the VM out of the "
                "spec to leave it as it is",
            )
        )
    return tuple(out)


def served_boot_image(
    vm: DesiredVM,
    records: Mapping[str, ResourceRecord],
    cloud: Destination,
    server: ObservedServer | None,
) -> tuple[Concern, ...]:
    """A warning when the image a `boot: image` server boots from (recorded, ready) is gone
    from Glance (deleted outside ferry) while `server` still exists: Nova runs the server on
    from its copy on the hypervisor, but needs the image to rebuild it or to evacuate it from
    a failed host. ferry does not upload it again (`_upload`: a new image would get a new id
    the server does not use), so the plan says what the loss means and where the converted
    file is, instead of a re-upload that would look like a repair."""
    if vm.image is None or vm.image.boot != "image" or not vm.volumes or server is None:
        return ()
    key = vm.volumes[0].disk_key
    address = str(Address("vm", vm.name, "image", key))
    record = records.get(address)
    if not image_lost(record, cloud.images):
        return ()
    assert record is not None and cloud.images is not None
    image_id = str(record.attributes.get("image_id"))
    return (
        Concern(
            ConcernLevel.WARNING,
            "boot-image-gone",
            f"image {image_id} ({address}), which server {server.id} boots from (boot: "
            f"image), {lost(cloud.images.get(image_id))}: the server runs on from its copy on "
            "the hypervisor's local disk, but Nova needs the image to rebuild it or to "
            "evacuate it from a failed host. ferry does not upload it again: a new upload gets "
            "a new id, which the server would not use (Nova changes a server's image only by a "
            "rebuild, which replaces its disk with the cutover's). To keep an image for a "
            f"rebuild, upload the converted file {disk_path(vm.image, vm, key, records)} yourself",
        ),
    )
