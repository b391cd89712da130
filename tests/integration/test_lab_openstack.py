"""The lab cloud through openstacksdk: what `lab up` created, and the conversion-host seam — a
volume attached to the conversion host exposes its backing file as the device; bytes written there
are what a new server booted from the volume gets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.estate import DATASTORES, DISTRIBUTED_PORTGROUPS, STANDARD_PORTGROUP
from engine.lab.lab import Lab
from engine.lab.openstack import bootstrap
from engine.providers.openstack import volumes

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def conn(lab: Lab) -> Any:
    return lab.openstack("ferry-lab")


@pytest.fixture
def cleanup(conn: Any) -> Iterator[list[tuple[str, str]]]:
    """(kind, id) of what a test creates; servers are deleted before volumes."""
    made: list[tuple[str, str]] = []
    yield made
    for kind, ident in sorted(made, key=lambda m: m[0] != "server"):
        if kind == "server":
            server = conn.compute.get_server(ident)
            conn.compute.delete_server(ident)
            conn.compute.wait_for_delete(
                server, wait=120, interval=0.25
            )  # fetched before: it may go at once
        else:
            volumes.wait_volume(conn, ident, "available")
            conn.block_storage.delete_volume(ident)


def test_lab_cloud_has_what_the_lab_needs(conn: Any) -> None:
    networks = {n.name for n in conn.network.networks()}
    assert {
        bootstrap.NETWORKS[pg][0] for pg in (STANDARD_PORTGROUP, *DISTRIBUTED_PORTGROUPS)
    } <= networks
    assert {bootstrap.volume_type_name(ds) for ds in DATASTORES} <= {
        t.name for t in conn.block_storage.types()
    }
    assert {f[0] for f in bootstrap.FLAVORS} <= {f.name for f in conn.compute.flavors()}
    assert conn.network.find_security_group(bootstrap.SECURITY_GROUP) is not None
    host = conn.compute.find_server(bootstrap.CONVERSION_HOST)
    assert host is not None and host.status == "ACTIVE"
    quotas = conn.get_volume_quotas(conn.current_project_id)
    assert quotas.volumes >= 1000


def test_volume_on_conversion_host_carries_bytes_to_a_booted_server(
    conn: Any, cleanup: list[tuple[str, str]]
) -> None:
    host = conn.compute.find_server(bootstrap.CONVERSION_HOST)
    volume = conn.block_storage.create_volume(size=1, name="seam-test", volume_type="localds-0")
    cleanup.append(("volume", volume.id))
    volumes.wait_volume(conn, volume.id, "available")
    volumes.attach(conn, host.id, volume.id)
    info = volumes.connection_info(conn, volume.id, host.id)
    device = Path(info["device_path"])
    assert device.is_file() and device.stat().st_size == 1024**3
    payload = os.urandom(4096) + b"ferry" * 1000
    with device.open("r+b") as dev:
        dev.seek(1024 * 1024)
        dev.write(payload)
    volumes.detach(conn, host.id, volume.id)
    conn.block_storage.set_volume_bootable_status(volume, True)

    net = conn.network.find_network(bootstrap.NETWORKS[STANDARD_PORTGROUP][0])
    server = conn.compute.create_server(
        name="seam-test",
        flavor_id=conn.compute.find_flavor("m1.small").id,
        networks=[{"uuid": net.id}],
        block_device_mapping=[
            {
                "boot_index": 0,
                "uuid": volume.id,
                "source_type": "volume",
                "destination_type": "volume",
                "delete_on_termination": False,
            }
        ],
    )
    cleanup.append(("server", server.id))
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=300, interval=0.25)
    booted = volumes.connection_info(conn, volume.id, server.id)
    with Path(booted["device_path"]).open("rb") as dev:
        dev.seek(1024 * 1024)
        assert dev.read(len(payload)) == payload
