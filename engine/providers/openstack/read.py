"""Reading the destination cloud: flavors, networks, volume types, security groups, and the
volumes, ports and servers ferry (or os-migrate's vmware-migration-kit) left, found by their
metadata and tags, never by name alone. Fetch does the I/O; parse_* are pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import openstack
from openstack import exceptions as os_exc

from engine.errors import OpenStackError, UserError
from engine.model.observed import (
    Destination,
    Flavor,
    ObservedPort,
    ObservedServer,
    ObservedVolume,
    Quota,
)

TAG = "ferry"


# A service that is down (connection refused, 503) is retried with backoff 0.5 s doubling to
# 60 s: 8 retries ride out about two minutes of outage; keystoneauth logs each retry.
CONNECT_RETRIES = 8


def connect(cloud: str, region: str | None = None, project: str | None = None) -> Any:
    """A connection to `cloud` from clouds.yaml (OS_CLIENT_CONFIG_FILE or the usual places),
    scoped to `project` when given."""
    scope: dict[str, Any] = {"project_name": project} if project else {}
    try:
        conn = openstack.connect(
            cloud=cloud,
            region_name=region,
            connect_retries=CONNECT_RETRIES,
            status_code_retries=CONNECT_RETRIES,
            **scope,
        )
        conn.authorize()
    except os_exc.ConfigException as exc:
        raise UserError(f"cloud {cloud!r} is not in clouds.yaml: {exc}") from exc
    except os_exc.SDKException as exc:
        raise OpenStackError(f"cannot log in to cloud {cloud!r}: {exc}") from exc
    return conn


def connect_destination(destination: dict[str, Any]) -> Any:
    """The spec's destination block: cloud, region, project."""
    return connect(destination["cloud"], destination.get("region"), destination.get("project"))


def fetch_quotas(conn: Any) -> dict[str, tuple[int, int]]:
    """The project's quotas with their usage, as far as the user may read them: cinder (volumes,
    gigabytes), nova (instances, cores, ram), neutron (ports). An unreadable one is left out (the
    plan then does not check it)."""
    project = conn.current_project_id
    found: dict[str, tuple[int, int]] = {}
    readers: tuple[tuple[Any, tuple[str, ...]], ...] = (
        (conn.block_storage, ("volumes", "gigabytes")),
        (conn.compute, ("instances", "cores", "ram")),
    )
    for service, keys in readers:
        try:
            quota = service.get_quota_set(project, usage=True)
        except os_exc.SDKException:
            continue
        usage = quota.usage or {}
        found |= {k: (int(getattr(quota, k)), int(usage.get(k, 0))) for k in keys}
    try:
        ports = conn.network.get_quota(project, details=True).ports
        found["ports"] = (int(ports["limit"]), int(ports["used"]))
    except (os_exc.SDKException, KeyError, TypeError):
        pass
    return found


def type_encrypted(conn: Any, volume_type: Any) -> bool:
    """Whether a volume type has an encryption spec (its new volumes are LUKS: they do not read
    as zeros). Reading it is admin-only by cinder's default policy: a user who may not is told
    nothing here (False), and apply checks each new volume's own `encrypted` flag instead."""
    try:
        found = conn.block_storage.get_type_encryption(volume_type)
    except os_exc.SDKException:  # forbidden, or no encryption (404 on older clouds)
        return False
    return bool(getattr(found, "provider", None) or getattr(found, "encryption_id", None))


def fetch_destination(conn: Any) -> dict[str, Any]:
    try:
        types = list(conn.block_storage.types())
        return {
            "quotas": fetch_quotas(conn),
            "flavors": list(conn.compute.flavors(details=True)),
            "networks": list(conn.network.networks()),
            "volume_types": list(types),
            "encrypted_volume_types": [t.name for t in types if type_encrypted(conn, t)],
            "security_groups": list(conn.network.security_groups()),
            "volumes": list(conn.block_storage.volumes(details=True)),
            "ports": list(conn.network.ports(tags=[TAG])),
            "servers": list(conn.compute.servers(details=True)),
        }
    except os_exc.SDKException as exc:
        raise OpenStackError(f"reading the destination cloud failed: {exc}") from exc


def parse_volume(volume: Any) -> ObservedVolume | None:
    """A volume with ferry's metadata (or os-migrate's), else None."""
    meta = dict(volume.metadata or {})
    osm_key = re.search(r"-(\d+)$", volume.name or "")
    if meta.get("osm") == "true" and "ferry_vm" not in meta and osm_key:
        # os-migrate records no VM identity: the planner matches it by its volume name.
        return ObservedVolume(
            volume.id,
            volume.name,
            volume.status,
            int(volume.size),
            "",
            int(osm_key.group(1)),
            meta.get("changeID") or None,
            meta.get("converted") == "true",
            origin="os-migrate",
        )
    if "ferry_vm" in meta and "ferry_disk" in meta:
        return ObservedVolume(
            volume.id,
            volume.name or "",
            volume.status,
            int(volume.size),
            meta["ferry_vm"],
            int(meta["ferry_disk"]),
            meta.get("ferry_change_id") or None,
            meta.get("ferry_converted") == "true",
        )
    return None


def parse_destination(raw: Mapping[str, Any]) -> Destination:
    volumes = [v for v in (parse_volume(x) for x in raw["volumes"]) if v is not None]
    return Destination(
        flavors=tuple(Flavor(f.name, int(f.vcpus), int(f.ram)) for f in raw["flavors"]),
        networks=frozenset(n.name for n in raw["networks"]),
        volume_types=frozenset(t.name for t in raw["volume_types"]),
        encrypted_volume_types=frozenset(raw.get("encrypted_volume_types", ())),
        security_groups=frozenset(g.name for g in raw["security_groups"]),
        volumes=tuple(volumes),
        ports=tuple(
            ObservedPort(p.id, p.name or "", p.mac_address, p.network_id, None)
            for p in raw["ports"]
        ),
        servers=tuple(
            ObservedServer(s.id, s.name, s.status, (s.metadata or {}).get("ferry_vm"))
            for s in raw["servers"]
            if (s.metadata or {}).get("ferry_vm")
        ),
        quotas={k: Quota(limit, used) for k, (limit, used) in raw.get("quotas", {}).items()},
        server_names=frozenset(str(s.name) for s in raw["servers"]),
    )
