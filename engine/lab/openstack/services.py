"""The lab cloud's processes: MariaDB and RabbitMQ (Debian), then keystone, glance, placement,
cinder, neutron and nova (PyPI, in the OpenStack venv), all on 127.0.0.1.

Each process is started with engine.lab.processes.spawn (own session, recorded by PID) so
`ferry lab down` stops exactly these. Database schema syncs run in parallel to save time.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LabError
from engine.lab.openstack import config
from engine.lab.openstack.config import Layout, Ports, Secrets
from engine.lab.processes import ProcessRecord, is_running, spawn

MARIADB_TIMEOUT = 60.0
RABBIT_TIMEOUT = 90.0
API_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allocate_ports() -> Ports:
    names = Ports.__dataclass_fields__
    chosen: set[int] = set()
    while len(chosen) < len(names):
        chosen.add(free_port())
    return Ports(*sorted(chosen))


def wait_for(
    what: str, ready: Callable[[], bool], records: Iterable[ProcessRecord], timeout: float
) -> None:
    """Poll `ready` until true; fail early (with the log's tail) if a process died."""
    deadline = time.monotonic() + timeout
    while not ready():
        for record in records:
            if not is_running(record):
                raise LabError(
                    f"{record.name} exited while starting {what}: " + _tail(Path(record.log))
                )
        if time.monotonic() > deadline:
            raise LabError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 4) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ready(port: int) -> bool:
    """The API answers HTTP at all (any status below 500)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def run(
    lay: Layout,
    step: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> None:
    """Run a setup command, output to logs/<step>.log; a failure raises with its tail."""
    log = lay.logs / f"{step}.log"
    with log.open("ab") as out:
        done = subprocess.run(
            argv,
            input=stdin.encode() if stdin else None,
            stdout=out,
            stderr=out,
            env=env,
            check=False,
            timeout=600,
        )
    if done.returncode != 0:
        raise LabError(f"{step} failed (exit {done.returncode}): {_tail(log)}")


# -- MariaDB --------------------------------------------------------------------------------------


def start_mariadb(lay: Layout, ports: Ports, sec: Secrets) -> ProcessRecord:
    data, sock = lay.dir("mariadb"), lay.dir("mariadb") / "mysqld.sock"
    run(
        lay,
        "mariadb-install-db",
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
    )
    record = spawn(
        "mariadb",
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--bind-address=127.0.0.1",
            f"--port={ports.mariadb}",
            f"--socket={sock}",
            f"--pid-file={data / 'mysqld.pid'}",
            "--innodb-buffer-pool-size=128M",
            "--max-connections=500",
            "--skip-name-resolve",
            "--innodb-flush-log-at-trx-commit=0",
            f"--log-error={lay.logs / 'mariadb.log'}",
        ],
        lay.logs / "mariadb.out",
    )
    wait_for(
        "MariaDB", lambda: sock.exists() and port_open(ports.mariadb), [record], MARIADB_TIMEOUT
    )
    statements = [f"CREATE DATABASE IF NOT EXISTS {db};" for db in config.DATABASES]
    statements += [
        f"CREATE USER 'ferry'@'127.0.0.1' IDENTIFIED BY '{sec.db}';",
        "GRANT ALL PRIVILEGES ON *.* TO 'ferry'@'127.0.0.1';",
        "FLUSH PRIVILEGES;",
    ]
    run(
        lay,
        "mariadb-setup",
        ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"],
        stdin="\n".join(statements),
    )
    return record


# -- RabbitMQ -------------------------------------------------------------------------------------


def rabbit_env(lay: Layout, ports: Ports) -> dict[str, str]:
    base = lay.dir("rabbitmq")
    return {
        **os.environ,
        "HOME": str(base),
        "RABBITMQ_NODENAME": "ferry-lab@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(ports.rabbitmq),
        "RABBITMQ_DIST_PORT": str(ports.rabbitmq_dist),
        "ERL_EPMD_PORT": str(ports.epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(lay.logs),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }


def rabbit_sbin() -> Path:
    found = sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/sbin"))
    if not found:
        raise LabError("RabbitMQ is not installed: run scripts/setup")
    return found[-1]


def start_rabbitmq(lay: Layout, ports: Ports) -> list[ProcessRecord]:
    """epmd (ours, on a private port, so RabbitMQ starts no daemon we cannot stop) and RabbitMQ."""
    base = lay.dir("rabbitmq")
    base.mkdir(parents=True, exist_ok=True)
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
    env = rabbit_env(lay, ports)
    epmd = spawn(
        "epmd",
        ["epmd", "-address", "127.0.0.1", "-port", str(ports.epmd)],
        lay.logs / "epmd.log",
        env=env,
    )
    wait_for("epmd", lambda: port_open(ports.epmd), [epmd], 10)
    return [epmd, start_rabbit_server(lay, ports, [epmd])]


def start_rabbit_server(
    lay: Layout, ports: Ports, others: list[ProcessRecord] | None = None
) -> ProcessRecord:
    """RabbitMQ itself (epmd already running), waited until it accepts connections."""
    rabbit = spawn(
        "rabbitmq",
        [str(rabbit_sbin() / "rabbitmq-server")],
        lay.logs / "rabbitmq.out",
        env=rabbit_env(lay, ports),
    )
    watched = [rabbit, *(others or [])]
    wait_for("RabbitMQ", lambda: port_open(ports.rabbitmq), watched, RABBIT_TIMEOUT)
    return rabbit


FERRY_VHOST = "ferry"  # the vhost and user of ferry's agents (issue 14), apart from OpenStack's
BROKER_PASSWORD = "broker-password"  # its file (0600) under the lab cloud's root


def ferry_broker(lay: Layout, ports: Ports) -> None:
    """RabbitMQ's vhost and user `ferry` for the agents (permissions on that vhost only), with a
    new password written to <root>/broker-password (0600) and given to rabbitmqctl on stdin,
    never on argv. Once per `lab up` (a new RabbitMQ has neither)."""
    password = secrets.token_urlsafe(18)
    file = lay.root / BROKER_PASSWORD
    file.touch(mode=0o600)
    file.chmod(0o600)
    file.write_text(password + "\n")
    env, ctl = rabbit_env(lay, ports), str(rabbit_sbin() / "rabbitmqctl")
    run(lay, "rabbitmq-ferry", [ctl, "--quiet", "add_vhost", FERRY_VHOST], env)
    run(lay, "rabbitmq-ferry", [ctl, "--quiet", "add_user", FERRY_VHOST], env, password + "\n")
    perms = ["set_permissions", "-p", FERRY_VHOST, FERRY_VHOST, ".*", ".*", ".*"]
    run(lay, "rabbitmq-ferry", [ctl, "--quiet", *perms], env)


def rabbitmq_eval(lay: Layout, ports: Ports, expression: str) -> None:
    """Evaluate an Erlang expression in the lab's RabbitMQ node (`rabbitmqctl eval`)."""
    env, ctl = rabbit_env(lay, ports), str(rabbit_sbin() / "rabbitmqctl")
    run(lay, "rabbitmq-eval", [ctl, "--quiet", "eval", expression], env)


