"""A state connection lost during a cutover, on the lab's real PostgreSQL (break-it 12c item 6:
the source was left powered off, the apply said only "cannot unlock state").

The state is reached through a TCP proxy on 127.0.0.1 that the test cuts and restores. One
test, one replica of build-old (a small VM), two cutovers:
(b) the state unreachable from "source powered off" to the end of the apply: the source is
    powered back on from the apply's own knowledge, its snapshot removed, the apply says what
    is left and exits 1;
(a) access restored, the session is terminated (pg_terminate_backend) right after "source
    powered off": the apply reconnects, takes its lock again and completes the cutover; the
    replica is byte-exact and a re-plan changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.power import PowerOffPolicy, power_off, power_on, power_state
from engine.providers.vsphere.read import fetch_property
from engine.statestore import postgres_at
from tests.integration.cli import ROOT, ferry, ferry_background, until_line
from tests.integration.converge import assert_converged, records
from tests.integration.pgproxy import PgProxy, holder_backend, terminate
from tests.integration.test_cutover import spec_with, vm_ref

pytestmark = pytest.mark.lab
MiB = 1024**2
VM = "vm.build-old"
DSN_ENV = "FERRY_TEST_STATE_DSN"


@pytest.fixture
def build_old_off(si: Any, new_cloud_objects: None) -> Iterator[None]:
    """build-old is powered off again after the test (the estate's state)."""
    yield
    ref = vm_ref(si, "build-old")
    if power_state(si, ref) != "poweredOff":
        power_off(si, ref, PowerOffPolicy(graceful=False))


def with_state(spec: Path, schema: str) -> Path:
    spec.write_text(
        spec.read_text() + f"\nstate: {{backend: postgres, dsn_env: {DSN_ENV}, schema: {schema}}}\n"
    )
    return spec


def cutover_until(lab: Lab, spec: Path, env: dict[str, str], then: Any) -> tuple[int, str, str]:
    """Apply the cutover; when it says the source is powered off, `then()`; (rc, out, err)."""
    proc = ferry_background(lab, "apply", str(spec), "--target", VM, "--auto-approve", **env)
    seen = until_line(proc, "source powered off", then)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, seen + out, err


def ferry_snapshots(si: Any) -> list[str]:
    info = fetch_property(si, vm_ref(si, "build-old"), "snapshot")
    stack, names = list(info.rootSnapshotList) if info is not None else [], []
    while stack:
        tree = stack.pop()
        names.append(str(tree.name))
        stack.extend(tree.childSnapshotList or [])
    return [n for n in names if n.startswith("ferry-")]


def test_a_lost_state_connection_during_a_cutover(
    lab: Lab, si: Any, tmp_path: Path, build_old_off: None
) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    schema = f"state_loss_{uuid.uuid4().hex[:8]}"
    proxy = PgProxy(lab.postgres.dsn(), tmp_path)
    env = {DSN_ENV: proxy.start(), "FERRY_STATE_RETRY_SECONDS": "3", "COLUMNS": "200"}
    location = postgres_at(env[DSN_ENV], schema)
    try:
        replicate = with_state(spec_with(tmp_path, "build-old", "verify: false"), schema)
        done = ferry(lab, "apply", str(replicate), "--target", VM, "--auto-approve", **env)
        assert done.returncode == 0, done.stdout + done.stderr
        power_on(si, vm_ref(si, "build-old"))
        lab.write("build-old", 2000, 0, 4 * MiB, seed=61)
        settings = "mode: cutover\nconvert: false\nverify: false\npower_off: {policy: hard}"
        cutover = with_state(spec_with(tmp_path, "build-old", settings), schema)

        # (b) unreachable from the power-off on: powered back on, said, exit 1
        code, out, err = cutover_until(lab, cutover, env, proxy.cut)
        assert code == 1, out + err
        assert "vm.build-old: source powered back on (ferry powered it off at" in out, out
        assert "state not written: state postgresql://ferry@127.0.0.1:" in out, out
        last = out.strip().splitlines()
        error = next(line for line in last if line.startswith("error: state postgresql://"))
        assert f"127.0.0.1:{proxy.port}/ferry (schema {schema}" in error, error
        assert "unreachable: the connection was lost and not made again in 3 s" in error, error
        assert "not written: " in error and "cannot unlock" not in out + err, out + err
        assert power_state(si, vm_ref(si, "build-old")) == "poweredOn"
        assert ferry_snapshots(si) == []
        said = (ROOT / "state" / "logs" / "build-old.log").read_text().splitlines()
        assert any("source powered back on (ferry" in line for line in said[-5:]), said[-5:]

        # (a) access back; the session killed right after the power-off: reconnected, done
        proxy.restore()
        plan = ferry(lab, "plan", str(cutover), "--target", VM, **env)
        assert "powered back on by an apply that could not record it" in plan.stdout, plan.stdout
        killed: list[int] = []

        def kill() -> None:
            terminate(lab.postgres.dsn(), holder_backend(lab.postgres.dsn(), schema))
            killed.append(proxy.accepted)

        code, out, err = cutover_until(lab, cutover, env, kill)
        assert code == 0, out + err
        assert proxy.accepted > killed[0], "the apply did not connect again"
        assert power_state(si, vm_ref(si, "build-old")) == "poweredOff"
        found = records(location)
        assert found[f"{VM}.server"]["server_id"]
        assert location.open(create=False).read().lock is None  # released at the end
        assert_converged(lab, location, vm, server=True)  # the 4 MiB are on the volume
        again = ferry(lab, "plan", str(cutover), "--target", VM, "--json", **env)
        changes = json.loads(again.stdout)["changes"]
        assert [c for c in changes if c["action"] != "no-op"] == [], changes
    finally:
        proxy.close()
