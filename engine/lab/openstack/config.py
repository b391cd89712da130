"""The lab cloud's configuration as data: ports, secrets, and each service's config files.

Pure: renders INI text from the lab's layout; nothing here starts or touches a service.
"""

from __future__ import annotations

import configparser
import io
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

Sections = dict[str, dict[str, str]]

DATABASES = (
    "keystone",
    "glance",
    "cinder",
    "neutron",
    "nova_api",
    "nova_cell0",
    "nova",
    "placement",
)
REGION = "RegionOne"
SERVICE_PROJECT = "service"
LAB_PROJECT = "ferry-lab"
LAB_USER = "ferry"
CINDER_BACKEND = "lab"


@dataclass(frozen=True)
class Ports:
    mariadb: int
    rabbitmq: int
    rabbitmq_dist: int
    epmd: int
    keystone: int
    glance: int
    cinder: int
    neutron: int
    nova: int
    placement: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Secrets:
    """Passwords of the lab cloud; stored in a 0600 file, never logged or put on argv."""

    db: str
    admin: str
    service: str
    user: str

    @staticmethod
    def new() -> Secrets:
        return Secrets(*(secrets.token_urlsafe(18) for _ in range(4)))

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Layout:
    """Where the lab cloud keeps its files, and where the OpenStack venv is."""

    root: Path
    venv: Path

    def dir(self, name: str) -> Path:
        return self.root / name

    def conf(self, name: str) -> Path:
        return self.root / "etc" / f"{name}.conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def paste(self, service: str, name: str) -> str:
        return str(self.venv / "etc" / service / name)


