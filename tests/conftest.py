"""Shared fixtures. The lab is started once per test session (in a temporary directory, so a
developer's own lab in ./state/lab is untouched) and stopped at the end.

The tests that need no lab run first (the unit tests, the lab-free integration tests), while
the lab starts in the background (`ferry lab up` in a process of its own, its output in
`<basetemp>/lab-up.log`); the lab's tests follow, each group in collection order. The lab's
start (about 100 s on CI's 2 cores) then overlaps the unit tests instead of preceding the
first lab test.

The tiny Debian guest of the slow conversion tier (tests marked `guest_image`) is built in the
background too when it is not cached (always on CI's fresh machine): a process of its own at
niceness 10, so it takes the CPU the unit tests and the lab leave idle, its output in
`<basetemp>/guest-build.log`; the `guest_image` fixture waits for it.

FERRY_TEST_LAB_DIR=<dir> runs the tests against an already running lab instead (a developer's
shortcut while iterating; it is neither started nor stopped). CI never sets it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from openstack import exceptions as os_exc

from engine.errors import UserError
from engine.lab import guest
from engine.lab.lab import Lab
from engine.lab.openstack.services import free_port
from engine.lab.postgres import LabPostgres
from engine.lab.processes import ProcessRecord, stop_all
from engine.proc import live_processes
from engine.providers.vsphere.session import session
from tests.kept import KEPT, outlives_test

ROOT = Path(__file__).parents[1]

# No per-example deadline: the unit tests run beside the lab's start on CI's 2 cores, where one
# example of test_addresses took 309 ms against Hypothesis's default 200 ms (a flaky failure).
settings.register_profile("ferry", deadline=None)
settings.load_profile("ferry")
LAB_UP_TIMEOUT = 1200.0  # seconds; `lab up` takes ~100 s on CI, minutes on a loaded machine
BUILD_GUEST = "from engine.lab.guest import tiny_debian; tiny_debian()"
GUEST_BUILD_TIMEOUT = 1800.0  # seconds; ~3 min on CI, 20 min on a machine shared by six labs


@dataclass
class _Starting:
    """A `ferry lab up` started in the background for this session."""

    root: Path
    process: subprocess.Popen[bytes]
    log: Path


_starting: list[_Starting] = []
_building: list[subprocess.Popen[bytes]] = []  # the guest image's background build
_labs: list[Lab] = []  # the session's lab: its services outlive every test


def _uses_lab(item: pytest.Item) -> bool:
    return "lab" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests without the lab first, then the lab's (a stable sort: each in its order)."""
    items.sort(key=_uses_lab)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the lab in the background when a selected test needs it (not with
    FERRY_TEST_LAB_DIR, nor for --collect-only)."""
    if session.config.option.collectonly:
        return
    factory: pytest.TempPathFactory = session.config._tmp_path_factory  # type: ignore[attr-defined]
    if any(item.get_closest_marker("guest_image") for item in session.items):
        _build_guest(factory.getbasetemp() / "guest-build.log")
    if os.environ.get("FERRY_TEST_LAB_DIR"):
        return
    if not any(_uses_lab(item) for item in session.items):
        return
    root = factory.mktemp("lab")
    log = root.parent / "lab-up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "lab", "up"],
            cwd=ROOT,
            env={**os.environ, "FERRY_LAB_DIR": str(root), "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the terminal's group: a Ctrl-C reaches pytest only
        )
    _starting.append(_Starting(root, process, log))


def _build_guest(log: Path) -> None:
    """Start building the conversion tier's guest image unless it is cached."""
    if guest.is_built(guest.image_path()):
        return
    with log.open("wb") as out:
        _building.append(
            subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "-c", BUILD_GUEST],  # takes idle CPU
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped as one at the session's end
            )
        )


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The tiny Debian guest image (engine.lab.guest): the background build waited for, then
    the cached image (built here when that build failed: its error is then this test's)."""
    while _building:
        build = _building.pop()
        try:
            build.wait(timeout=GUEST_BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, 9)  # the build this session started, by its process group
            build.wait()
    return guest.tiny_debian()


def _children() -> set[tuple[int, int]]:
    """This pytest's live child processes, as (pid, start time): a PID is reused only with
    another start time."""
    return {(p.pid, p.started) for p in live_processes() if p.ppid == os.getpid()}


def _stop(pid: int, grace: float) -> None:
    """Ctrl-C to a child ferry (its process group when it leads one, as a terminal's job: it
    settles what it did, e.g. powers back on a source it powered off), kill -9 after `grace`
    seconds; reaped."""
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        group = False
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.2)


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Iterator[None]:
    """The child processes a session- or module-scoped fixture starts (a PostgreSQL server, an
    agent) serve later tests too: kept from the leftover check, even when the fixture is first
    reached from inside a test (request.getfixturevalue: test_statestore's `postgres_dsn`)."""
    if fixturedef.scope == "function":
        yield
        return
    before = _children()
    yield
    KEPT.update(_children() - before)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """A test that fails or times out (pytest-timeout) before it ends an apply it started in
    the background leaves it running: a conversion that outlived its test ran on for 15 min
    and failed the next test that counted virt-v2v processes. Each child process a test
    started and left alive is stopped when the test ends (the lab's background start and the
    guest build are older than the test: left alone)."""
    before = _children()
    yield
    for pid, _ in sorted(_children() - before - KEPT - _lab_services()):
        _stop(pid, grace=60.0)


