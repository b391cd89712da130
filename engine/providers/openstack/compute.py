"""What a cutover creates in the destination: ports carrying the source MACs, a flavor when the
spec asks for one, Cinder protection snapshots, and the server booted from the volumes.

Everything is found again without state: a port by its MAC on its network (neutron allows one),
a server by its `ferry_vm` metadata (set atomically at create), a protection snapshot by its
`ferry_protects` metadata. Tags are added for humans and for refresh's single listing. A port's
description names the VM, the NIC and the ferry state that made it (`ferry_state`, the state's
lineage, as every volume and image ferry makes carries): set atomically at its create, so a state
reuses only its own port (break-it 16g L4: a fresh state reused another state's ports by MAC).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from openstack import exceptions as os_exc

from engine.errors import OpenStackError, UserError
from engine.providers.openstack.read import PORT_DESCRIBED, handed
from engine.providers.openstack.read import newer_snapshots as taken_after
from engine.providers.openstack.retry import answer, transient
from engine.providers.openstack.volumes import snapshots_of, wait_volume
from engine.providers.openstack.waits import wait_for
from engine.units import MiB, human

TAG = "ferry"
POLL = 0.5  # seconds between reads while a delete is awaited (openstacksdk's default: 2)
SERVER_FAILED = ("ERROR", "DELETED", "SOFT_DELETED", "SHELVED", "SHELVED_OFFLOADED")


def vm_tag(vm_uuid: str) -> str:
    return f"ferry_vm:{vm_uuid}"


# -- ports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    name: str
    vm_uuid: str
    index: int
    mac: str
    network: str
    subnet: str | None
    fixed_ip: str | None
    security_groups: tuple[str, ...]
    lineage: str = ""  # the ferry state making it (its description's ferry_state)
    # a port found for this NIC the plan adopts: the ferry_state it was found with ("": none, an
    # older ferry's); None: the plan adopts none (only this state's own is reused)
    adopts: str | None = None


def _network_id(conn: Any, name: str) -> str:
    network = conn.network.find_network(name, ignore_missing=True)
    if network is None:
        raise UserError(f"network {name!r} does not exist in the destination")
    return str(network.id)


def ensure_network(
    conn: Any, name: str, cidr: str, gateway: str | None, dhcp: bool
) -> tuple[str, str, bool]:
    """The network (tagged ferry) and its subnet: (network id, subnet id, created). One a killed
    apply left (ours by its tag) is completed and reused; someone else's is an error."""

    def once() -> tuple[str, str, bool]:
        network = conn.network.find_network(name, ignore_missing=True)
        created = network is None
        if network is None:
            network = conn.network.create_network(name=name, description="created by ferry")
            conn.network.set_tags(network, [TAG])
        elif TAG not in (network.tags or []):
            raise OpenStackError(f"network {name!r} exists and ferry did not create it")
        subnets = list(conn.network.subnets(network_id=network.id))
        subnet = subnets[0] if subnets else None
        if subnet is None:
            fields: dict[str, Any] = {
                "name": f"{name}-v4",
                "network_id": network.id,
                "ip_version": 4,
                "cidr": cidr,
                "enable_dhcp": dhcp,
            }
            if gateway:
                fields["gateway_ip"] = gateway
            subnet = conn.network.create_subnet(**fields)
            conn.network.set_tags(subnet, [TAG])
        return str(network.id), str(subnet.id), created

    return transient(once, f"network {name}")


@dataclass(frozen=True)
class HostSpec:
    name: str
    image: str
    flavor: str
    network: str
    ssh_from: str
    security_group: str
    key_pair: str | None = None