def broker_url(ports: Ports) -> str:
    """The agents' broker URL (no password: it is in the broker-password file)."""
    return f"amqp://{FERRY_VHOST}@127.0.0.1:{ports.rabbitmq}/{FERRY_VHOST}"


# -- OpenStack ------------------------------------------------------------------------------


def write_configs(lay: Layout, ports: Ports, sec: Secrets) -> None:
    etc = lay.root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name, renderer in config.RENDERERS.items():
        lay.dir(name).mkdir(parents=True, exist_ok=True)
        path = lay.conf(name)
        path.touch(mode=0o600)
        path.write_text(config.render(renderer(lay, ports, sec)))
    (lay.dir("cinder") / "volumes").mkdir(exist_ok=True)


@dataclass(frozen=True)
class Step:
    """One setup command: `<service>-manage --config-file <service conf> args...`."""

    name: str
    tool: str
    conf: str
    args: tuple[str, ...]
    secret_env: bool = False  # gets OS_BOOTSTRAP_PASSWORD (keystone bootstrap)


_ROOT_OWNER = ("--keystone-user", "root", "--keystone-group", "root")
SETUP_CHAINS: tuple[tuple[Step, ...], ...] = (
    (
        Step("keystone-db-sync", "keystone-manage", "keystone", ("db_sync",)),
        Step("keystone-fernet", "keystone-manage", "keystone", ("fernet_setup", *_ROOT_OWNER)),
        Step(
            "keystone-credential", "keystone-manage", "keystone", ("credential_setup", *_ROOT_OWNER)
        ),
        Step(
            "keystone-bootstrap",
            "keystone-manage",
            "keystone",
            ("bootstrap", "--bootstrap-region-id", config.REGION),
            secret_env=True,
        ),
    ),
    (Step("glance-db-sync", "glance-manage", "glance", ("db_sync",)),),
    (Step("cinder-db-sync", "cinder-manage", "cinder", ("db", "sync")),),
    (Step("neutron-db-sync", "neutron-db-manage", "neutron", ("upgrade", "heads")),),
    (Step("placement-db-sync", "placement-manage", "placement", ("db", "sync")),),
    (
        Step("nova-api-db-sync", "nova-manage", "nova", ("api_db", "sync")),
        Step("nova-map-cell0", "nova-manage", "nova", ("cell_v2", "map_cell0")),
        Step(
            "nova-create-cell1",
            "nova-manage",
            "nova",
            ("cell_v2", "create_cell", "--name", "cell1"),
        ),
        Step("nova-db-sync", "nova-manage", "nova", ("db", "sync")),
    ),
)


