"""Shared fixtures. The lab is started once per test session (in a temporary directory, so a
developer's own lab in ./state/lab is untouched) and stopped at the end.

FERRY_TEST_LAB_DIR=<dir> runs the tests against an already running lab instead (a developer's
shortcut while iterating; it is neither started nor stopped). CI never sets it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.lab import Lab
from engine.lab.openstack.services import free_port
from engine.lab.postgres import LabPostgres
from engine.lab.processes import ProcessRecord, stop_all
from engine.proc import live_processes
from engine.providers.vsphere.session import session


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.environ.get("FERRY_TEST_LAB_DIR"):
        yield Lab(Path(os.environ["FERRY_TEST_LAB_DIR"]))
        return
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.up()
    records = lab.processes()
    try:
        yield lab
    finally:
        lab.down()
        groups = {r.pid for r in records}
        leftovers = [p for p in live_processes() if p.pgid in groups or p.sid in groups]
        assert not leftovers, f"lab down left processes behind: {leftovers}"


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the state-store tests that do not need the whole lab (the
    lab's own, when a test has it, is `lab.postgres`)."""
    server = LabPostgres(tmp_path_factory.mktemp("postgres"))
    started: list[ProcessRecord] = []
    try:
        server.start(free_port(), started.append)
        yield server.dsn()
    finally:
        stop_all(started)
        server.remove()


@pytest.fixture(scope="session")
def si(lab: Lab) -> Iterator[Any]:
    with session(lab.vcenter_target()) as service_instance:
        yield service_instance


@pytest.fixture
def new_cloud_objects(lab: Lab) -> Iterator[None]:
    """What a test created in the lab cloud goes after it — servers, ports, Cinder snapshots,
    volumes, networks, security groups, in that order — so the next test plans from scratch."""
    conn = lab.openstack("ferry-lab")
    before = {
        "servers": {s.id for s in conn.compute.servers()},
        "ports": {p.id for p in conn.network.ports()},
        "snapshots": {s.id for s in conn.block_storage.snapshots()},
        "volumes": {v.id for v in conn.block_storage.volumes()},
        "networks": {n.id for n in conn.network.networks()},
        "security_groups": {g.id for g in conn.network.security_groups()},
    }
    yield
    for server in conn.compute.servers():
        if server.id not in before["servers"]:
            conn.compute.delete_server(server.id)
            conn.compute.wait_for_delete(server, wait=120)
    for port in conn.network.ports():
        if port.id not in before["ports"]:
            conn.network.delete_port(port.id)
    for snapshot in conn.block_storage.snapshots():
        if snapshot.id not in before["snapshots"]:
            conn.block_storage.delete_snapshot(snapshot.id)
            conn.block_storage.wait_for_delete(snapshot, wait=120)
    for volume in conn.block_storage.volumes():
        if volume.id not in before["volumes"]:
            conn.block_storage.delete_volume(volume.id)
            conn.block_storage.wait_for_delete(volume, wait=120)
    for network in conn.network.networks():
        if network.id not in before["networks"]:
            conn.network.delete_network(network.id)
    for group in conn.network.security_groups():
        if group.id not in before["security_groups"]:
            conn.network.delete_security_group(group.id)