def ensure_conversion_host(conn: Any, spec: HostSpec) -> tuple[str, str, bool]:
    """The conversion host (server id, security group id, created): a security group allowing
    SSH from one CIDR, then the server, waited for ACTIVE. One a killed apply left (by its
    ferry_role metadata) is reused; a server of that name ferry did not boot is an error."""
    group = transient(lambda: _ssh_group(conn, spec), f"security group {spec.security_group}")
    existing = conn.compute.find_server(spec.name, ignore_missing=True)
    if existing is not None:
        server = conn.compute.get_server(existing.id)
        if (server.metadata or {}).get("ferry_role") != "conversion-host":
            raise OpenStackError(f"server {spec.name!r} exists and ferry did not boot it")
        return str(wait_active(conn, str(server.id)).id), group, False
    image = conn.image.find_image(spec.image, ignore_missing=True)
    flavor = conn.compute.find_flavor(spec.flavor, ignore_missing=True)
    if image is None or flavor is None:
        missing = f"image {spec.image!r}" if image is None else f"flavor {spec.flavor!r}"
        raise UserError(f"conversion host {spec.name}: {missing} does not exist")
    fields: dict[str, Any] = {
        "name": spec.name,
        "image_id": image.id,
        "flavor_id": flavor.id,
        "networks": [{"uuid": _network_id(conn, spec.network)}],
        "security_groups": [{"name": spec.security_group}],
        "metadata": {"ferry_role": "conversion-host"},
    }
    if spec.key_pair:
        fields["key_name"] = spec.key_pair
    try:
        server = conn.compute.create_server(**fields)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"booting conversion host {spec.name}: {answer(exc)}") from exc
    return str(wait_active(conn, str(server.id)).id), group, True


def _ssh_group(conn: Any, spec: HostSpec) -> str:
    group = conn.network.find_security_group(spec.security_group, ignore_missing=True)
    if group is None:
        group = conn.network.create_security_group(
            name=spec.security_group, description="ferry conversion host: SSH"
        )
        conn.network.set_tags(group, [TAG])
    rules = list(conn.network.security_group_rules(security_group_id=group.id))
    if not any(
        r.direction == "ingress" and r.port_range_min == 22 and r.remote_ip_prefix == spec.ssh_from
        for r in rules
    ):
        conn.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            ethertype="IPv6" if ":" in spec.ssh_from else "IPv4",
            protocol="tcp",
            port_range_min=22,
            port_range_max=22,
            remote_ip_prefix=spec.ssh_from,
        )
    return str(group.id)


def delete_conversion_host(conn: Any, server_id: str) -> None:
    delete_server(conn, server_id)


def delete_security_group(conn: Any, group_id: str) -> None:
    transient(
        lambda: conn.network.delete_security_group(group_id, ignore_missing=True),
        f"deleting security group {group_id}",
    )


def delete_network(conn: Any, network_id: str) -> None:
    """The network and its subnets (neutron removes them together)."""
    transient(
        lambda: conn.network.delete_network(network_id, ignore_missing=True),
        f"deleting network {network_id}",
    )


def _fixed_ips(conn: Any, spec: PortSpec, network_id: str) -> list[dict[str, str]] | None:
    if spec.subnet is None and spec.fixed_ip is None:
        return None
    entry: dict[str, str] = {}
    if spec.subnet is not None:
        subnet = conn.network.find_subnet(spec.subnet, network_id=network_id, ignore_missing=True)
        if subnet is None:
            raise UserError(f"subnet {spec.subnet!r} is not on network {spec.network!r}")
        entry["subnet_id"] = subnet.id
    if spec.fixed_ip is not None:
        entry["ip_address"] = spec.fixed_ip
    return [entry]


def _security_group_ids(conn: Any, names: tuple[str, ...]) -> list[str]:
    ids = []
    for name in names:
        group = conn.network.find_security_group(name, ignore_missing=True)
        if group is None:
            raise UserError(f"security group {name!r} does not exist in the destination")
        ids.append(str(group.id))
    return ids


def description(vm_uuid: str, index: int, lineage: str = "") -> str:
    """A port's description: the VM and NIC ferry made it for, and the ferry state that manages
    it (`lineage`; none: "")."""
    state = f" ferry_state={lineage}" if lineage else ""
    return f"ferry_vm={vm_uuid} nic={index}{state}"


def described(text: str | None) -> tuple[str, int, str | None] | None:
    """(VM instance UUID, NIC index, ferry state lineage or None) of a port description ferry
    wrote (`description`); None for any other."""
    found = PORT_DESCRIBED.match(text or "")
    return (found.group(1), int(found.group(2)), found.group(3) or None) if found else None


