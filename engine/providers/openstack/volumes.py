"""Cinder volumes on the conversion host: wait for a status, attach/detach through nova, and find
the attached volume's device.

Waits re-fetch the volume each time (engine.providers.openstack.waits).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Collection
from types import SimpleNamespace
from typing import Any, NamedTuple

from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.model.state import STAMP_KEY
from engine.providers.openstack.retry import answer, transient
from engine.providers.openstack.waits import wait_for

ATTACHMENT_MICROVERSION = "3.27"  # attachments API with connection_info


VOLUME_FAILED = ("error", "error_attaching", "error_detaching", "error_extending")
ATTACHED = "attached"  # an attachment's status once complete
# A volume `reserved` for this long while an attach is awaited was left so by a failed attach
# (nova's reserve made the Cinder attachment; its update and complete never came, e.g. cinder-api
# was down): it does not move by itself. nova moves a healthy one on within seconds.
RESERVED_GRACE = 60.0
# statuses only an attachment moves on: stuck without one (an error status is replaced instead)
STUCK_STATUSES = ("reserved", "attaching", "detaching")
SETTLING = ("attaching", "detaching")  # Cinder's transitions under way: they end by themselves


def _failed(volume_id: str, status: str) -> Any:
    """A wait's failure check: an error status fails at once, and so does `reserved` when
    `available` is awaited (only a deleted attachment frees it) or when an attach is awaited
    and it stays reserved past RESERVED_GRACE seconds."""
    since: list[float] = []

    def failure(volume: Any) -> str | None:
        if volume.status in VOLUME_FAILED:
            return f"volume {volume_id} went to {volume.status} (waiting for {status})"
        if volume.status != "reserved":
            since.clear()
            return None
        since.append(since[0] if since else time.monotonic())
        if status == "in-use" and time.monotonic() - since[0] < RESERVED_GRACE:
            return None
        return (
            f"volume {volume_id} is reserved (waiting for {status}): a Cinder attachment was "
            "created and never completed (a failed attach, e.g. while cinder-api was down); "
            "it does not change by itself: the next plan deletes ferry's stale attachment"
        )

    return failure


def wait_volume(conn: Any, volume_id: str, status: str, timeout: float = 300.0) -> Any:
    """Re-fetch the volume until it has `status`; an error status fails at once, so does a
    `reserved` that will not move by itself (_failed); still `creating` at the timeout says
    what that means."""
    return wait_for(
        lambda: conn.block_storage.get_volume(volume_id),
        f"volume {volume_id}",
        lambda volume: volume.status == status,
        _failed(volume_id, status),
        stuck=lambda volume: (
            " — cinder may have lost the request (a RabbitMQ restart?): an operator can reset "
            "its state to error, and the next apply replaces it"
            if volume.status == "creating"
            else ""
        ),
        timeout=timeout,
        goal=status,
    )


def attach(conn: Any, server_id: str, volume_id: str) -> None:
    """Attach through nova (which creates the cinder attachment) and wait for in-use; a volume
    already attached to that server (left so by a killed apply) is used as it is. Repeated while
    nova or cinder is briefly down; each attempt checks the attachment first. A volume held by a
    half-made attachment or another server fails at once (check_attachments), one left
    `reserved` by this attach after RESERVED_GRACE seconds (wait_volume), never after 300 s."""

    tried: list[bool] = []  # a retry may find its own request's attachment under way

    def once() -> None:
        volume = conn.block_storage.get_volume(volume_id)
        if not any(a.get("server_id") == server_id for a in volume.attachments or []):
            if tried and any(
                str(a.instance or "") == server_id for a in attachments(conn, volume_id)
            ):
                return  # the earlier attempt's attach is under way: waited for below
            check_attachments(conn, volume_id, (server_id,))
            tried.append(True)
            conn.compute.create_volume_attachment(server_id, volume=volume_id)

    transient(once, f"attaching volume {volume_id} to {server_id}")
    wait_volume(conn, volume_id, "in-use")


def attachments(conn: Any, volume_id: str) -> list[Any]:
    """The volume's Cinder attachments, whatever their status (the attachments API: a volume's
    own `attachments` field lists only completed ones). Filtered here: a cloud's
    resource_filters may refuse `volume_id` as a query filter (the lab's cinder does, 400).
    None listed ([]) where the cloud forbids the list or has no attachments API."""

    def listed() -> list[Any]:
        try:
            return list(conn.block_storage.attachments())
        except os_exc.HttpException as exc:
            forbidden = isinstance(exc, os_exc.ForbiddenException)
            if forbidden or exc.status_code in (403, 404, 406):  # or no attachments API (< 3.27)
                return []  # not checked, as the plan does not check what it cannot read
            raise

    found = transient(listed, f"reading the attachments of volume {volume_id}")
    return [a for a in found if str(a.volume_id) == volume_id]


def check_attachments(conn: Any, volume_id: str, servers: Collection[str]) -> None:
    """The volume can be attached to one of `servers` (ids) and written: none of its attachments
    is half made (not `attached`), none is to another server, and its status is not one only an
    attachment moves (STUCK_STATUSES; a volume in an error status is replaced by its sync).
    Raises OpenStackError naming what holds it; nothing waits: none of these changes by itself."""
    for att in attachments(conn, volume_id):
        server = str(att.instance or "")
        if att.status != ATTACHED:
            raise OpenStackError(
                f"volume {volume_id} has attachment {att.id} '{att.status}' (server "
                f"{server or 'none'}) that was never completed: it does not change by itself; "
                "the next plan deletes it when it is ferry's"
            )
        if server not in servers:
            raise OpenStackError(
                f"volume {volume_id} is attached to server {server or 'none'} (attachment "
                f"{att.id}), not to ferry's conversion host: detach it first"
            )
    status = transient(
        lambda: conn.block_storage.get_volume(volume_id).status, f"reading volume {volume_id}"
    )
    if status in SETTLING:
        raise OpenStackError(
            f"volume {volume_id} is '{status}': Cinder is still at it (e.g. an interrupted "
            "apply's host letting it go); apply again in a minute"
        )
    if status in STUCK_STATUSES:
        raise OpenStackError(
            f"volume {volume_id} is '{status}' with no attachment to explain it: it does not "
            f"change by itself; reset it (openstack volume set --state available {volume_id})"
        )


def delete_attachments(conn: Any, volume_id: str, ids: Collection[str]) -> list[str]:
    """Delete these Cinder attachments of the volume that are still there and not completed
    (a stale `reserved` one a failed attach left): the volume goes back to `available`, or
    stays `in-use` for a completed one. Returns the ids deleted (one already gone is not)."""
    stale = {str(a.id): a for a in attachments(conn, volume_id) if str(a.id) in ids}
    done = []
    for att_id, att in stale.items():
        if att.status == ATTACHED:
            continue  # completed since the plan: a detach's business, never deleted here
        transient(
            functools.partial(conn.block_storage.delete_attachment, att_id),
            f"deleting attachment {att_id} of volume {volume_id}",
        )
        done.append(att_id)
    if done:
        wait_for(
            lambda: conn.block_storage.get_volume(volume_id),
            f"volume {volume_id}",
            lambda v: v.status in ("available", "in-use"),
            lambda v: None,
            timeout=60.0,
            goal="available",
        )
    return done


class Seen(NamedTuple):
    """A volume as one read of it found it: the IDs of the servers it is attached to (none:
    []), Cinder's updated_at (its ISO 8601 text; None when Cinder gives none) and its metadata
    ({} when none)."""

    servers: list[str]
    updated_at: str | None
    metadata: dict[str, str] = {}  # noqa: RUF012 (a NamedTuple's default: never mutated)


def seen(conn: Any, volume_id: str) -> Seen:
    """`volume_id`'s attachments and updated_at (`updated_at`'s meaning) from one GET of the
    volume: what a copy checks as it is sent, on its host before the attach, and after it
    stopped, each once per copy. Raises OpenStackError when it cannot be read (a volume gone
    included)."""
    volume = transient(lambda: conn.block_storage.get_volume(volume_id), f"reading {volume_id}")
    return _seen(volume)


def seen_if_found(conn: Any, volume_id: str) -> Seen | None:
    """`seen`, or None when the volume is gone. Raises OpenStackError (not readable)."""

    def read() -> Any:
        try:
            return conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return None

    volume = transient(read, f"reading {volume_id}")
    return None if volume is None else _seen(volume)


def _seen(volume: Any) -> Seen:
    servers = [str(a["server_id"]) for a in volume.attachments or [] if a.get("server_id")]
    at = getattr(volume, "updated_at", None)
    metadata = {str(k): str(v) for k, v in (getattr(volume, "metadata", None) or {}).items()}
    return Seen(servers, str(at) if at else None, metadata)


def attached_servers(conn: Any, volume_id: str) -> list[str]:
    """Ids of the servers `volume_id` is attached to (none: []). Raises OpenStackError."""
    return seen(conn, volume_id).servers


def attached_count(conn: Any, server_id: str) -> int:
    """How many volumes are attached to server `server_id` now (Nova's volume attachments).
    Raises OpenStackError when they cannot be read."""
    return transient(
        lambda: sum(1 for _ in conn.compute.volume_attachments(server_id)),
        f"reading the volumes attached to server {server_id}",
    )


def detach(conn: Any, server_id: str, volume_id: str) -> None:
    """Detach through nova and wait for available; a detach already done counts as done."""

    def once() -> None:
        with contextlib.suppress(os_exc.NotFoundException):
            conn.compute.delete_volume_attachment(server_id, volume_id)

    transient(once, f"detaching volume {volume_id} from {server_id}")
    wait_volume(conn, volume_id, "available")


def attachment_id(conn: Any, volume_id: str, server_id: str) -> str:
    """The cinder attachment of `volume_id` to `server_id`."""
    volume = conn.block_storage.get_volume(volume_id)
    for att in volume.attachments or []:
        if att.get("server_id") == server_id:
            return str(att["attachment_id"])
    raise OpenStackError(f"volume {volume_id} is not attached to server {server_id}")


def connection_info(conn: Any, volume_id: str, server_id: str) -> dict[str, Any]:
    """The driver's connection info of an attachment (its `data` keys come flattened)."""
    att_id = transient(
        lambda: attachment_id(conn, volume_id, server_id), f"reading volume {volume_id}"
    )

    def read() -> Any:
        response = conn.block_storage.get(
            f"/attachments/{att_id}", microversion=ATTACHMENT_MICROVERSION
        )
        os_exc.raise_from_response(response)
        return response.json()

    info = transient(read, f"reading attachment {att_id}")["attachment"].get("connection_info")
    return dict(info or {})


def create_volume(
    conn: Any,
    name: str,
    size_gib: int,
    volume_type: str | None,
    metadata: dict[str, str],
    *,
    wait: bool = True,
) -> Any:
    """A new volume carrying ferry's metadata (once available, unless `wait` is False)."""
    try:
        volume = conn.block_storage.create_volume(
            name=name, size=size_gib, volume_type=volume_type, metadata=metadata
        )
    except os_exc.SDKException as exc:
        raise OpenStackError(f"creating volume {name}: {answer(exc)}") from exc
    return wait_volume(conn, volume.id, "available") if wait else volume


def settle(conn: Any, volume_id: str, timeout: float = 180.0) -> str:
    """Wait while Cinder attaches or detaches the volume (the host of an interrupted apply
    letting it go as the user re-runs: break-it 14c F1), bounded; the status it waited through
    ("" when it was not settling; at once then). Raises OpenStackError when it is still
    attaching or detaching after `timeout`, or cannot be read."""
    first = transient(
        lambda: getattr(conn.block_storage.get_volume(volume_id), "status", None),
        f"reading volume {volume_id}",
    )
    if first not in SETTLING:
        return ""
    wait_for(
        lambda: conn.block_storage.get_volume(volume_id),
        f"volume {volume_id}",
        lambda volume: volume.status not in SETTLING,
        lambda _: None,
        timeout=timeout,
        goal="Cinder to finish attaching or detaching it",
        stuck=lambda volume: (
            f": it did not settle by itself; see what holds it (openstack volume show "
            f"{volume_id}), then apply again"
        ),
    )
    return str(first)


def usable(conn: Any, volume_id: str) -> bool:
    """False for a volume in an error status (cinder failed it: replace it)."""
    status = transient(
        lambda: conn.block_storage.get_volume(volume_id).status, f"reading volume {volume_id}"
    )
    return status not in VOLUME_FAILED


def set_metadata(conn: Any, volume_id: str, metadata: dict[str, str]) -> None:
    """Set `metadata`'s keys on the volume, merged with the others it has (Cinder's POST: keys
    not named are kept; "" empties one). Does not move its updated_at. Raises OpenStackError."""
    transient(
        lambda: conn.block_storage.set_volume_metadata(volume_id, **metadata),
        f"setting metadata of volume {volume_id}",
    )


def managed_by(conn: Any, volume_id: str) -> str | None:
    """The lineage of the ferry state that manages the volume now (its `ferry_state`
    metadata; "" when none is set), or None when the volume is gone. Raises OpenStackError."""

    def read() -> str | None:
        try:
            volume = conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return None
        return str((volume.metadata or {}).get("ferry_state") or "")

    return transient(read, f"reading volume {volume_id}")


def project_volumes(conn: Any) -> list[Any]:
    """Every volume of the project, with its details (type, size, status, metadata), in one
    listing (paginated by Cinder, 1000 a page by default) instead of a read per volume. Raises
    OpenStackError."""
    return transient(lambda: list(conn.block_storage.volumes(details=True)), "listing volumes")


def lineages(conn: Any) -> dict[str, str]:
    """Volume id → the lineage of the ferry state that manages it (its `ferry_state`
    metadata; "" when none is set), for every volume of the project. Raises OpenStackError."""
    return {
        str(v.id): str((v.metadata or {}).get("ferry_state") or "") for v in project_volumes(conn)
    }


def of_other_states(conn: Any, vm_uuid: str, disk_key: int, lineage: str) -> dict[str, str]:
    """Volume id → lineage of the volumes of the source disk (`ferry_vm`, `ferry_disk`
    metadata) that another ferry state manages (a `ferry_state` set, not `lineage`); a
    volume being deleted is none. Raises OpenStackError."""
    found = {}
    for volume in project_volumes(conn):
        meta = volume.metadata or {}
        owner = str(meta.get("ferry_state") or "")
        if (
            meta.get("ferry_vm") == vm_uuid
            and meta.get("ferry_disk") == str(disk_key)
            and owner not in ("", lineage)
            and volume.status != "deleting"
        ):
            found[str(volume.id)] = owner
    return found


def snapshots_of(conn: Any, volume_id: str) -> list[Any]:
    """The volume's Cinder snapshots (detailed: status, metadata, created_at), any status;
    listed and filtered here, as protection snapshots are found, not by a query filter."""
    return [s for s in conn.block_storage.snapshots(details=True) if str(s.volume_id) == volume_id]


def wait_snapshots_gone(conn: Any, volume_id: str, timeout: float = 300.0) -> None:
    """Before the volume's delete: Cinder refuses to delete a volume with snapshots (400
    "must not ... have snapshots"), and deletes snapshots asynchronously (a deleted one stays
    `deleting` a while: break-it 12h F1, the destroy's volume deletes failed right after its
    protection snapshots went). Waits until none of the volume's snapshots is left; a
    protection snapshot of ferry's still `available` (by its `ferry_protects` metadata: left
    by an interrupted attempt) is deleted too. Snapshots are listed and filtered here (as
    protection snapshots are found), not by a query filter. Raises OpenStackError at once
    naming a snapshot not ferry's (Cinder would refuse the delete: someone else's backup), one
    in error_deleting, and after `timeout` seconds one still deleting."""

    def left() -> SimpleNamespace:  # wait_for's errors read a `status`
        found = snapshots_of(conn, volume_id)
        for snapshot in found:
            ours = (snapshot.metadata or {}).get("ferry_protects") == volume_id
            if ours and snapshot.status in ("available", "error"):
                conn.block_storage.delete_snapshot(snapshot.id, ignore_missing=True)
        return SimpleNamespace(status="being deleted", found=found)

    def blocked(left: SimpleNamespace) -> str | None:
        others = [s for s in left.found if s.status != "deleting"]
        theirs = [s for s in others if (s.metadata or {}).get("ferry_protects") != volume_id]
        if theirs:
            ids = ", ".join(f"{s.id} ({s.name or 'no name'}, {s.status})" for s in theirs)
            return (
                f"volume {volume_id} has snapshot(s) taken outside ferry: {ids}; Cinder deletes "
                "no volume with snapshots: delete them (openstack volume snapshot delete) "
                "and apply again"
            )
        failed = [str(s.id) for s in others if s.status == "error_deleting"]
        if failed:
            return f"volume {volume_id}: Cinder failed to delete snapshot(s) {', '.join(failed)}"
        return None

    wait_for(
        left,
        f"volume {volume_id}'s snapshot(s)",
        lambda left: not left.found,
        blocked,
        timeout=timeout,
        stuck=lambda left: ": " + ", ".join(f"{s.id} {s.status}" for s in left.found),
    )


def type_names(conn: Any) -> set[str]:
    """The names and ids of the project's volume types (a volume create names either)."""
    return transient(
        lambda: {n for t in conn.block_storage.types() for n in (t.name, t.id) if n},
        "volume types",
    )


def exists(conn: Any, volume_id: str) -> bool:
    def found() -> bool:
        try:
            conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return False
        return True

    return transient(found, f"reading volume {volume_id}")


def stamp(conn: Any, volume_id: str) -> None:
    """After a host step's own detach: the volume's Cinder updated_at now stamped on it
    (model.state.STAMP_KEY), so whoever plans next knows the value right after ferry's last
    write even when no record of it was written. Best effort: a stamp that cannot be read or
    written stays cleared (unknown, as after a kill -9), never failing the step."""
    with contextlib.suppress(Exception):
        now = updated_at(conn, volume_id)
        if now:
            set_metadata(conn, volume_id, {STAMP_KEY: now})


def unstamp(conn: Any, volume_id: str) -> None:
    """Right before a host step's own attach: the volume's stamp cleared (""), so a step cut
    off before its detach leaves none that would vouch for what it wrote. Raises
    OpenStackError (nothing attached or written)."""
    set_metadata(conn, volume_id, {STAMP_KEY: ""})


def updated_at(conn: Any, volume_id: str) -> str | None:
    """Cinder's `updated_at` of the volume (its ISO 8601 text, as Cinder gives it), None when
    the volume is gone or Cinder gives none. Cinder moves it with every change of the volume's
    row: each status change of an attach or detach (a server booted from it, a host writing
    it), an extend, a revert, a retype, a rename. ferry records it after each of its own writes
    (model.state.UPDATED_AT): a later value means something else may have written the volume.
    Raises OpenStackError when it cannot be read."""

    def read() -> str | None:
        try:
            volume = conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return None
        return str(volume.updated_at) if getattr(volume, "updated_at", None) else None

    return transient(read, f"reading volume {volume_id}")


def type_and_size(conn: Any, volume_id: str) -> tuple[str | None, int] | None:
    """The volume's type name (None: Cinder names none) and size (GiB); None when it is gone.
    Raises OpenStackError when it cannot be read."""

    def read() -> tuple[str | None, int] | None:
        try:
            volume = conn.block_storage.get_volume(volume_id)
        except os_exc.NotFoundException:
            return None
        return (getattr(volume, "volume_type", None) or None), int(volume.size or 0)

    return transient(read, f"reading volume {volume_id}")


def types_and_sizes(conn: Any) -> dict[str, tuple[str | None, int]]:
    """Every volume of the project: id → (its type name, None: none; its size, GiB). Raises
    OpenStackError."""
    return {
        str(v.id): ((getattr(v, "volume_type", None) or None), int(v.size or 0))
        for v in project_volumes(conn)
    }


def encrypted(conn: Any, volume_id: str) -> bool:
    """Whether cinder made the volume encrypted (LUKS): it does not read as zeros where nothing
    was written."""
    try:
        return bool(conn.block_storage.get_volume(volume_id).is_encrypted)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"reading volume {volume_id} failed: {answer(exc)}") from exc


