"""Glance images ferry uploads (destination.output: image): found again by ferry's properties
(ferry_vm_uuid, ferry_disk_key) and the `ferry` tag, so an upload a killed apply left is reused
when whole (its sha512 equals the file's) and replaced when not — one image per disk and state,
never a duplicate. Each carries the lineage of the state that uploaded it (`ferry_state`, as
ferry's volumes do): a state reuses and deletes only its own. Volumes are made from them through
Cinder.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from threading import Event
from typing import Any, BinaryIO

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from engine.errors import ConversionError, OpenStackError, StoppedError, one_line
from engine.proc import child_env
from engine.providers.openstack.read import STATE_KEY, handed
from engine.providers.openstack.retry import answer, transient
from engine.providers.openstack.volumes import wait_volume
from engine.providers.openstack.waits import wait_for
from engine.units import human

TAG = "ferry"
CHUNK = 8 * 2**20  # bytes hashed (and streamed to Glance) at a time
IMAGE_FAILED = ("killed", "deleted", "pending_delete")


def file_sha512(path: Path, stop: Event | None = None) -> str:
    """sha512 hex digest of `path` (Glance's default os_hash_algo), read CHUNK bytes at a
    time. Raises OSError, StoppedError (`stop` set between two chunks)."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for chunk in chunks(f, stop, f"hashing {path}"):
            digest.update(chunk)
    return digest.hexdigest()


def chunks(data: BinaryIO, stop: Event | None, doing: str) -> Iterator[bytes]:
    """`data` read CHUNK bytes at a time to its end; `stop` (the apply's Ctrl-C) is checked
    before each read. Raises StoppedError naming `doing` and the bytes read, OSError."""
    done = 0
    while True:
        if stop is not None and stop.is_set():
            raise StoppedError(f"{doing} stopped after {human(done)}")
        chunk = data.read(CHUNK)
        if not chunk:
            return
        done += len(chunk)
        yield chunk


def to_qcow2(raw: Path, out: Path, stop: Event | None = None) -> None:
    """qemu-img convert the raw file `raw` to qcow2 at `out` (holes stay unallocated, so an
    upload does not send them; the same input gives the same bytes, so a restarted upload finds
    its image by sha512); `stop` set ends it within a second (its partial `out` deleted).
    Raises ConversionError, StoppedError."""
    command = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)]
    with subprocess.Popen(
        command,
        env=child_env(),
        umask=0o077,  # the guest's disk, as the raw file: 0600, not 0644 (break-it 16b F4)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        while True:
            try:
                _, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop.is_set():
                    proc.kill()
                    proc.communicate()
                    out.unlink(missing_ok=True)
                    raise StoppedError(
                        f"qemu-img convert of {raw} to qcow2 stopped (its partial {out.name} "
                        "deleted)"
                    ) from None
    if proc.returncode != 0:
        raise ConversionError(f"qemu-img convert {raw} to qcow2: {err.strip()}")


def upload_file(raw: Path, disk_format: str, stop: Event | None = None) -> tuple[Path, str]:
    """The file to upload for the disk file `raw` and its Glance disk_format: `raw` itself for
    "raw"; for "qcow2" the qemu-img copy (`raw` with suffix .qcow2, to_qcow2) when it is
    smaller than `raw`'s bytes (the disk's capacity), else `raw` itself as "raw" (the copy
    deleted): a fully allocated disk's qcow2 is its bytes plus qcow2's tables, and Cinder's
    volume-from-image check rounds the image's `size` up to GiB and refuses it above the
    volume's size whether or not Glance set `virtual_size` (cinder volume_utils
    .check_image_metadata: "Size of specified image 2GB is larger than volume size 1GB").
    A raw file is never larger than the volume made for its disk (the capacity rounded up
    to GiB), and a smaller qcow2 is not either. Raises ConversionError, StoppedError, OSError."""
    if disk_format != "qcow2":
        return raw, disk_format
    out = raw.with_suffix(".qcow2")
    to_qcow2(raw, out, stop)
    if out.stat().st_size < raw.stat().st_size:
        return out, "qcow2"
    out.unlink()
    return raw, "raw"


def find_images(conn: Any, vm_uuid: str, disk_key: int | None = None) -> list[Any]:
    """ferry's images of a VM (of one disk when `disk_key` is given), oldest first."""

    def listed() -> list[Any]:
        return list(conn.image.images(tag=[TAG]))

    found = [
        i
        for i in transient(listed, f"listing images of VM {vm_uuid}")
        if _prop(i, "ferry_vm_uuid") == vm_uuid
        and (disk_key is None or _prop(i, "ferry_disk_key") == str(disk_key))
    ]
    return sorted(found, key=lambda i: str(i.created_at or ""))


def _prop(image: Any, key: str) -> str | None:
    properties = getattr(image, "properties", None) or {}
    value = properties.get(key, getattr(image, key, None))
    return None if value is None else str(value)


def upload(
    conn: Any,
    path: Path,
    name: str,
    disk_format: str,
    properties: Mapping[str, str],
    *,
    lineage: str,
    timeout: float = 3600.0,
    stop: Event | None = None,
    replaces: Collection[str] = (),
) -> tuple[str, bool]:
    """The disk file `path` as an active Glance image carrying `properties` (which must hold
    ferry_vm_uuid and ferry_disk_key) and `ferry_state` = `lineage` (the uploading state's,
    as every volume ferry makes carries it): (image id, uploaded). Only this state's images are
    touched (`owned`): an active one of that disk with the file's sha512 is reused (uploaded
    False); a partial one (not active: a killed upload's) and those this state's record named
    (`replaces`: an older conversion's upload) are deleted once the new one is active. Another
    ferry state's image of the same VM (a rehearsal's, which its records and maybe a boot:
    image server use) is never reused, since this state's --destroy would delete it, nor
    deleted (break-it 16 L7). `stop` (the apply's Ctrl-C) ends the hash or the upload at its
    next chunk (CHUNK bytes): the partial image is deleted then (or, when that fails, by the
    next upload of the disk).

    Raises OpenStackError, OSError (the file), StoppedError."""
    vm_uuid, key = properties["ferry_vm_uuid"], int(properties["ferry_disk_key"])
    want = file_sha512(path, stop)
    found = find_images(conn, vm_uuid, key)
    mine = [i for i in found if _prop(i, STATE_KEY) == lineage]
    others = {str(i.id) for i in found if not owned(i, lineage)}
    stale = [str(i.id) for i in mine if i.status != "active"]
    stale += [i for i in replaces if i not in others and i not in stale]
    same = [i for i in mine if i.status == "active" and i.hash_value == want]
    if same:
        delete(conn, [i for i in stale if i != str(same[0].id)])
        return str(same[0].id), False
    body = {
        "name": name,
        "disk_format": disk_format,
        "container_format": "bare",
        "tags": [TAG],
        **{k: str(v) for k, v in properties.items()},
        STATE_KEY: lineage,
    }
    try:
        image_id = str(conn.image.post("/images", json=body).json()["id"])
        _send(conn, image_id, path, stop)
    except (os_exc.SDKException, ksa_exc.ClientException) as exc:
        raise OpenStackError(f"uploading {path} to Glance as {name}: {answer(exc)}") from exc
    active = wait_for(
        lambda: conn.image.get_image(image_id),
        f"image {image_id}",
        lambda i: i.status == "active",
        lambda i: f"image {image_id} is {i.status}" if i.status in IMAGE_FAILED else None,
        timeout=timeout,
        goal="active",
    )
    if active.hash_value and active.hash_value != want:
        delete(conn, [image_id])
        raise OpenStackError(
            f"image {image_id}: Glance holds sha512 {active.hash_value}, the file {want}"
        )
    delete(conn, stale)
    return image_id, True


def owned(image: Any, lineage: str) -> bool:
    """Whether ferry state `lineage` may delete or write `image`: its `ferry_state` property
    names that state, or none (an image uploaded before ferry recorded it on images)."""
    return _prop(image, STATE_KEY) in (None, "", lineage)


def managed_by(conn: Any, image_id: str) -> str | None:
    """The lineage of the ferry state that manages image `image_id` now (its `ferry_state`
    property; "" when none is set), or None when the image is gone. Raises OpenStackError."""

    def read() -> str | None:
        try:
            image = conn.image.get_image(image_id)
        except os_exc.NotFoundException:
            return None
        return _prop(image, STATE_KEY) or ""

    return transient(read, f"reading image {image_id}")


def _send(conn: Any, image_id: str, path: Path, stop: Event | None) -> None:
    """The file's bytes streamed into image `image_id` (Glance's image data PUT, as
    openstacksdk's Image.upload sends a file-like object; Glance computes its checksums as it
    reads). A stop ends it at the next chunk and deletes the partial image. Raises
    StoppedError, OSError, and the SDK's errors."""
    with path.open("rb") as data:
        try:
            conn.image.put(
                f"/images/{image_id}/file",
                data=chunks(data, stop, f"upload of {path} to image {image_id}"),
                headers={"Content-Type": "application/octet-stream"},
            )
        except StoppedError as exc:
            raise StoppedError(f"{exc}: {_dropped(conn, image_id)}") from exc


def _dropped(conn: Any, image_id: str) -> str:
    """Delete a partial upload's image; what became of it, for the stop's line."""
    try:
        delete(conn, [image_id])
    except OpenStackError as exc:
        return (
            f"the partial image was not deleted ({one_line(str(exc))}): the next upload of "
            "this disk deletes it"
        )
    return "the partial image deleted"


PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def set_properties(
    conn: Any,
    image_id: str,
    properties: Mapping[str, str],
    remove: Iterable[str] = (),
    *,
    lineage: str | None = None,
) -> list[str]:
    """Give image `image_id` these properties ({name: value}) and remove those named in `remove`,
    in one JSON patch built from its current properties (Glance's add for a new key, replace for
    a changed one, remove for a present one); the keys changed (none: no request). With
    `lineage` (the writing state's), an image whose `ferry_state` names another ferry state
    (taken over since the plan was made) is left as it is. Raises OpenStackError."""
    try:
        current = conn.image.get(f"/images/{image_id}").json()
        other = str(current.get(STATE_KEY) or "")
        if lineage is not None and other and other != lineage:
            raise OpenStackError(handed_line(image_id, other, "written"))
        ops = property_ops(current, properties, remove)
        if ops:
            conn.image.patch(f"/images/{image_id}", json=ops, headers=PATCH)
    except (os_exc.SDKException, ksa_exc.ClientException) as exc:
        raise OpenStackError(f"updating the properties of image {image_id}: {answer(exc)}") from exc
    return [str(op["path"])[1:] for op in ops]


def handed_line(image_id: str, lineage: str, doing: str) -> str:
    """The one line of an image step refused because another ferry state (`lineage`) manages
    the image now (`doing`: "deleted" or "written")."""
    never = "plan again (a new plan never deletes or writes it)"
    return f"{handed('image', image_id, lineage, doing)}; {never}"


def property_ops(
    current: Mapping[str, Any], properties: Mapping[str, str], remove: Iterable[str]
) -> list[dict[str, str]]:
    """The JSON patch (RFC 6902, Glance's image v2.1 media type) that takes an image whose
    fields are `current` to `properties`, without the keys in `remove`."""
    ops = []
    for key, value in properties.items():
        if key not in current:
            ops.append({"op": "add", "path": f"/{key}", "value": str(value)})
        elif str(current[key]) != str(value):
            ops.append({"op": "replace", "path": f"/{key}", "value": str(value)})
    ops += [
        {"op": "remove", "path": f"/{k}"} for k in remove if k in current and k not in properties
    ]
    return ops


def delete(conn: Any, image_ids: list[str]) -> None:
    """Delete these images (gone already: fine). Raises OpenStackError."""
    for image_id in image_ids:

        def gone(i: str = image_id) -> None:
            conn.image.delete_image(i, ignore_missing=True)

        transient(gone, f"deleting image {image_id}")


# a volume made from one of ferry's images names the image it was made from (its own metadata:
# Cinder sets the volume's image metadata only once the image is copied into it)
IMAGE_KEY = "ferry_image_id"
GOING = ("deleting", "error_deleting")  # a volume on its way out: never found as made


def volumes_made(conn: Any, vm_uuid: str, disk_key: int, lineage: str) -> list[Any]:
    """The volumes ferry state `lineage` made from its images for one disk of a VM (metadata
    ferry_image_vm, ferry_image_disk and ferry_state), whatever their status but those being
    deleted, oldest first. Raises OpenStackError."""

    def listed() -> list[Any]:
        return list(conn.block_storage.volumes(details=True))

    found = [
        v
        for v in transient(listed, f"listing the volumes made for VM {vm_uuid}")
        if (v.metadata or {}).get("ferry_image_vm") == vm_uuid
        and str((v.metadata or {}).get("ferry_image_disk")) == str(disk_key)
        and (v.metadata or {}).get(STATE_KEY) == lineage
        and v.status not in GOING
    ]
    return sorted(found, key=lambda v: str(getattr(v, "created_at", "") or ""))


def made_from(volume: Any) -> str | None:
    """The id of the Glance image a volume ferry made was made from: its ferry_image_id
    metadata (set at its creation), else Cinder's image metadata (set once the copy is done:
    a volume an older ferry made); None when neither says."""
    meta = getattr(volume, "metadata", None) or {}
    copied = getattr(volume, "volume_image_metadata", None) or {}
    found = meta.get(IMAGE_KEY) or copied.get("image_id")
    return str(found) if found else None


def volume_from_image(
    conn: Any,
    image_id: str,
    *,
    name: str,
    size_gib: int,
    volume_type: str | None,
    metadata: Mapping[str, str],
    created: Callable[[str], None] = lambda _: None,
    timeout: float = 3600.0,
) -> str:
    """A new volume holding the image, available, its metadata `metadata` and IMAGE_KEY (the
    image's id: what a killed apply's next run finds it by, `volumes_made`); its id (given to
    `created` as soon as Cinder names it, before the copy). Raises OpenStackError."""
    try:
        volume = conn.block_storage.create_volume(
            name=name,
            size=size_gib,
            volume_type=volume_type,
            image_id=image_id,
            metadata={**metadata, IMAGE_KEY: image_id},
        )
    except os_exc.SDKException as exc:
        raise OpenStackError(
            f"creating volume {name} from image {image_id}: {answer(exc)}"
        ) from exc
    created(str(volume.id))
    wait_volume(conn, str(volume.id), "available", timeout=timeout)
    return str(volume.id)