def ensure_port(conn: Any, spec: PortSpec) -> tuple[Any, bool]:
    """The port with the source MAC on its network: (port, created). One left by a killed apply
    of this state (ours by its description) is reused, and one the plan adopts (`spec.adopts`,
    relabelled with this state's lineage); a port ferry made for the NIC that another ferry
    state manages (or an older ferry's the plan does not adopt), and a foreign port holding the
    MAC, are errors. Safe to repeat while neutron is briefly down: each attempt looks for the
    port before creating it."""
    return transient(lambda: _ensure_port(conn, spec), f"port {spec.name} (MAC {spec.mac})")


def _ensure_port(conn: Any, spec: PortSpec) -> tuple[Any, bool]:
    network_id = _network_id(conn, spec.network)
    found = list(conn.network.ports(mac_address=spec.mac, network_id=network_id))
    if found:
        port = found[0]
        said = described(port.description)
        if said is None or said[:2] != (spec.vm_uuid, spec.index):
            raise OpenStackError(
                f"MAC {spec.mac} is already used on {spec.network!r} by port {port.id} "
                f"({port.name or 'unnamed'}), which ferry did not create"
            )
        owner = said[2] or ""
        _owned(port, spec, owner)
        if spec.lineage and owner != spec.lineage:  # adopted: this state's from now on
            port = conn.network.update_port(
                port, description=description(spec.vm_uuid, spec.index, spec.lineage)
            )
        _tag(conn, port, spec.vm_uuid)
        return port, False
    fields: dict[str, Any] = {
        "name": spec.name,
        "network_id": network_id,
        "mac_address": spec.mac,
        "security_group_ids": _security_group_ids(conn, spec.security_groups),
        "description": description(spec.vm_uuid, spec.index, spec.lineage),
    }
    fixed_ips = _fixed_ips(conn, spec, network_id)
    if fixed_ips is not None:
        fields["fixed_ips"] = fixed_ips
    port = conn.network.create_port(**fields)
    _tag(conn, port, spec.vm_uuid)
    return port, True


def _owned(port: Any, spec: PortSpec, owner: str) -> None:
    """The port ferry made for this NIC (`owner`: the lineage its description names, "" none)
    may be reused by the state making `spec`: it is that state's, or the one the plan adopts
    (spec.adopts: the lineage it was found with). Raises OpenStackError naming whose it is;
    nothing is changed. Without a lineage to compare (a state not written yet) any is."""
    if not spec.lineage or owner in (spec.lineage, spec.adopts):
        return
    whose = f"ferry state {owner}" if owner else "an older ferry (no ferry_state: unlabelled)"
    raise OpenStackError(
        f"MAC {spec.mac} is used on {spec.network!r} by port {port.id}, which ferry made for "
        f"this NIC and {whose} manages{' since the plan' if spec.adopts is not None else ''}: "
        "not reused; run `ferry plan` again"
    )


def label_port(conn: Any, port_id: str, lineage: str, *, adopts: str | None = None) -> None:
    """Stamp ferry state `lineage` on port `port_id` ferry made (its description's
    ferry_state), leaving its VM and NIC: a port an older ferry made (none set), or one this
    state adopts (`adopts`: the lineage the plan found it with). Raises OpenStackError: the
    port is gone, not ferry's, or another ferry state manages it now (nothing changed)."""

    def once() -> None:
        port = conn.network.get_port(port_id)
        said = described(port.description)
        if said is None:
            raise OpenStackError(f"port {port_id} carries no ferry description: not labelled")
        owner = said[2] or ""
        if owner not in ("", lineage, adopts or ""):
            raise OpenStackError(f"{handed('port', port_id, owner, 'labelled')}")
        if owner != lineage:
            conn.network.update_port(port, description=description(said[0], said[1], lineage))

    transient(once, f"labelling port {port_id}")


