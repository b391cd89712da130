"""Reading the destination cloud: flavors, networks and subnets, volume types, security groups,
key pairs, the user's roles, every port on the networks the spec maps (a source MAC or fixed IP
another port holds fails a cutover), and the volumes, ports, servers and (output: image) Glance
images ferry (or os-migrate's vmware-migration-kit) left, found by their metadata and tags, never
by name alone. Fetch does the I/O; parse_* are pure."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any

import openstack
from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as os_exc

from engine.errors import OpenStackError, UserError
from engine.model.observed import (
    Destination,
    Flavor,
    ObservedAttachment,
    ObservedImage,
    ObservedImageVolume,
    ObservedPort,
    ObservedServer,
    ObservedSubnet,
    ObservedVolume,
    Quota,
)
from engine.model.state import STAMP_KEY
from engine.providers.openstack.retry import unreachable

TAG = "ferry"
# a volume's metadata, an image's property: the lineage of the ferry state that manages it
STATE_KEY = "ferry_state"
VM_TAG = "ferry_vm:"  # a port's tag naming the source VM (compute.vm_tag)
PORT_FIELDS = ("id", "name", "mac_address", "network_id", "tags", "description", "fixed_ips",
               "device_owner", "device_id")  # fmt: skip


def handed(what: str, object_id: str, lineage: str, doing: str) -> str:
    """The words of a step refused because another ferry state (`lineage`) manages its `what`
    ("volume", "image") `object_id` now (its STATE_KEY; `doing`: "deleted" or "written")."""
    return (
        f"{what} {object_id} is managed by ferry state {lineage} now (taken over since this "
        f"plan was made, with --adopt-lineage or by hand): not {doing}"
    )


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
    except (os_exc.SDKException, ksa_exc.ClientException) as exc:
        raise OpenStackError(f"cannot log in to cloud {cloud!r}: {_login_failure(exc)}") from exc
    return conn


def _login_failure(exc: BaseException) -> str:
    """Why the log-in failed, in one line: keystone unreachable as its URL and the reason (the
    SDK wraps keystoneauth's ConnectFailure, whose message nests urllib3's retries)."""
    for cause in (exc, exc.__cause__, exc.__context__):
        if isinstance(cause, ksa_exc.ConnectionError):
            return unreachable(cause)
    return str(exc)


def connect_destination(destination: dict[str, Any]) -> Any:
    """The spec's destination block: cloud, region, project."""
    return connect(destination["cloud"], destination.get("region"), destination.get("project"))


def fetch_quotas(conn: Any) -> dict[str, tuple[int, int]]:
    """The project's quotas with their usage, as far as the user may read them: cinder (volumes,
    gigabytes, snapshots, each also per volume type: `<kind>_<type>`, and
    per_volume_gigabytes), nova (instances, cores, ram), neutron (ports, networks, subnets).
    An unreadable one is left out (the plan then does not check it)."""
    project = conn.current_project_id
    found: dict[str, tuple[int, int]] = {}
    readers: tuple[tuple[Any, tuple[str, ...]], ...] = (
        (conn.block_storage, ("volumes", "gigabytes", "snapshots")),
        (conn.compute, ("instances", "cores", "ram")),
    )
    for service, keys in readers:
        try:
            quota = service.get_quota_set(project, usage=True)
        except os_exc.SDKException:
            continue
        usage = quota.usage or {}
        found |= {k: (int(getattr(quota, k)), int(usage.get(k, 0))) for k in keys}
        if service is conn.block_storage:
            found |= _cinder_extra_quotas(quota, usage)
    try:
        quota = conn.network.get_quota(project, details=True)
        for key in ("ports", "networks", "subnets"):
            found[key] = (int(getattr(quota, key)["limit"]), int(getattr(quota, key)["used"]))
    except (os_exc.SDKException, KeyError, TypeError):
        pass
    return found