def _lab_services() -> set[tuple[int, int]]:
    """The lab's services as (pid, start time), read now: a fault drill's `lab.recover` starts
    one again as this pytest's child (stop 21's CI: the leftover check stopped the cinder-api
    test_fault_drills had recovered, and 43 later tests failed on connection refused)."""
    pids = {record.pid for lab in _labs for record in lab.processes()}
    return {(p.pid, p.started) for p in live_processes() if p.pid in pids}


def _started() -> Lab:
    """The lab the background `lab up` started, once it is up. Raises RuntimeError (its
    output's tail) when it failed or took more than LAB_UP_TIMEOUT."""
    starting = _starting.pop()
    try:
        code = starting.process.wait(timeout=LAB_UP_TIMEOUT)
    except subprocess.TimeoutExpired:
        starting.process.kill()
        starting.process.wait()
        code = -9
    if code != 0:
        tail = starting.log.read_text(errors="replace").splitlines()[-25:]
        with contextlib.suppress(UserError):  # what it started, when it did not stop it itself
            Lab(starting.root).down()
        raise RuntimeError(f"lab up failed (exit {code}):\n" + "\n".join(tail))
    return Lab(starting.root)


def pytest_sessionfinish() -> None:
    """A lab started in the background that no test took (the session ended first: -x, a
    Ctrl-C during the unit tests) is waited for and stopped; a guest build no test waited for
    is stopped (its process group, which this session started)."""
    while _building:
        build = _building.pop()
        if build.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(build.pid, 9)
            build.wait()
    while _starting:
        starting = _starting.pop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            starting.process.wait(timeout=LAB_UP_TIMEOUT)
        with contextlib.suppress(UserError):  # it failed, and stopped what it had started
            Lab(starting.root).down()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.environ.get("FERRY_TEST_LAB_DIR"):
        _labs.append(Lab(Path(os.environ["FERRY_TEST_LAB_DIR"])))
        yield _labs[-1]
        return
    if _starting:
        lab = _started()
    else:
        lab = Lab(tmp_path_factory.mktemp("lab"))
        lab.up()
    records = lab.processes()
    _labs.append(lab)
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
        for record in started:  # serves later tests, whichever test first asked for it
            outlives_test(record.pid)
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
    before = cloud_objects(conn)
    yield
    remove_new_objects(conn, before)


