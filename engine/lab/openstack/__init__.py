"""The lab's OpenStack: real keystone, glance, placement, cinder, neutron and nova from PyPI (in
their own venv, `.venv-openstack`), on MariaDB and RabbitMQ from Debian, all on 127.0.0.1.

`up` starts everything and creates the lab project's resources, handing every process it starts
to `record` at once, so a failure half-way can still stop exactly what was started.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openstack
import yaml

from engine.errors import LabError
from engine.lab.openstack import bootstrap, config, services
from engine.lab.openstack.config import Layout, Ports, Secrets
from engine.lab.processes import ProcessRecord


def default_venv() -> Path:
    """The OpenStack venv sits beside ferry's: <repo>/.venv-openstack."""
    return Path(
        os.environ.get("FERRY_OPENSTACK_VENV") or Path(sys.prefix).parent / ".venv-openstack"
    )


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def up(
    root: Path,
    record: Callable[[ProcessRecord], None],
    hosts: int = 1,
    say: Callable[[str], None] = lambda _: None,
) -> None:
    """Start the lab cloud under `root` and create its resources, with `hosts` conversion-host
    servers (ferry-conversion-01..NN, booted one after the other; `say` gets a line each)."""
    venv = default_venv()
    if not (venv / "bin" / "nova-compute").exists():
        raise LabError(f"the OpenStack venv {venv} is missing: run scripts/setup")
    lay = Layout(root, venv)
    lay.logs.mkdir(parents=True, exist_ok=True)
    ports, sec = services.allocate_ports(), Secrets.new()
    _write_private(root / "ports.json", json.dumps(ports.to_json(), indent=2))
    _write_private(root / "secrets.json", json.dumps(sec.to_json(), indent=2))
    services.write_configs(lay, ports, sec)
    services.prepare_config_dirs(lay)
    record(services.start_mariadb(lay, ports, sec))
    for started in services.start_rabbitmq(lay, ports):
        record(started)
    services.ferry_broker(lay, ports)
    services.db_syncs(lay, ports, sec)
    _start_apis(lay, ports, record)
    conn = bootstrap.admin(ports, sec)
    bootstrap.wait_compute(conn)
    services.run(
        lay,
        "nova-discover-hosts",
        [
            lay.bin("nova-manage"),
            "--config-file",
            str(lay.conf("nova")),
            "cell_v2",
            "discover_hosts",
        ],
    )
    project = bootstrap.lab_project(conn, sec)
    bootstrap.lab_resources(conn, project)
    _write_private(lay.clouds_yaml, yaml.safe_dump(config.clouds_yaml(ports, sec)))
    bootstrap.conversion_hosts(connect(root, "ferry-lab"), hosts, say)


def _start_apis(lay: Layout, ports: Ports, record: Callable[[ProcessRecord], None]) -> None:
    keystone, *others = services.APIS
    started = {keystone.name: services.start_api(lay, ports, keystone)}
    record(started[keystone.name])
    services.wait_apis(ports, started, [keystone])
    bootstrap.catalog(bootstrap.admin(ports, _secrets(lay.root)), ports, _secrets(lay.root))
    for api in others:
        started[api.name] = services.start_api(lay, ports, api)
        record(started[api.name])
    for name, conf in services.DAEMONS:
        record(services.start_daemon(lay, name, conf))
    services.wait_apis(ports, started, others)


RESTARTABLE = (
    *(api.name for api in services.APIS),
    *(name for name, _ in services.DAEMONS),
    "rabbitmq",
)


def restart(root: Path, name: str) -> ProcessRecord:
    """Start one stopped service again as `up` started it (same ports and configuration) and
    wait until it answers. For fault drills: `Lab.outage`."""
    lay = Layout(root, default_venv())
    ports = Ports(**json.loads((root / "ports.json").read_text()))
    if name == "rabbitmq":
        return services.start_rabbit_server(lay, ports)
    for api in services.APIS:
        if api.name == name:
            record = services.start_api(lay, ports, api)
            services.wait_apis(ports, {name: record}, [api])
            return record
    for daemon, conf in services.DAEMONS:
        if daemon == name:
            return services.start_daemon(lay, daemon, conf)
    raise LabError(f"{name!r} cannot be restarted (one of: {', '.join(RESTARTABLE)})")


def _secrets(root: Path) -> Secrets:
    return Secrets(**json.loads((root / "secrets.json").read_text()))


def broker(root: Path) -> tuple[str, Path]:
    """The agents' broker: (URL without password, the 0600 file holding the password)."""
    ports = Ports(**json.loads((root / "ports.json").read_text()))
    return services.broker_url(ports), root / services.BROKER_PASSWORD


def broker_consumer_timeout(root: Path, milliseconds: int | None) -> None:
    """Set the lab RabbitMQ's consumer_timeout (the milliseconds a delivery may stay
    unacknowledged before RabbitMQ closes its channel and requeues it; production's default is
    30 min) for channels opened from now on, and the channel tick that checks it (60 s by
    default) to half of it; None: back to those defaults. A runtime change (`rabbitmqctl eval
    application:set_env`), so a fault drill compresses the 30 minutes without restarting the
    broker. Raises LabError when rabbitmqctl fails."""
    lay = Layout(root, default_venv())
    ports = Ports(**json.loads((root / "ports.json").read_text()))
    timeout = 1_800_000 if milliseconds is None else int(milliseconds)
    # RabbitMQ checks the timeout at each channel tick (channel_tick_interval, 60 s by default)
    tick = 60_000 if milliseconds is None else max(500, min(timeout, 60_000) // 2)
    for key, value in (("consumer_timeout", timeout), ("channel_tick_interval", tick)):
        services.rabbitmq_eval(lay, ports, f"application:set_env(rabbit, {key}, {value}).")


def clouds_file(root: Path) -> Path:
    return root / "clouds.yaml"


def connect(root: Path, cloud: str) -> Any:
    """An openstacksdk connection to the lab cloud (`ferry-lab` or `ferry-lab-admin`)."""
    path = clouds_file(root)
    if not path.exists():
        raise LabError("the lab's OpenStack is not up: run `ferry lab up`")
    loader = openstack.config.OpenStackConfig(config_files=[str(path)], load_envvars=False)
    return openstack.connection.Connection(config=loader.get_one(cloud=cloud))