def _cinder_extra_quotas(quota: Any, usage: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Cinder's per-volume-type quotas (`volumes_<type>`, `gigabytes_<type>`,
    `snapshots_<type>`: keys openstacksdk keeps as unknown body attributes) and
    per_volume_gigabytes, each (limit, used)."""
    limits = quota.to_dict(computed=False) if hasattr(quota, "to_dict") else {}
    return {
        key: (limit, int(usage.get(key, 0)))
        for key, limit in limits.items()
        if isinstance(limit, int) and _cinder_extra(key)
    }


def _cinder_extra(key: str) -> bool:
    kind, _, volume_type = key.partition("_")
    return key == "per_volume_gigabytes" or (kind in CINDER_TYPED and bool(volume_type))


CINDER_TYPED = ("volumes", "gigabytes", "snapshots")


def type_encrypted(conn: Any, volume_type: Any) -> bool:
    """Whether a volume type has an encryption spec (its new volumes are LUKS: they do not read
    as zeros). Reading it is admin-only by cinder's default policy: a user who may not is told
    nothing here (False), and apply checks each new volume's own `encrypted` flag instead."""
    try:
        found = conn.block_storage.get_type_encryption(volume_type)
    except os_exc.SDKException:  # forbidden, or no encryption (404 on older clouds)
        return False
    return bool(getattr(found, "provider", None) or getattr(found, "encryption_id", None))


def fetch_default_type(conn: Any) -> str | None:
    """The name of the volume type Cinder gives a volume created without one, in this project
    (GET /v3/types/default: the project's default type, else the cloud's default_volume_type,
    e.g. `__DEFAULT__`); its per-type quotas count such volumes. None when the cloud does not
    answer (an older Cinder, no default type, or the call forbidden)."""
    try:
        found = conn.block_storage.get_type("default")
    except os_exc.SDKException:
        return None
    return str(getattr(found, "name", None) or "") or None


def fetch_destination(
    conn: Any, networks: Collection[str] = (), *, images: Collection[str] | None = None
) -> dict[str, Any]:
    """Everything parse_destination reads. `networks`: the names or ids of the networks the spec
    maps; every port on them is read (ferry's own ports are read wherever they are); `images`:
    the ids of the images the state records, to list ferry's Glance images (fetch_images) with
    output: image; None: Glance is not read."""
    try:
        found = list(conn.network.networks())
        types = list(conn.block_storage.types())
        return {
            "quotas": fetch_quotas(conn),
            "flavors": list(conn.compute.flavors(details=True)),
            "networks": found,
            "subnets": list(conn.network.subnets()),
            "volume_types": types,
            "encrypted_volume_types": [t.name for t in types if type_encrypted(conn, t)],
            "default_volume_type": fetch_default_type(conn),
            "security_groups": list(conn.network.security_groups()),
            "volumes": list(conn.block_storage.volumes(details=True)),
            "attachments": fetch_attachments(conn),
            "ports": fetch_ports(conn, [n.id for n in found if {n.id, n.name} & set(networks)]),
            "servers": list(conn.compute.servers(details=True)),
            "key_pairs": fetch_key_pairs(conn),
            "roles": fetch_roles(conn),
            "images": fetch_images(conn, images) if images is not None else None,
            "snapshots": list(conn.block_storage.snapshots(details=True)),  # their metadata
        }
    except os_exc.SDKException as exc:
        raise OpenStackError(f"reading the destination cloud failed: {exc}") from exc


def fetch_ports(conn: Any, network_ids: Iterable[str]) -> list[Any]:
    """Every port on these networks that the user may see, and ferry's ports anywhere, once each."""
    ports = {p.id: p for p in conn.network.ports(tags=[TAG], fields=list(PORT_FIELDS))}
    for network_id in network_ids:
        for port in conn.network.ports(network_id=network_id, fields=list(PORT_FIELDS)):
            ports.setdefault(port.id, port)
    return list(ports.values())


def fetch_attachments(conn: Any) -> list[Any] | None:
    """Every Cinder attachment of the project (the attachments API, microversion 3.27 or later:
    it lists the `reserved` and `attaching` ones a volume's own `attachments` field leaves out);
    None when the cloud or its policy does not let the user list them (then not checked)."""
    try:
        return list(conn.block_storage.attachments(details=True))
    except os_exc.SDKException:
        return None