def port_lineage(conn: Any, port_id: str) -> str | None:
    """The lineage of the ferry state that manages port `port_id` (its description's
    ferry_state; "" when none or not ferry's), None when it is gone. Raises OpenStackError."""

    def read() -> str | None:
        port = conn.network.find_port(port_id, ignore_missing=True)
        if port is None:
            return None
        said = described(port.description)
        return (said[2] or "") if said else ""

    return transient(read, f"reading port {port_id}")


def _tag(conn: Any, port: Any, vm_uuid: str) -> None:
    wanted = {TAG, vm_tag(vm_uuid)}
    if not wanted <= set(port.tags or []):
        conn.network.set_tags(port, sorted(wanted | set(port.tags or [])))


def delete_port(conn: Any, port_id: str) -> None:
    try:
        conn.network.delete_port(port_id, ignore_missing=True)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"deleting port {port_id}: {answer(exc)}") from exc


def port_exists(conn: Any, port_id: str) -> bool:
    """Raises OpenStackError when Neutron cannot be asked."""
    try:
        return conn.network.find_port(port_id, ignore_missing=True) is not None
    except os_exc.SDKException as exc:
        raise OpenStackError(f"looking up port {port_id}: {answer(exc)}") from exc


def flavor_exists(conn: Any, name: str) -> bool:
    """A flavor of that name or id. Raises OpenStackError when Nova cannot be asked."""
    try:
        return conn.compute.find_flavor(name, ignore_missing=True) is not None
    except os_exc.SDKException as exc:
        raise OpenStackError(f"looking up flavor {name}: {answer(exc)}") from exc


def flavor_size(conn: Any, name: str) -> tuple[int, int] | None:
    """A flavor's (vCPUs, RAM in MiB) by name or id; None when there is none. Raises
    OpenStackError when Nova cannot be asked."""
    try:
        found = conn.compute.find_flavor(name, ignore_missing=True)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"looking up flavor {name}: {answer(exc)}") from exc
    return None if found is None else (int(found.vcpus), int(found.ram))


# -- flavors --------------------------------------------------------------------------------------


def ensure_flavor(
    conn: Any, name: str, vcpus: int, ram_mb: int, disk_gib: int = 0
) -> tuple[str, bool]:
    """The flavor named `name` (made for one VM by `flavor: create`): (id, created).
    `disk_gib`: its root disk (GiB; boot: image), 0 for a server booted from volumes. Raises
    UserError (one of that name is smaller), OpenStackError."""
    try:
        found = conn.compute.find_flavor(name, ignore_missing=True)
        if found is not None:
            if int(found.vcpus) < vcpus or int(found.ram) < ram_mb or int(found.disk) < disk_gib:
                raise UserError(
                    f"flavor {name!r} exists with {found.vcpus} vCPU / "
                    f"{human(int(found.ram) * MiB)} RAM / {found.disk} GiB disk, smaller than "
                    f"the {vcpus} vCPU / {human(ram_mb * MiB)} / {disk_gib} GiB wanted"
                )
            return str(found.id), False
        flavor = conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram_mb, disk=disk_gib)
        conn.compute.create_flavor_extra_specs(flavor, {"ferry:created": "true"})
    except os_exc.ForbiddenException as exc:
        raise OpenStackError(
            f"creating flavor {name!r} needs an admin role in the destination: {exc}"
        ) from exc
    except os_exc.SDKException as exc:
        raise OpenStackError(f"flavor {name!r}: {answer(exc)}") from exc
    return str(flavor.id), True


def delete_flavor(conn: Any, flavor_id: str) -> None:
    try:
        conn.compute.delete_flavor(flavor_id, ignore_missing=True)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"deleting flavor {flavor_id}: {answer(exc)}") from exc


# -- protection snapshots -----------------------------------------------------------------------


def _wait_snapshot(conn: Any, snapshot_id: str, timeout: float = 300.0) -> None:
    wait_for(
        lambda: conn.block_storage.get_snapshot(snapshot_id),
        f"snapshot {snapshot_id}",
        lambda snapshot: snapshot.status == "available",
        lambda snapshot: (
            f"snapshot {snapshot_id} went to {snapshot.status}"
            if snapshot.status.startswith("error")
            else None
        ),
        timeout=timeout,
    )


