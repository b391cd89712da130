"""Creating what the lab cloud holds, through its real APIs (openstacksdk as the lab admin):
the service catalog and service users, then the lab project, its user, raised quotas, networks
matching the lab portgroups, a security group, flavors, a volume type per lab datastore, an image,
and the conversion host (a nova server)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openstack
from openstack import exceptions as os_exc

from engine.errors import LabError
from engine.lab.estate import DATASTORES, DISTRIBUTED_PORTGROUPS, STANDARD_PORTGROUP
from engine.lab.openstack import config
from engine.lab.openstack.config import Ports, Secrets

SERVICES = (  # (user, service type, name, url path)
    ("glance", "image", "glance", ""),
    ("cinder", "volumev3", "cinderv3", "/v3"),
    ("neutron", "network", "neutron", ""),
    ("nova", "compute", "nova", "/v2.1"),
    ("placement", "placement", "placement", ""),
)
NETWORKS = {  # lab portgroup → (network name, subnet CIDR)
    STANDARD_PORTGROUP: ("lab-vm-network", "10.77.0.0/24"),
    DISTRIBUTED_PORTGROUPS[0]: ("lab-dvpg0", "10.77.1.0/24"),
    DISTRIBUTED_PORTGROUPS[1]: ("lab-dvpg1", "10.77.2.0/24"),
}
FLAVORS = (  # (name, vCPUs, RAM MiB, root disk GiB)
    ("m1.small", 1, 2048, 0),  # disk 0: servers boot from volumes
    ("m1.medium", 2, 4096, 0),
    ("m1.large", 4, 8192, 0),
    ("m1.xlarge", 8, 16384, 0),
    # boot: image (issue 16): nova's policy refuses an image boot on a zero-disk flavor to a
    # non-admin (os_compute_api:servers:create:zero_disk_flavor), and the root disk must hold
    # the boot disk's image
    ("m1.small.disk20", 1, 2048, 20),
    ("m1.medium.disk20", 2, 4096, 20),
    ("m1.large.disk40", 4, 8192, 40),
    ("ferry.conversion", 4, 6144, 1),
)
CONVERSION_HOST = "ferry-conversion-01"
CONVERSION_IMAGE = "ferry-lab-conversion"
SECURITY_GROUP = "ferry-lab"
DIRTY_VOLUME_TYPE = "localds-0-dirty"  # its new volumes hold a pattern, not zeros


def volume_type_name(datastore: str) -> str:
    return datastore.lower().replace("_", "-")


def admin(ports: Ports, sec: Secrets) -> Any:
    return openstack.connect(
        auth_url=config.keystone_url(ports),
        username="admin",
        password=sec.admin,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=config.REGION,
        identity_api_version="3",
        connect_retries=3,
    )


def catalog(conn: Any, ports: Ports, sec: Secrets) -> None:
    """The service project, users and endpoints (public and internal) of every service."""
    project = conn.identity.create_project(name=config.SERVICE_PROJECT, domain_id="default")
    admin_role = conn.identity.find_role("admin")
    service_role = conn.identity.find_role("service") or conn.identity.create_role(name="service")
    port_of = {
        "glance": ports.glance,
        "cinder": ports.cinder,
        "neutron": ports.neutron,
        "nova": ports.nova,
        "placement": ports.placement,
    }
    for user_name, kind, name, path in SERVICES:
        user = conn.identity.create_user(name=user_name, password=sec.service, domain_id="default")
        for role in (admin_role, service_role):
            conn.identity.assign_project_role_to_user(project, user, role)
        service = conn.identity.create_service(name=name, type=kind)
        url = f"http://127.0.0.1:{port_of[user_name]}{path}"
        for interface in ("public", "internal"):
            conn.identity.create_endpoint(
                service_id=service.id, interface=interface, url=url, region_id=config.REGION
            )


def lab_project(conn: Any, sec: Secrets) -> Any:
    project = conn.identity.create_project(
        name=config.LAB_PROJECT, domain_id="default", description="ferry's lab destination"
    )
    user = conn.identity.create_user(
        name=config.LAB_USER, password=sec.user, domain_id="default", default_project_id=project.id
    )
    conn.identity.assign_project_role_to_user(project, user, conn.identity.find_role("member"))
    # The operator of the lab cloud (admin) may act in the lab project: a spec with
    # `destination: {cloud: ferry-lab-admin, project: ferry-lab}` can create flavors there.
    conn.identity.assign_project_role_to_user(
        project, conn.identity.find_user("admin"), conn.identity.find_role("admin")
    )
    conn.set_compute_quotas(project.id, instances=200, cores=2000, ram=4096000)
    conn.set_volume_quotas(project.id, volumes=1000, gigabytes=100000, snapshots=1000)
    conn.set_network_quotas(
        project.id, port=2000, network=100, subnet=100, security_group=100, security_group_rule=1000
    )
    return project


def lab_resources(conn: Any, project: Any) -> None:
    for name, cidr in NETWORKS.values():
        net = conn.network.create_network(name=name, project_id=project.id)
        conn.network.create_subnet(
            network_id=net.id, name=f"{name}-subnet", cidr=cidr, ip_version=4, project_id=project.id
        )
    group = conn.network.create_security_group(
        name=SECURITY_GROUP, project_id=project.id, description="ferry lab: SSH from loopback"
    )
    conn.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="127.0.0.1/32",
        ethertype="IPv4",
        project_id=project.id,
    )
    for name, vcpus, ram, disk in FLAVORS:
        conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)
    for datastore in DATASTORES:
        conn.block_storage.create_type(
            name=volume_type_name(datastore),
            extra_specs={"volume_backend_name": config.CINDER_BACKEND},
        )
    conn.block_storage.create_type(  # new volumes do not read as zeros (like LUKS, some arrays)
        name=DIRTY_VOLUME_TYPE,
        extra_specs={"volume_backend_name": config.CINDER_BACKEND, "ferry_lab:fill": "pattern"},
    )
    image = conn.image.create_image(
        name=CONVERSION_IMAGE,
        disk_format="raw",
        container_format="bare",
        visibility="public",
        data=b"\0" * (1024 * 1024),
    )
    conn.image.wait_for_status(image, status="active", interval=0.5, wait=120)


def host_name(number: int) -> str:
    """The lab's conversion host `number` (from 1): 'ferry-conversion-01', ..."""
    return f"ferry-conversion-{number:02d}"