def fetch_images(conn: Any, recorded: Collection[str] = ()) -> list[Any] | None:
    """ferry's Glance images (tag `ferry`) in one listing (Glance lists each image whole, its
    properties included: no read per image), and those of the `recorded` ids (the state's) that
    the listing leaves out (their tag removed by hand) by one read each: an image that does not
    exist is left out (gone). None when Glance does not let the user list them (recorded images
    are then compared with the state only)."""
    try:
        listed = list(conn.image.images(tag=[TAG]))
        seen = {str(i.id) for i in listed}
        for image_id in sorted(set(recorded) - seen):
            try:
                listed.append(conn.image.get_image(image_id))
            except os_exc.NotFoundException:
                continue
    except os_exc.SDKException:
        return None
    return listed


def parse_image(image: Any) -> ObservedImage:
    """A listed Glance image with its properties as Glance names them, flattened ({name: str}):
    openstacksdk keeps the ones it knows (hw_disk_bus, os_type, ...) as attributes under their
    own names and the rest under `properties`."""
    fields = image.to_dict(headers=False, computed=False, ignore_none=True, original_names=True)
    nested = fields.pop("properties", None) or {}
    found = {str(k): str(v) for k, v in {**nested, **fields}.items() if v is not None}
    key = found.get("ferry_disk_key", "")
    return ObservedImage(
        str(image.id),
        str(image.status or ""),
        found.get("ferry_vm_uuid"),
        int(key) if key.isdigit() else None,
        found,
        found.get(STATE_KEY) or None,
    )


def parse_image_volumes(volumes: Iterable[Any]) -> dict[str, dict[str, str]]:
    """The image metadata of the volumes ferry made from its images (metadata ferry_image_vm), by
    volume id; a volume not read in detail is left out."""
    out = {}
    for volume in volumes:
        found = image_metadata(volume)
        if "ferry_image_vm" in dict(volume.metadata or {}) and found is not None:
            out[str(volume.id)] = found
    return out


def volumes_from_images(volumes: Iterable[Any]) -> tuple[ObservedImageVolume, ...]:
    """The volumes ferry made from its images (metadata ferry_image_vm and a numeric
    ferry_image_disk), with the image Cinder made each from, the servers it is attached to and
    the lineage of the state that manages it (`ferry_state`)."""
    out = []
    for volume in volumes:
        meta = dict(volume.metadata or {})
        key = str(meta.get("ferry_image_disk", ""))
        if not meta.get("ferry_image_vm") or not key.isdigit():
            continue
        # Cinder's image metadata once the image is copied in; ferry's own from the create on
        made_from = (image_metadata(volume) or {}).get("image_id") or meta.get("ferry_image_id")
        servers = [str(a.get("server_id") or "") for a in volume.attachments or ()]
        out.append(
            ObservedImageVolume(
                str(volume.id),
                str(meta["ferry_image_vm"]),
                int(key),
                str(volume.status or ""),
                int(volume.size or 0),
                made_from,
                tuple(s for s in servers if s),
                meta.get(STATE_KEY) or None,
            )
        )
    return tuple(out)


def server_image(server: Any) -> str | None:
    """The id of the Glance image a server boots from (Nova's `image`: an object, a dict, or ""
    for a server booted from a volume); None when it has none."""
    image = getattr(server, "image", None)
    found = image.get("id") if isinstance(image, dict) else getattr(image, "id", None)
    return str(found) if found else None


def fetch_key_pairs(conn: Any) -> list[str] | None:
    """The user's nova key pairs by name; None when nova does not let the user list them."""
    try:
        return [str(k.name) for k in conn.compute.keypairs()]
    except os_exc.SDKException:
        return None


def fetch_roles(conn: Any) -> list[str] | None:
    """The roles keystone put in the user's token for the project; None when the auth plugin
    does not say."""
    try:
        names = conn.session.auth.get_access(conn.session).role_names
    except (os_exc.SDKException, AttributeError):
        return None
    return [str(n) for n in names] if names is not None else None