def render(sections: Sections) -> str:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    for name, values in sections.items():
        if name != "DEFAULT":
            parser.add_section(name)
        for key, value in values.items():
            parser.set(name, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def db_url(ports: Ports, sec: Secrets, name: str) -> str:
    return f"mysql+pymysql://ferry:{sec.db}@127.0.0.1:{ports.mariadb}/{name}?charset=utf8"


def transport_url(ports: Ports) -> str:
    return f"rabbit://guest:guest@127.0.0.1:{ports.rabbitmq}/"


def keystone_url(ports: Ports) -> str:
    return f"http://127.0.0.1:{ports.keystone}/v3"


def service_auth(ports: Ports, sec: Secrets, user: str) -> dict[str, str]:
    """keystoneauth password-plugin options for a service user."""
    return {
        "auth_url": keystone_url(ports),
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": SERVICE_PROJECT,
        "username": user,
        "password": sec.service,
        "region_name": REGION,
    }


def authtoken(ports: Ports, sec: Secrets, user: str) -> dict[str, str]:
    return {
        "www_authenticate_uri": keystone_url(ports),
        **service_auth(ports, sec, user),
        "service_token_roles_required": "true",
    }


# Queues and messages that survive a RabbitMQ restart, as production clouds run them: a request
# accepted by an API while the broker restarts is not lost on its way to the scheduler.
DURABLE = {"oslo_messaging_rabbit": {"amqp_durable_queues": "true"}}


def _common(lay: Layout, ports: Ports, name: str) -> dict[str, str]:
    return {
        "transport_url": transport_url(ports),
        "log_dir": str(lay.logs),
        "state_path": str(lay.dir(name)),
        "debug": "false",
        "graceful_shutdown_timeout": "5",
    }


def keystone(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    return {
        "DEFAULT": {"log_dir": str(lay.logs)},
        "database": {"connection": db_url(ports, sec, "keystone")},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": str(lay.dir("keystone") / "fernet-keys")},
        "credential": {"key_repository": str(lay.dir("keystone") / "credential-keys")},
    }


def glance(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    images = lay.dir("glance")
    return {
        "DEFAULT": {
            "log_file": str(lay.logs / "glance.log"),
            "enabled_backends": "fs:file",
            "bind_host": "127.0.0.1",
            "bind_port": str(ports.glance),
        },
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": str(images / "images")},
        "os_glance_staging_store": {"filesystem_store_datadir": str(images / "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": str(images / "tasks")},
        "database": {"connection": db_url(ports, sec, "glance")},
        "keystone_authtoken": authtoken(ports, sec, "glance"),
        "paste_deploy": {
            "flavor": "keystone",
            "config_file": lay.paste("glance", "glance-api-paste.ini"),
        },
        "oslo_concurrency": {"lock_path": str(images / "locks")},
    }


def placement(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    return {
        "DEFAULT": {"log_file": str(lay.logs / "placement.log")},
        "placement_database": {"connection": db_url(ports, sec, "placement")},
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": authtoken(ports, sec, "placement"),
    }


def cinder(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    conf = str(lay.conf("cinder"))
    return {
        "DEFAULT": {
            **_common(lay, ports, "cinder"),
            "auth_strategy": "keystone",
            "enabled_backends": CINDER_BACKEND,
            "my_ip": "127.0.0.1",
            "osapi_volume_listen": "127.0.0.1",
            "osapi_volume_workers": "1",
            "api_paste_config": lay.paste("cinder", "api-paste.ini"),
            "glance_api_servers": f"http://127.0.0.1:{ports.glance}",
            # a qcow2 image is fetched here and converted to raw into its volume (qemu-img)
            "image_conversion_dir": str(lay.dir("cinder") / "conversion"),
        },
        CINDER_BACKEND: {
            "volume_driver": "ferry_lab_plugins.cinder_driver.FileVolumeDriver",
            "volume_backend_name": CINDER_BACKEND,
            "ferry_volumes_dir": str(lay.dir("cinder") / "volumes"),
        },
        "database": {"connection": db_url(ports, sec, "cinder")},
        "keystone_authtoken": authtoken(ports, sec, "cinder"),
        "nova": service_auth(ports, sec, "cinder"),
        "service_user": {**service_auth(ports, sec, "cinder"), "send_service_user_token": "true"},
        "oslo_concurrency": {"lock_path": str(lay.dir("cinder") / "locks")},
        "oslo_messaging_notifications": {"driver": "noop"},
        **DURABLE,
        "cinder_sys_admin": {"helper_command": f"{lay.bin('privsep-helper')} --config-file {conf}"},
        "coordination": {"backend_url": f"file://{lay.dir('cinder') / 'coordination'}"},
    }


def neutron(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    return {
        "DEFAULT": {
            **_common(lay, ports, "neutron"),
            "core_plugin": "ml2",
            "service_plugins": "",
            "auth_strategy": "keystone",
            "api_paste_config": lay.paste("neutron", "api-paste.ini"),
            "notify_nova_on_port_status_changes": "false",
            "notify_nova_on_port_data_changes": "false",
            "api_workers": "1",
            "rpc_workers": "0",
            "rpc_state_report_workers": "0",
        },
        "database": {"connection": db_url(ports, sec, "neutron")},
        "keystone_authtoken": authtoken(ports, sec, "neutron"),
        "nova": service_auth(ports, sec, "nova"),
        "oslo_concurrency": {"lock_path": str(lay.dir("neutron") / "locks")},
        "oslo_messaging_notifications": {"driver": "noop"},
        **DURABLE,
        "ml2": {
            "type_drivers": "flat,vlan,vxlan",
            "tenant_network_types": "vxlan",
            "mechanism_drivers": "ferry_noagent",
            "extension_drivers": "port_security",
        },
        "ml2_type_vxlan": {"vni_ranges": "1000:1999"},
        "ml2_type_flat": {"flat_networks": "*"},
        "securitygroup": {"enable_security_group": "true", "firewall_driver": "noop"},
    }


def nova(lay: Layout, ports: Ports, sec: Secrets) -> Sections:
    return {
        "DEFAULT": {
            **_common(lay, ports, "nova"),
            "compute_driver": "fake.FakeDriver",
            "host": "ferry-lab-compute",
            "my_ip": "127.0.0.1",
            "osapi_compute_workers": "1",
            "cpu_allocation_ratio": "16.0",
            "ram_allocation_ratio": "16.0",
            "disk_allocation_ratio": "16.0",
            "vif_plugging_is_fatal": "false",
            "vif_plugging_timeout": "0",
        },
        "api": {"auth_strategy": "keystone"},
        "api_database": {"connection": db_url(ports, sec, "nova_api")},
        "database": {"connection": db_url(ports, sec, "nova")},
        "keystone_authtoken": authtoken(ports, sec, "nova"),
        "service_user": {**service_auth(ports, sec, "nova"), "send_service_user_token": "true"},
        "placement": service_auth(ports, sec, "placement"),
        "neutron": service_auth(ports, sec, "neutron"),
        "cinder": {**service_auth(ports, sec, "cinder"), "os_region_name": REGION},
        "glance": {"api_servers": f"http://127.0.0.1:{ports.glance}"},
        "conductor": {"workers": "1"},
        "scheduler": {"workers": "1", "discover_hosts_in_cells_interval": "2"},
        "wsgi": {"api_paste_config": lay.paste("nova", "api-paste.ini")},
        "oslo_concurrency": {"lock_path": str(lay.dir("nova") / "locks")},
        "oslo_messaging_notifications": {"driver": "noop"},
        **DURABLE,
        "notifications": {"notification_format": "unversioned"},
        "vnc": {"enabled": "false"},
    }


RENDERERS = {
    "keystone": keystone,
    "glance": glance,
    "placement": placement,
    "cinder": cinder,
    "neutron": neutron,
    "nova": nova,
}


def clouds_yaml(ports: Ports, sec: Secrets) -> dict[str, Any]:
    """clouds.yaml with the lab user's cloud (`ferry-lab`) and an admin cloud for the lab itself."""

    def cloud(user: str, password: str, project: str) -> dict[str, Any]:
        return {
            "auth": {
                "auth_url": keystone_url(ports),
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": REGION,
            "identity_api_version": 3,
            "interface": "public",
            "connect_retries": 3,
        }

    return {
        "clouds": {
            "ferry-lab": cloud(LAB_USER, sec.user, LAB_PROJECT),
            "ferry-lab-admin": cloud("admin", sec.admin, "admin"),
        }
    }