def db_syncs(lay: Layout, ports: Ports, sec: Secrets) -> None:
    """Every schema sync and one-time setup: the chains run in parallel, steps in order."""
    with ThreadPoolExecutor(max_workers=len(SETUP_CHAINS)) as pool:
        futures = [pool.submit(_run_chain, lay, ports, sec, chain) for chain in SETUP_CHAINS]
        for future in futures:
            future.result()


def _run_chain(lay: Layout, ports: Ports, sec: Secrets, chain: tuple[Step, ...]) -> None:
    for step in chain:
        argv = [lay.bin(step.tool), "--config-file", str(lay.conf(step.conf)), *step.args]
        env = None
        if step.secret_env:
            url = config.keystone_url(ports)
            argv += [
                "--bootstrap-admin-url",
                url,
                "--bootstrap-public-url",
                url,
                "--bootstrap-internal-url",
                url,
            ]
            env = {**os.environ, "OS_BOOTSTRAP_PASSWORD": sec.admin}
        run(lay, step.name, argv, env=env)


@dataclass(frozen=True)
class Api:
    name: str
    wsgi: str
    port_of: Callable[[Ports], int]
    confs: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


APIS = (
    Api("keystone", "keystone.wsgi.api", lambda p: p.keystone, ("keystone",)),
    Api("glance", "glance.wsgi.api", lambda p: p.glance, ("glance",)),
    Api("placement", "placement.wsgi.api", lambda p: p.placement, ("placement",)),
    Api("cinder-api", "cinder.wsgi.api", lambda p: p.cinder, ("cinder",)),
    Api("neutron-api", "neutron.wsgi.api", lambda p: p.neutron, ("neutron",)),
    Api("nova-api", "nova.wsgi.osapi_compute", lambda p: p.nova, ("nova",)),
)

DAEMONS = (
    ("nova-conductor", "nova"),
    ("nova-scheduler", "nova"),
    ("nova-compute", "nova"),
    ("cinder-scheduler", "cinder"),
    ("cinder-volume", "cinder"),
)


def api_env(lay: Layout, api: Api) -> dict[str, str]:
    env = {
        **os.environ,
        "FERRY_LAB_WSGI_MODULE": api.wsgi,
        "FERRY_LAB_PROG": api.name,
        "FERRY_LAB_CONFIG_FILES": ";".join(str(lay.conf(c)) for c in api.confs),
        "FERRY_LAB_LOG_FILE": str(lay.logs / f"{api.name}.log"),
        "OS_KEYSTONE_CONFIG_FILES": str(lay.conf("keystone")),
        "OS_GLANCE_CONFIG_DIR": str(lay.root / "etc" / "glance"),
        "OS_PLACEMENT_CONFIG_DIR": str(lay.root / "etc" / "placement"),
        "OS_NOVA_CONFIG_DIR": str(lay.root / "etc" / "nova"),
    }
    return env


def prepare_config_dirs(lay: Layout) -> None:
    """glance, placement and nova read fixed file names from a directory: give them one each."""
    for name, files in (
        ("glance", {"glance-api.conf": "glance"}),
        ("placement", {"placement.conf": "placement"}),
        ("nova", {"nova.conf": "nova"}),
    ):
        directory = lay.root / "etc" / name
        directory.mkdir(parents=True, exist_ok=True)
        for filename, conf in files.items():
            target = directory / filename
            target.unlink(missing_ok=True)
            target.symlink_to(lay.conf(conf))
    nova_paste = lay.root / "etc" / "nova" / "api-paste.ini"
    nova_paste.unlink(missing_ok=True)
    nova_paste.symlink_to(lay.paste("nova", "api-paste.ini"))


def start_api(lay: Layout, ports: Ports, api: Api) -> ProcessRecord:
    # keep-alive well above client poll intervals: at gunicorn's default (2 s) a client polling
    # every 2 s reuses a connection the server is closing and gets "connection reset".
    argv = [
        lay.bin("gunicorn"),
        "--bind",
        f"127.0.0.1:{api.port_of(ports)}",
        "--workers",
        "1",
        "--threads",
        "8",
        "--worker-class",
        "gthread",
        "--timeout",
        "600",
        "--keep-alive",
        "75",
        "--no-control-socket",
        "--name",
        f"ferry-lab-{api.name}",
        "ferry_lab_plugins.wsgi:application",
    ]
    return spawn(api.name, argv, lay.logs / f"{api.name}.out", env=api_env(lay, api))


def start_daemon(lay: Layout, name: str, conf: str) -> ProcessRecord:
    return spawn(
        name, [lay.bin(name), "--config-file", str(lay.conf(conf))], lay.logs / f"{name}.out"
    )


def wait_apis(ports: Ports, records: dict[str, ProcessRecord], apis: Iterable[Api]) -> None:
    for api in apis:
        port = api.port_of(ports)
        wait_for(api.name, lambda port=port: http_ready(port), [records[api.name]], API_TIMEOUT)  # type: ignore[misc]