def conversion_hosts(user_conn: Any, hosts: int, say: Callable[[str], None]) -> list[str]:
    """Boot the lab's conversion hosts ferry-conversion-01..NN (`hosts` of them, one after
    the other, each waited ACTIVE; `say` gets a line for each after the first); their names."""
    names = [host_name(n) for n in range(1, hosts + 1)]
    for name in names:
        conversion_host(user_conn, name)
        if name != CONVERSION_HOST:
            say(f"conversion host {name} booted")
    return names


def ensure_conversion_host(user_conn: Any, name: str) -> Any:
    """The lab project's server `name` when there is one (a lab booted with `--hosts`), else
    a conversion host booted by that name (conversion_host)."""
    found = user_conn.compute.find_server(name, ignore_missing=True)
    return found if found is not None else conversion_host(user_conn, name)


def conversion_host(user_conn: Any, name: str = CONVERSION_HOST) -> Any:
    """Boot a conversion host (the lab's, or another `name`) in the lab project and wait for
    ACTIVE; raises LabError when it goes to ERROR."""
    image = user_conn.image.find_image(CONVERSION_IMAGE)
    flavor = user_conn.compute.find_flavor("ferry.conversion")
    net = user_conn.network.find_network(NETWORKS[STANDARD_PORTGROUP][0])
    server = user_conn.compute.create_server(
        name=name,
        image_id=image.id,
        flavor_id=flavor.id,
        networks=[{"uuid": net.id}],
        security_groups=[{"name": SECURITY_GROUP}],
        metadata={"ferry_role": "conversion-host"},
    )
    try:
        return user_conn.compute.wait_for_server(server, status="ACTIVE", interval=0.5, wait=300)
    except os_exc.ResourceFailure as exc:
        fault = user_conn.compute.get_server(server.id).fault
        raise LabError(f"conversion host went to ERROR: {fault}") from exc


def wait_compute(conn: Any, timeout: float = 180.0) -> None:
    """Until nova has discovered the fake compute host, cinder-volume reports up and
    cinder-scheduler knows the volume backend's pool. A scheduler that has not yet received
    the backend's capabilities (cinder-volume reports them periodically after it starts)
    fails a volume create with "No valid backend was found. No weighed backends available",
    which a first test right after `lab up` on a loaded machine met.

    Raises LabError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        hypervisors = list(conn.compute.hypervisors())
        volume_up = any(
            s.binary == "cinder-volume" and s.state == "up" for s in conn.block_storage.services()
        )
        pools = list(conn.block_storage.backend_pools()) if volume_up else []
        if hypervisors and volume_up and pools:
            return
        if time.monotonic() > deadline:
            raise LabError(
                f"compute/volume services not ready after {timeout:.0f} s "
                f"(hypervisors: {len(hypervisors)}, cinder-volume up: {volume_up}, "
                f"scheduler pools: {len(pools)})"
            )
        time.sleep(1)