def parse_attachments(
    attachments: Iterable[Any] | None, servers: Iterable[Any]
) -> dict[str, tuple[ObservedAttachment, ...]] | None:
    """The attachments API's rows by volume id, each with its server's name (None: not read)."""
    if attachments is None:
        return None
    names = {str(s.id): str(s.name or "") for s in servers}
    out: dict[str, list[ObservedAttachment]] = {}
    for a in attachments:
        server = str(a.instance or "")
        found = ObservedAttachment(str(a.id), str(a.status or ""), server, names.get(server, ""))
        out.setdefault(str(a.volume_id), []).append(found)
    return {v: tuple(sorted(found, key=lambda a: a.id)) for v, found in out.items()}


def parse_volume(
    volume: Any, attachments: Mapping[str, tuple[ObservedAttachment, ...]] | None = None
) -> ObservedVolume | None:
    """A volume with ferry's metadata (or os-migrate's), else None; `attachments` by volume id
    (None: not read)."""
    meta = dict(volume.metadata or {})
    found = None if attachments is None else attachments.get(str(volume.id), ())
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
            volume_type=getattr(volume, "volume_type", None) or None,
            attachments=found,
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
            volume_type=getattr(volume, "volume_type", None) or None,
            lineage=meta.get(STATE_KEY) or None,
            attachments=found,
            image_metadata=image_metadata(volume),
            updated_at=str(volume.updated_at) if getattr(volume, "updated_at", None) else None,
            stamp=meta.get(STAMP_KEY) or None,
        )
    return None


def image_metadata(volume: Any) -> dict[str, str] | None:
    """A volume's image metadata ({} when it has none: Cinder lists the detailed volume's
    `volume_image_metadata` only when set); None when the volume was not read in detail."""
    if not hasattr(volume, "volume_image_metadata"):
        return None
    return {str(k): str(v) for k, v in (volume.volume_image_metadata or {}).items()}


# the description ferry gives the ports it makes (compute.description)
PORT_DESCRIBED = re.compile(r"ferry_vm=(\S+) nic=(\d+)(?: ferry_state=(\S+))?$")


def parse_port(port: Any) -> ObservedPort:
    """A port; its `vm_uuid` is the VM ferry made it for (tag `ferry_vm:<uuid>` or description
    `ferry_vm=<uuid> nic=<n> [ferry_state=<lineage>]`), None when ferry did not make it; `nic`
    that n; `lineage` the ferry state that manages it (None: none said, an older ferry's)."""
    tagged = [t[len(VM_TAG) :] for t in port.tags or [] if t.startswith(VM_TAG)]
    described = PORT_DESCRIBED.match(port.description or "")
    owner = tagged[0] if tagged else described.group(1) if described else None
    return ObservedPort(
        port.id,
        port.name or "",
        str(port.mac_address or "").lower(),
        port.network_id,
        owner,
        tuple(str(ip["ip_address"]) for ip in port.fixed_ips or () if ip.get("ip_address")),
        port.device_owner or "",
        int(described.group(2)) if described and described.group(1) == owner else None,
        str(port.device_id or ""),
        (described.group(3) or None) if described else None,
    )


def parse_subnet(subnet: Any) -> ObservedSubnet:
    pools = tuple((str(p["start"]), str(p["end"])) for p in subnet.allocation_pools or ())
    return ObservedSubnet(subnet.id, subnet.name or "", subnet.network_id, subnet.cidr, pools)


def protected(volumes: list[ObservedVolume], snapshots: Any) -> list[ObservedVolume]:
    """`volumes`, each with the id of a protection snapshot ferry took of it (its snapshot's
    `ferry_protects` metadata names it) when Cinder still holds one (break-it 12h F3: a lost
    state's successor adopted volumes an unconfirmed server had written as replicas)."""
    by_volume = {
        str((s.metadata or {}).get("ferry_protects")): str(s.id)
        for s in snapshots or ()
        if (getattr(s, "metadata", None) or {}).get("ferry_protects")
    }
    return [
        replace(v, protected_by=by_volume.get(v.id)) if v.id in by_volume else v for v in volumes
    ]


