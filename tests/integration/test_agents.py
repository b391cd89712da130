"""Distributed execution (issue 14): `ferry apply` with execution.broker sends each disk sync to
the conversion host's agent, a separate `ferry agent` process (a Celery worker on the lab's
RabbitMQ), and records state as an in-process apply does; an agent killed with SIGKILL mid-copy
gets the unacknowledged task again when it restarts (late ack) and the copy ends byte-exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from tests.integration.cli import ROOT, ferry
from tests.integration.converge import records, volume_file
from tests.kept import outlives_test

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
HOST = "ferry-conversion-01"
MiB = 1024**2
EXECUTION = """
execution:
  broker: ${FERRY_LAB_BROKER}
  broker_password_file: ${FERRY_BROKER_PASSWORD_FILE}
  timeout: 120
"""


def spec_for(tmp_path: Path) -> Path:
    """The demo spec for build-old and web01 (not verified), with the lab's broker."""
    head = (ROOT / "plans" / "demo.yaml").read_text().split("\nvms:")[0]
    spec = tmp_path / "spec.yaml"
    vms = "  - name: build-old\n  - name: web01\n    verify: false\n"
    spec.write_text(f"{head}\n{EXECUTION}\nvms:\n{vms}")
    return spec


STARTED: list[subprocess.Popen[bytes]] = []  # every agent a test started: stopped at its end