def cloud_objects(conn: Any) -> dict[str, set[str]]:
    """The ids of the lab cloud's servers, ports, snapshots, volumes, networks and groups."""
    return {
        "servers": {s.id for s in conn.compute.servers()},
        "ports": {p.id for p in conn.network.ports()},
        "snapshots": {s.id for s in conn.block_storage.snapshots()},
        "volumes": {v.id for v in conn.block_storage.volumes()},
        "networks": {n.id for n in conn.network.networks()},
        "security_groups": {g.id for g in conn.network.security_groups()},
    }


def remove_new_objects(conn: Any, before: dict[str, set[str]]) -> None:
    """Delete every object not in `before`, each tried even when another fails (one failure
    used to end the teardown, leaving the rest behind); AssertionError naming what is left."""
    problems: list[str] = []

    def attempt(what: str, delete: Callable[[], None]) -> None:
        try:
            delete()
        except Exception as exc:  # a teardown goes on, and says what failed
            problems.append(f"{what}: {exc}")

    for server in conn.compute.servers():
        if server.id not in before["servers"]:
            attempt(f"server {server.id}", lambda s=server: _delete_server(conn, s))
    for port in conn.network.ports():
        if port.id not in before["ports"]:
            attempt(f"port {port.id}", lambda p=port: conn.network.delete_port(p.id))
    for snapshot in conn.block_storage.snapshots():
        if snapshot.id not in before["snapshots"]:
            attempt(f"snapshot {snapshot.id}", lambda s=snapshot: _delete_snapshot(conn, s))
    for volume in conn.block_storage.volumes():
        if volume.id not in before["volumes"]:
            attempt(f"volume {volume.id}", lambda v=volume: _delete_volume(conn, v.id))
    for network in conn.network.networks():
        if network.id not in before["networks"]:
            attempt(f"network {network.id}", lambda n=network: conn.network.delete_network(n.id))
    for group in conn.network.security_groups():
        if group.id not in before["security_groups"]:
            attempt(f"group {group.id}", lambda g=group: conn.network.delete_security_group(g.id))
    assert not problems, f"the lab cloud kept what tests made: {problems}"


def _delete_server(conn: Any, server: Any) -> None:
    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, interval=DELETE_POLL, wait=120)


def _delete_snapshot(conn: Any, snapshot: Any) -> None:
    conn.block_storage.delete_snapshot(snapshot.id)
    conn.block_storage.wait_for_delete(snapshot, interval=DELETE_POLL, wait=120)


# seconds between the teardown's reads of a deleted object (openstacksdk's default is 2: each
# deletion waited whole 2 s steps, about 2 s of every lab test)
DELETE_POLL = 0.25
BUSY = ("creating", "attaching", "detaching", "extending", "reserved", "downloading")


def _delete_volume(conn: Any, volume_id: str) -> None:
    """A volume a test stopped mid-copy (an apply killed, or stopped while attaching) is still
    attached to the conversion host, or busy: Cinder deletes only an unattached, settled volume,
    so it is first let settle, detached through nova, then deleted."""
    volume = _settled(conn, volume_id)
    for attachment in volume.attachments or []:
        with contextlib.suppress(os_exc.NotFoundException):
            conn.compute.delete_volume_attachment(attachment["server_id"], volume_id)
    if volume.attachments:
        volume = _settled(conn, volume_id, also=("in-use",))
    if volume.status != "deleting":
        conn.block_storage.delete_volume(volume_id)
    conn.block_storage.wait_for_delete(volume, interval=DELETE_POLL, wait=120)


def _settled(conn: Any, volume_id: str, also: tuple[str, ...] = ()) -> Any:
    """The volume once its status is none of BUSY (nor `also`), within 120 s."""
    deadline = time.monotonic() + 120
    while True:
        volume = conn.block_storage.get_volume(volume_id)
        if volume.status not in (*BUSY, *also) or time.monotonic() > deadline:
            return volume
        time.sleep(DELETE_POLL)