def protection_snapshot(conn: Any, volume_id: str, name: str) -> str:
    """A new Cinder snapshot of the volume before conversion touches it; returns its id. A
    protection snapshot of the volume still in Cinder (found by its `ferry_protects` metadata:
    the caller has released every one its state records) was left by an interrupted attempt
    and is deleted first, never reused: it may be older than a later sync, whose writes a
    revert to it would erase (break-it 12c item 1: 5 MiB lost, then "No changes"), and Cinder
    reverts a volume only to its latest snapshot. Raises OpenStackError."""
    drop_unrecorded_protection(conn, volume_id)
    try:
        snapshot = conn.block_storage.create_snapshot(
            volume_id=volume_id,
            name=name,
            force=True,
            metadata={"ferry_protects": volume_id},
        )
    except os_exc.SDKException as exc:
        raise OpenStackError(f"protecting volume {volume_id}: {answer(exc)}") from exc
    _wait_snapshot(conn, snapshot.id)
    return str(snapshot.id)


def drop_unrecorded_protection(conn: Any, volume_id: str) -> list[str]:
    """Delete the protection snapshots of ferry's (`ferry_protects` metadata) of the volume that
    are still in Cinder and not already being deleted, and wait until they are gone; their ids.
    The caller has released every one its state records: these were left by an attempt killed
    between the snapshot's create and its record (break-it 12k M2). Never reused: one may be
    older than a later sync, whose writes a revert to it would erase. Raises OpenStackError."""
    dropped = []
    try:
        for snapshot in conn.block_storage.snapshots(details=True):
            ours = (snapshot.metadata or {}).get("ferry_protects") == volume_id
            if ours and snapshot.status != "deleting":
                _drop_snapshot(conn, snapshot)
                dropped.append(str(snapshot.id))
    except os_exc.SDKException as exc:
        what = f"deleting the protection snapshots of {volume_id}"
        raise OpenStackError(f"{what}: {answer(exc)}") from exc
    return dropped


def _drop_snapshot(conn: Any, snapshot: Any, timeout: float = 300.0) -> None:
    """Delete a snapshot (once it is no longer being created) and wait until it is gone."""
    if snapshot.status != "deleting":
        if snapshot.status == "creating":
            _wait_snapshot(conn, snapshot.id, timeout)
        conn.block_storage.delete_snapshot(snapshot.id, ignore_missing=True)
    conn.block_storage.wait_for_delete(snapshot, interval=POLL, wait=int(timeout))


def revert(conn: Any, volume_id: str, snapshot_id: str) -> bool:
    """Put the volume back to its protection snapshot (the volume must be detached); False
    (nothing done) when Cinder refuses it as not the volume's newest snapshot (its 400
    "Specified snapshot ... is None or not the latest one": one taken since, outside ferry).
    Raises OpenStackError on other failures."""
    wait_volume(conn, volume_id, "available")
    try:
        conn.block_storage.revert_volume_to_snapshot(volume_id, snapshot_id)
    except os_exc.BadRequestException as exc:
        if "not the latest" in str(exc):
            return False
        raise OpenStackError(
            f"reverting volume {volume_id} to {snapshot_id}: {answer(exc)}"
        ) from exc
    except os_exc.SDKException as exc:
        raise OpenStackError(
            f"reverting volume {volume_id} to {snapshot_id}: {answer(exc)}"
        ) from exc
    wait_volume(conn, volume_id, "available")
    _wait_snapshot(conn, snapshot_id)
    return True


def newer_snapshots(conn: Any, volume_id: str, snapshot_id: str) -> list[str]:
    """Ids of the volume's snapshots taken after `snapshot_id` (by Cinder's created_at: a
    backup tool's, an operator's), any status; [] when `snapshot_id` is not listed. Cinder
    reverts a volume only to its newest snapshot (break-it 12h F2: the revert failed with 400
    "not the latest one" at every apply). The rule is the refresh's (read.newer_snapshots).
    Raises OpenStackError."""
    listed = transient(
        lambda: snapshots_of(conn, volume_id), f"listing the snapshots of volume {volume_id}"
    )
    return list(taken_after(listed).get(snapshot_id, ()))