def start_agent(
    lab: Lab, spec: Path, log: Path, host: str = HOST, *, wait: bool = True
) -> subprocess.Popen[bytes]:
    """`ferry agent --host HOST` as its own process (own session), waited until its worker is
    ready (unless `wait` is False: then by `ready`). Its checkpoint journal, conversion logs and
    the state lineage it serves are under `agent_state(log)` (XDG_STATE_HOME): an agent of
    another test or lab on this machine serves another state."""
    log.write_text((log.read_text() if log.exists() else "") + "\n--- agent start\n")
    with log.open("ab") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "agent", "--host", host, "--spec", str(spec)],
            cwd=ROOT,
            env={
                **os.environ,
                **lab.env(),
                "PYTHONUNBUFFERED": "1",
                "XDG_STATE_HOME": str(agent_state(log)),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    STARTED.append(agent)
    outlives_test(agent.pid)  # a drill's restarted agent serves the module's later drills
    if wait:
        ready(agent, log)
    return agent


def agent_state(log: Path) -> Path:
    """The XDG_STATE_HOME of the agents logging beside `log`."""
    return log.parent / "agent-state"


def ready(agent: subprocess.Popen[bytes], log: Path) -> None:
    """Until the agent logging to `log` says its worker is ready (120 s at most)."""
    deadline = time.monotonic() + 120
    while "ready." not in log.read_text(errors="replace").split("agent start")[-1]:
        assert agent.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the agent did not get ready"
        time.sleep(0.2)


def stop(agent: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    if agent.poll() is None:
        os.kill(agent.pid, how)
        agent.wait(timeout=60)


def sha256_equal(lab: Lab, state: Path, vm_name: str, key: int) -> str:
    """The volume's sha256 over the disk's capacity, asserted equal to the source disk's."""
    vm = find_vm(vm_name)
    assert vm is not None
    capacity = next(d.capacity for d in vm.disks if d.key == key)
    volume_id = records(state)[f"vm.{vm_name}.disk[{key}]"]["volume_id"]
    got = file_digest(volume_file(lab, volume_id), capacity)
    assert got == file_digest(lab_disks.live_path(lab.disks, vm, key)), f"{vm_name} {key}"
    return got


def test_a_coordinator_sends_copies_to_an_agent_that_survives_a_kill(
    lab: Lab, tmp_path: Path
) -> None:
    """One spec, one agent at a time. build-old (`--target`; powered off, verified): its copy
    runs on the agent, the coordinator records it READY with the agent's sha256, equal to both
    sides. Then web01 (verify off) with its disk 2000 read slowly: the agent is killed (SIGKILL)
    once the coordinator recorded a checkpoint, started again, and the redelivered copy
    completes: the coordinator says so, the volume equals the disk."""
    log, state = tmp_path / "agent.log", tmp_path / "ferry.db"
    spec = spec_for(tmp_path)
    began = time.monotonic()
    agent = start_agent(lab, spec, log)
    try:
        done = ferry(
            lab, "apply", str(spec), "--auto-approve", "--state", str(state), "--target",
            "vm.build-old",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        said = " ".join(done.stdout.split())
        assert f"vm.build-old.disk[2000]: taken by agent {HOST}" in said, done.stdout
        record = records(state)["vm.build-old.disk[2000]"]
        assert record["last_sync"]["kind"] == "full"
        assert record["last_sync"]["verified"] == "whole disk"
        assert record["last_sync"]["sha256"] == sha256_equal(lab, state, "build-old", 2000)
        assert "Task ferry.sync[" in log.read_text() and "succeeded" in log.read_text()
        first = time.monotonic() - began

        agent = kill_mid_copy_and_restart(lab, spec, state, agent, log)
        drill = time.monotonic() - began - first
        stop(agent)
        no_agent_then_a_late_one(lab, spec, state, log)
        secret = Path(lab.env()["FERRY_BROKER_PASSWORD_FILE"]).read_text().strip()
        files = [f for f in tmp_path.rglob("*") if f.is_file()]  # agent log, states, VM logs
        assert len(files) > 3 and not [f for f in files if secret.encode() in f.read_bytes()]
        assert secret not in done.stdout + done.stderr
    finally:
        for started in STARTED:
            stop(started)
    rest = time.monotonic() - began - first - drill
    print(f"\nagent apply {first:.0f} s; kill -9 drill {drill:.0f} s; no agent {rest:.0f} s")


def no_agent_then_a_late_one(lab: Lab, spec: Path, state: Path, log: Path) -> None:
    """No agent runs: web01's delta waits 5 s (execution.timeout) and fails naming the host's
    queue. An agent started later gets that task and does not run it: its apply is gone."""
    nowait = spec.with_name("nowait.yaml")
    nowait.write_text(spec.read_text().replace("timeout: 120", "timeout: 5"))
    failed = ferry(
        lab, "apply", str(nowait), "--auto-approve", "--state", str(state), "--target", "vm.web01"
    )
    said = " ".join(failed.stdout.split())
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, said + failed.stderr
    assert f"no agent took the copy from queue ferry.host.{HOST} in 5 s" in said, said
    assert f"is `ferry agent --host {HOST}` running" in said, said
    start_agent(lab, nowait, log)
    deadline = time.monotonic() + 60
    while "no longer waits for it: not run" not in log.read_text().split("agent start")[-1]:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def kill_mid_copy_and_restart(
    lab: Lab, spec: Path, state: Path, agent: subprocess.Popen[bytes], log: Path
) -> subprocess.Popen[bytes]:
    disk = "vm.web01.disk[2000]"
    for i in range(2):
        lab.write("web01", 2000, i * 256 * MiB, 64 * MiB, seed=1400 + i)
    lab.read_delay("web01", 2000, 1000)
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "apply", str(spec), "--auto-approve",
         "--state", str(state)],
        cwd=ROOT,
        env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not state.exists() or not int(records(state).get(disk, {}).get("copied_bytes", 0)):
            assert coordinator.poll() is None, coordinator.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.1)
        mark = int(records(state)[disk]["copied_bytes"])
        stop(agent, signal.SIGKILL)
        lab.read_errors("web01", 2000, None)  # heal: the redelivered copy reads at full speed
        agent = start_agent(lab, spec, log)
        out, _ = coordinator.communicate(timeout=300)
    finally:
        lab.read_errors("web01", 2000, None)
        if coordinator.poll() is None:
            coordinator.kill()
    assert coordinator.returncode == 0, out
    said = " ".join(out.split())
    assert f"{disk}: taken again (redelivered) by agent {HOST}" in said, out
    record = records(state)[disk]
    assert record["last_sync"]["kind"] == "full" and record["change_id"]
    sha256_equal(lab, state, "web01", 2000)
    sha256_equal(lab, state, "web01", 2001)
    print(
        f"\nkilled at checkpoint {mark} bytes; redelivered copy read {record['last_sync']['bytes']}"
    )
    return agent