def extend(conn: Any, volume_id: str, size_gib: int, attached_to: str | None = None) -> bool:
    """Grow a volume to `size_gib` GiB (Cinder extend) and wait until it is available at that
    size; False (and nothing waited for) when it already is that large, whatever its status — a
    volume a killed apply left attached is reused as it is. When it must grow it is detached from
    `attached_to` first (Cinder extends only available volumes). A volume never shrinks: a
    smaller size is left alone (the planner refuses a shrunk disk). Raises OpenStackError when
    cinder refuses the extend (its answer: a quota, per_volume_gigabytes' 413
    VolumeSizeExceedsLimit), fails it (status error_extending) or a wait times out."""
    current = transient(
        lambda: conn.block_storage.get_volume(volume_id), f"reading volume {volume_id}"
    )
    if int(current.size) >= size_gib:
        return False
    if attached_to:
        detach(conn, attached_to, volume_id)
    volume = wait_volume(conn, volume_id, "available")
    try:
        conn.block_storage.extend_volume(volume, size_gib)
    except os_exc.SDKException as exc:  # a quota or per_volume_gigabytes (413): the cloud's words
        raise OpenStackError(
            f"extending volume {volume_id} to {size_gib} GiB: {answer(exc)}"
        ) from exc
    wait_for(
        lambda: conn.block_storage.get_volume(volume_id),
        f"volume {volume_id}",
        lambda v: v.status == "available" and int(v.size) >= size_gib,
        lambda v: (
            f"volume {volume_id} went to {v.status} (extending to {size_gib} GiB)"
            if v.status in VOLUME_FAILED
            else None
        ),
        timeout=300.0,
        goal=f"available at {size_gib} GiB",
    )
    return True