def snapshot_exists(conn: Any, snapshot_id: str) -> bool:
    """Cinder still has the snapshot (not deleted outside ferry). Raises OpenStackError."""
    try:
        conn.block_storage.get_snapshot(snapshot_id)
    except os_exc.NotFoundException:
        return False
    except os_exc.SDKException as exc:
        raise OpenStackError(f"reading snapshot {snapshot_id}: {answer(exc)}") from exc
    return True


def delete_snapshot(conn: Any, snapshot_id: str) -> None:
    try:
        conn.block_storage.delete_snapshot(snapshot_id, ignore_missing=True)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"deleting snapshot {snapshot_id}: {answer(exc)}") from exc


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    name: str
    vm_uuid: str
    flavor: str  # name or id
    volume_ids: tuple[str, ...]  # boot volume first, then data volumes in order
    port_ids: tuple[str, ...]  # in the source's NIC order
    key_pair: str | None = None
    image_id: str | None = None  # boot: image: the boot disk's Glance image; volume_ids: data


def block_devices(spec: ServerSpec) -> list[dict[str, Any]]:
    """Nova's block_device_mapping_v2 for the server: booted from its first volume, the others
    attached; or (`image_id`) from the image on the hypervisor's local storage (source image,
    destination local, boot_index 0, deleted with the server: the image stays in Glance), every
    volume a data disk (boot_index -1: not bootable)."""
    mapping: list[dict[str, Any]] = []
    if spec.image_id:
        mapping.append(
            {
                "uuid": spec.image_id,
                "source_type": "image",
                "destination_type": "local",
                "boot_index": 0,
                "delete_on_termination": True,
            }
        )
    for index, volume_id in enumerate(spec.volume_ids):
        mapping.append(
            {
                "uuid": volume_id,
                "source_type": "volume",
                "destination_type": "volume",
                "boot_index": 0 if index == 0 and not spec.image_id else -1,
                "delete_on_termination": False,
            }
        )
    return mapping


def set_image_metadata(conn: Any, volume_id: str, metadata: Mapping[str, str]) -> None:
    """Set these image properties ({name: value}: hw_firmware_type, hw_machine_type,
    os_secure_boot, hw_disk_bus, ...) as the volume's image metadata: Nova boots a server from
    the volume by them. Raises OpenStackError."""
    try:
        conn.block_storage.set_volume_image_metadata(volume_id, **dict(metadata))
    except os_exc.SDKException as exc:
        raise OpenStackError(
            f"setting image metadata {sorted(metadata)} on volume {volume_id}: {exc}"
        ) from exc


def unset_image_metadata(conn: Any, volume_id: str, keys: Iterable[str]) -> None:
    """Remove these keys from the volume's image metadata (Cinder's os-unset_image_metadata; none:
    no request). Raises OpenStackError."""
    names = sorted(keys)
    if not names:
        return
    try:
        conn.block_storage.delete_volume_image_metadata(volume_id, keys=names)
    except os_exc.SDKException as exc:
        raise OpenStackError(
            f"removing image metadata {names} from volume {volume_id}: {exc}"
        ) from exc


def conversion_server(conn: Any, name: str) -> Any | None:
    """The server of conversion host `name` (the spec names it; volumes are attached to it by
    its ID), None when none has that name or ID. Raises UserError when several servers have
    the name (openstacksdk's find raises DuplicateResource: a traceback before), naming their
    IDs; OpenStackError when the servers cannot be listed."""
    try:
        return conn.compute.find_server(name, ignore_missing=True)
    except os_exc.DuplicateResource as exc:
        try:
            ids = sorted(str(s.id) for s in conn.compute.servers(name=f"^{re.escape(name)}$"))
        except os_exc.SDKException:
            ids = []
        raise UserError(
            f"conversion host {name!r}: {len(ids) or 'several'} servers have this name "
            f"({', '.join(ids) or exc}): ferry attaches volumes to one, by name; rename or "
            "delete the others, or give the host's server ID as its name"
        ) from exc
    except os_exc.SDKException as exc:
        raise OpenStackError(f"finding conversion host {name!r}: {answer(exc)}") from exc