def parse_destination(raw: Mapping[str, Any]) -> Destination:
    attachments = parse_attachments(raw.get("attachments"), raw["servers"])
    volumes = [v for v in (parse_volume(x, attachments) for x in raw["volumes"]) if v is not None]
    volumes = protected(volumes, raw.get("snapshots"))
    key_pairs, roles = raw.get("key_pairs"), raw.get("roles")
    listed = raw.get("images")
    return Destination(
        flavors=tuple(
            Flavor(f.name, int(f.vcpus), int(f.ram), str(f.id), int(f.disk or 0))
            for f in raw["flavors"]
        ),
        networks=frozenset(n.name for n in raw["networks"]),
        volume_types=frozenset(t.name for t in raw["volume_types"]),
        volume_type_ids={str(t.id): str(t.name) for t in raw["volume_types"] if t.id},
        encrypted_volume_types=frozenset(raw.get("encrypted_volume_types", ())),
        default_volume_type=raw.get("default_volume_type"),
        security_groups=frozenset(x for g in raw["security_groups"] for x in (g.name, g.id) if x),
        volumes=tuple(volumes),
        ports=tuple(parse_port(p) for p in raw["ports"]),
        servers=tuple(
            ObservedServer(
                s.id, s.name, s.status, (s.metadata or {}).get("ferry_vm"), server_image(s)
            )
            for s in raw["servers"]
            if (s.metadata or {}).get("ferry_vm")
        ),
        quotas={k: Quota(limit, used) for k, (limit, used) in raw.get("quotas", {}).items()},
        server_names=frozenset(str(s.name) for s in raw["servers"]),
        server_ids=frozenset(str(s.id) for s in raw["servers"]),
        network_names={str(n.id): str(n.name or "") for n in raw["networks"]},
        subnets=tuple(parse_subnet(s) for s in raw.get("subnets", ())),
        key_pairs=frozenset(key_pairs) if key_pairs is not None else None,
        roles=frozenset(r.lower() for r in roles) if roles is not None else None,
        images=None if listed is None else {i.id: i for i in map(parse_image, listed)},
        image_volumes=None if listed is None else parse_image_volumes(raw["volumes"]),
        volumes_from_images=None if listed is None else volumes_from_images(raw["volumes"]),
        volume_ids=frozenset(str(v.id) for v in raw["volumes"]),
        snapshot_ids=(
            frozenset(str(s.id) for s in raw["snapshots"]) if "snapshots" in raw else None
        ),
        newer_snapshots=newer_snapshots(raw["snapshots"]) if "snapshots" in raw else None,
        foreign_snapshots=foreign_snapshots(raw["snapshots"]) if "snapshots" in raw else None,
    )


def foreign_snapshots(snapshots: list[Any]) -> dict[str, tuple[str, ...]]:
    """Volume id -> its snapshots that are not a protection snapshot ferry took of it (their
    `ferry_protects` metadata), each "id (name)": a backup tool's, an operator's. Cinder
    deletes no volume with snapshots (400 "must not ... have snapshots")."""
    out: dict[str, list[str]] = {}
    for s in snapshots:
        volume = str(s.volume_id)
        if (getattr(s, "metadata", None) or {}).get("ferry_protects") != volume:
            out.setdefault(volume, []).append(f"{s.id} ({s.name or 'no name'})")
    return {v: tuple(found) for v, found in out.items()}


def newer_snapshots(snapshots: list[Any]) -> dict[str, tuple[str, ...]]:
    """Each snapshot's id -> the ids of the snapshots of the same volume taken after it (by
    Cinder's created_at, ISO 8601 text of one format: compared as text). Cinder reverts a
    volume only to its newest snapshot ("not the latest one", break-it 12h F2)."""
    by_volume: dict[str, list[Any]] = {}
    for snapshot in snapshots:
        by_volume.setdefault(str(snapshot.volume_id), []).append(snapshot)
    return {
        str(s.id): tuple(
            str(o.id)
            for o in same
            if o is not s and str(o.created_at or "") > str(s.created_at or "")
        )
        for same in by_volume.values()
        for s in same
    }
