"""Cinder volumes on the conversion host: wait for a status, attach/detach through nova, and find
the attached volume's device.

Waits re-fetch the volume each time (engine.providers.openstack.waits).
"""

from __future__ import annotations

from typing import Any

from openstack import exceptions as os_exc

from engine.errors import OpenStackError
from engine.providers.openstack.waits import wait_for

ATTACHMENT_MICROVERSION = "3.27"  # attachments API with connection_info


VOLUME_FAILED = ("error", "error_attaching", "error_detaching", "error_extending")


def wait_volume(conn: Any, volume_id: str, status: str, timeout: float = 300.0) -> Any:
    """Re-fetch the volume until it has `status`; an error status fails at once."""
    return wait_for(
        lambda: conn.block_storage.get_volume(volume_id),
        f"volume {volume_id}",
        lambda volume: volume.status == status,
        lambda volume: (
            f"volume {volume_id} went to {volume.status} (waiting for {status})"
            if volume.status in VOLUME_FAILED
            else None
        ),
        timeout=timeout,
        goal=status,
    )


def attach(conn: Any, server_id: str, volume_id: str) -> None:
    """Attach through nova (which creates the cinder attachment) and wait for in-use; a volume
    already attached to that server (left so by a killed apply) is used as it is."""
    volume = conn.block_storage.get_volume(volume_id)
    if any(a.get("server_id") == server_id for a in volume.attachments or []):
        wait_volume(conn, volume_id, "in-use")
        return
    try:
        conn.compute.create_volume_attachment(server_id, volume=volume_id)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"attaching volume {volume_id} to {server_id}: {exc}") from exc
    wait_volume(conn, volume_id, "in-use")


def detach(conn: Any, server_id: str, volume_id: str) -> None:
    try:
        conn.compute.delete_volume_attachment(server_id, volume_id)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"detaching volume {volume_id} from {server_id}: {exc}") from exc
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
    att_id = attachment_id(conn, volume_id, server_id)
    try:
        response = conn.block_storage.get(
            f"/attachments/{att_id}", microversion=ATTACHMENT_MICROVERSION
        )
        response.raise_for_status()
    except (os_exc.SDKException, OSError) as exc:
        raise OpenStackError(f"reading attachment {att_id}: {exc}") from exc
    info = response.json()["attachment"].get("connection_info") or {}
    return dict(info)


def create_volume(
    conn: Any, name: str, size_gib: int, volume_type: str | None, metadata: dict[str, str]
) -> Any:
    """A new volume carrying ferry's metadata, once available."""
    try:
        volume = conn.block_storage.create_volume(
            name=name, size=size_gib, volume_type=volume_type, metadata=metadata
        )
    except os_exc.SDKException as exc:
        raise OpenStackError(f"creating volume {name}: {exc}") from exc
    return wait_volume(conn, volume.id, "available")


def set_metadata(conn: Any, volume_id: str, metadata: dict[str, str]) -> None:
    try:
        conn.block_storage.set_volume_metadata(volume_id, **metadata)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"setting metadata of volume {volume_id}: {exc}") from exc


def exists(conn: Any, volume_id: str) -> bool:
    try:
        conn.block_storage.get_volume(volume_id)
    except os_exc.NotFoundException:
        return False
    except os_exc.SDKException as exc:
        raise OpenStackError(f"reading volume {volume_id}: {exc}") from exc
    return True