def find_server(conn: Any, vm_uuid: str) -> Any | None:
    """The server ferry booted for this source VM (by its metadata), if any."""
    return vm_server(project_servers(conn), vm_uuid)


def project_servers(conn: Any) -> list[Any]:
    """Every server of the project, with its details. Raises OpenStackError."""
    try:
        return list(conn.compute.servers(details=True))
    except os_exc.SDKException as exc:
        raise OpenStackError(f"listing servers: {answer(exc)}") from exc


def vm_server(servers: list[Any], vm_uuid: str) -> Any | None:
    """Of `servers`, the one ferry booted for the source VM `vm_uuid` (its `ferry_vm`)."""
    return next((s for s in servers if (s.metadata or {}).get("ferry_vm") == vm_uuid), None)


def attached_volume_ids(server: Any) -> frozenset[str]:
    """The IDs of the volumes Nova lists as attached to `server` (its block device mappings:
    a server booted from volumes lists them; one still being scheduled may list none yet)."""
    return frozenset(str(v["id"]) for v in (server.attached_volumes or ()) if v.get("id"))


def image_of(server: Any) -> str | None:
    """The Glance image `server` was booted from (None: booted from a volume)."""
    return str((server.image or {}).get("id") or "") or None


def others_named(conn: Any, name: str, vm_uuid: str) -> list[str]:
    """The IDs of the project's servers named `name` that ferry did not boot for the VM
    `vm_uuid` (see `named_besides`). Raises OpenStackError."""
    return named_besides(project_servers(conn), name, vm_uuid)


def named_besides(servers: list[Any], name: str, vm_uuid: str) -> list[str]:
    """The IDs of `servers` named `name` (exactly) that ferry did not boot for the VM
    `vm_uuid` (no `ferry_vm` metadata of it): a cutover booting a server of that name would
    make a second one beside them."""
    return [
        str(s.id)
        for s in servers
        if s.name == name and (s.metadata or {}).get("ferry_vm") != vm_uuid
    ]


def create_server(conn: Any, spec: ServerSpec) -> Any:
    flavor = conn.compute.find_flavor(spec.flavor, ignore_missing=True)
    if flavor is None:
        raise UserError(f"flavor {spec.flavor!r} does not exist in the destination")
    fields: dict[str, Any] = {
        "name": spec.name,
        "flavor_id": flavor.id,
        "block_device_mapping_v2": block_devices(spec),
        "networks": [{"port": p} for p in spec.port_ids] or "none",
        "metadata": {"ferry_vm": spec.vm_uuid},
    }
    if spec.image_id:  # Nova maps an image to local only for the imageRef it also names
        fields["image_id"] = spec.image_id
    if spec.key_pair:
        fields["key_name"] = spec.key_pair
    try:
        return conn.compute.create_server(**fields)
    except os_exc.SDKException as exc:
        raise OpenStackError(f"booting server {spec.name}: {answer(exc)}") from exc


def wait_active(conn: Any, server_id: str, timeout: float = 600.0) -> Any:
    """Re-fetch until ACTIVE; ERROR fails at once with nova's fault message."""

    def failure(server: Any) -> str | None:
        if server.status not in SERVER_FAILED:
            return None
        fault = (server.fault or {}).get("message") or "no fault reported"
        return f"server {server.name} ({server_id}) is {server.status}: {fault}"

    return wait_for(
        lambda: conn.compute.get_server(server_id),
        f"server {server_id}",
        lambda server: server.status == "ACTIVE",
        failure,
        timeout=timeout,
        delay=0.5,
        max_delay=5.0,
    )


def delete_server(conn: Any, server_id: str, timeout: float = 300.0) -> None:
    try:
        server = conn.compute.get_server(server_id)
        conn.compute.delete_server(server_id)
        conn.compute.wait_for_delete(server, interval=POLL, wait=int(timeout))
    except os_exc.NotFoundException:
        return
    except os_exc.SDKException as exc:
        raise OpenStackError(f"deleting server {server_id}: {answer(exc)}") from exc
