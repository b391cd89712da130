"""Health of the lab cloud, each service checked through its own protocol or API:
MariaDB's greeting, RabbitMQ's AMQP Connection.Start, and each OpenStack API with a real call."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openstack import exceptions as os_exc

from engine.lab.openstack.config import Ports
from engine.lab.processes import ProcessRecord, is_running
from engine.lab.status import ServiceStatus

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def greeting(port: int, send: bytes = b"", timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        if send:
            conn.sendall(send)
        return conn.recv(256)


def mariadb_detail(port: int) -> str:
    data = greeting(port)
    # Handshake v10: 4-byte header, protocol version 10, then the NUL-terminated server version.
    if len(data) < 6 or data[4] != 10:
        raise OSError("no MySQL handshake")
    return "MariaDB " + data[5 : data.index(b"\0", 5)].decode(errors="replace")


def rabbitmq_detail(port: int) -> str:
    frame = greeting(port, AMQP_HEADER)
    if not frame or frame[0] != 1:  # a METHOD frame: connection.start
        raise OSError("no AMQP connection.start")
    return "AMQP 0-9-1 connection.start received"


def _api_checks(conn: Any) -> dict[str, Callable[[], str]]:
    def cinder() -> str:
        states = {s.binary: s.state for s in conn.block_storage.services()}
        if states.get("cinder-volume") != "up" or states.get("cinder-scheduler") != "up":
            raise os_exc.SDKException(f"services: {states}")
        return f"{len(list(conn.block_storage.volumes(all_projects=True)))} volumes"

    def nova() -> str:
        down = [s.binary for s in conn.compute.services() if s.state != "up"]
        if down:
            raise os_exc.SDKException(f"down: {', '.join(down)}")
        return f"{len(list(conn.compute.servers(all_projects=True)))} servers"

    return {
        "keystone": lambda: f"token for {conn.current_user_id[:8]}… issued",
        "glance": lambda: f"{len(list(conn.image.images()))} images",
        "placement": lambda: f"{len(list(conn.placement.resource_providers()))} resource providers",
        "cinder": cinder,
        "neutron": lambda: f"{len(list(conn.network.networks()))} networks",
        "nova": nova,
    }


def check(
    root: Path, records: dict[str, ProcessRecord], connect: Callable[[], Any]
) -> list[ServiceStatus]:
    try:
        ports = Ports(**json.loads((root / "ports.json").read_text()))
    except (OSError, ValueError):
        return [ServiceStatus("openstack", False, "not started")]
    out = [
        _probe("mariadb", records, lambda: mariadb_detail(ports.mariadb)),
        _probe("rabbitmq", records, lambda: rabbitmq_detail(ports.rabbitmq)),
    ]
    try:
        checks = _api_checks(connect())
    except (os_exc.SDKException, OSError) as exc:
        return [*out, ServiceStatus("openstack", False, f"cannot connect: {exc}")]
    return out + [_probe(name, records, fn) for name, fn in checks.items()]


def _probe(name: str, records: dict[str, ProcessRecord], fn: Callable[[], str]) -> ServiceStatus:
    dead = [r.name for r in records.values() if _belongs(r.name, name) and not is_running(r)]
    if dead:
        return ServiceStatus(name, False, f"process exited: {', '.join(dead)}")
    try:
        return ServiceStatus(name, True, fn())
    except (os_exc.SDKException, OSError) as exc:
        return ServiceStatus(name, False, str(exc).splitlines()[0][:200])


def _belongs(process: str, service: str) -> bool:
    return (
        process == service
        or process.startswith(service + "-")
        or (service == "rabbitmq" and process == "epmd")
    )
