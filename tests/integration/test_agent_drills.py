"""Issue 14's fault drills on agents: copies that run on a conversion host's `ferry agent` (a
Celery worker on the lab's RabbitMQ) while something dies.

1. The agent is killed (SIGKILL) mid-copy: the task is redelivered when it restarts and the copy
   resumes from the dead agent's last checkpoint (its journal), not from the job's start.
2. The coordinator (`ferry apply`) is killed mid-copy: the agent notices its apply is gone (the
   reply queue went with its connection) and stops at a checkpoint; a new apply takes over (the
   lock), its copy of the volume waits for the old one to stop (one writer), one volume,
   byte-exact.
3. RabbitMQ restarts mid-copy: the apply completes or fails with one line, a re-run converges.
4. A host's agent never comes up: its VM waits with a status line naming the host, then fails
   after execution.timeout naming it; the other host's VM completes.

Each copy is build-old's disk (powered off: one full copy, unverified; 234 MiB of data in 2 GiB
once the module wrote 192 MiB more, ~120 reads of 2 MiB: ~4 times the copy's 32 reads in
flight), each read delayed 2.5 s (the lab's read-delay fault) so that the copy lasts long enough
to be interrupted at a checkpoint (a round of reads a checkpoint)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.executor.agent import Served, default_checkpoints
from engine.lab import disks as lab_disks
from engine.lab.estate import LabVM, find_vm
from engine.lab.lab import Lab
from engine.lab.openstack.bootstrap import ensure_conversion_host
from engine.statestore import postgres_at
from tests.integration.cli import ROOT, ferry, ferry_background
from tests.integration.converge import assert_converged, data_after, records
from tests.integration.test_agents import (
    EXECUTION,
    HOST,
    STARTED,
    agent_state,
    ready,
    start_agent,
    stop,
)

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
VM = "build-old"
DISK = f"vm.{VM}.disk[2000]"
MiB = 1024**2
SLOW = 2500  # ms a read of build-old's disk waits during a drill: ~4 rounds of reads
EXTRA = tuple((256 * i, 1400 + i) for i in range(1, 7))  # MiB offsets, seeds of 32 MiB written
SECONDS: dict[str, float] = {}  # each drill's, printed at the module's end


def vm(name: str = VM) -> LabVM:
    found = find_vm(name)
    assert found is not None, name
    return found


def write_spec(path: Path, hosts: tuple[str, ...], extra: str = "", vms: str = "") -> Path:
    """The demo spec with `hosts` (two copy slots each), the lab's broker and build-old
    (unverified) plus `vms` lines."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    listed = text[text.index("conversion_hosts:") : text.index("\ndefaults:")]
    entries = "".join(
        f"  - name: {h}\n    max_parallel: 2\n    devices: connection-info\n" for h in hosts
    )
    head = text.replace(listed, f"conversion_hosts:\n{entries}").split("\nvms:")[0]
    path.write_text(f"{head}\n{EXECUTION}\n{extra}\nvms:\n  - name: {VM}\n    verify: false\n{vms}")
    return path


@pytest.fixture(scope="module")
def one_agent(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One spec (the lab's conversion host) and its agent, shared by drills 1-3 (each its own
    SQLite state, so each copies build-old whole)."""
    for offset, seed in EXTRA:  # the same bytes at each run: several rounds of reads to copy
        lab.write(VM, 2000, offset * MiB, 32 * MiB, seed=seed)
    root = tmp_path_factory.mktemp("agent-drills")
    spec = write_spec(root / "spec.yaml", (HOST,))
    log = root / "agent.log"
    setup = {"spec": spec, "log": log, "agent": start_agent(lab, spec, log)}
    try:
        yield setup
    finally:
        lab.read_errors(VM, 2000, None)
        for started in STARTED:
            stop(started)
        STARTED.clear()
        print("\nagent drills: " + ", ".join(f"{k} {v:.0f} s" for k, v in SECONDS.items()))


def coordinator(lab: Lab, spec: Path, state: Path) -> subprocess.Popen[str]:
    """`ferry apply --json` in the background, its own session, on a state of its own: the
    shared agent (its log beside `spec`) forgets the state it served (it serves one, and reads
    its record at each task), as `ferry agent --forget-lineage` does."""
    home = {"XDG_STATE_HOME": str(agent_state(spec.parent / "agent.log"))}
    Served.forget(default_checkpoints(HOST, home))
    args = ("apply", str(spec), "--auto-approve", "--json", "--state", str(state))
    return ferry_background(lab, *args)


def first_checkpoint(state: Path, apply: subprocess.Popen[str]) -> int:
    """Until the state records a checkpoint of build-old's copy (120 s at most): its bytes."""
    deadline = time.monotonic() + 120
    while not state.exists() or not int(records(state).get(DISK, {}).get("copied_bytes", 0)):
        assert apply.poll() is None, apply.communicate()
        assert time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.1)
    return int(records(state)[DISK]["copied_bytes"])


def events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def said(found: list[dict[str, Any]]) -> str:
    return "\n".join(str(e.get("message", "")) for e in found if e.get("event") == "step")


def test_a_redelivered_copy_resumes_from_the_dead_agents_checkpoint(
    lab: Lab, one_agent: dict[str, Any], tmp_path: Path
) -> None:
    """Drill 1: SIGKILL of the agent once a checkpoint is recorded; restarted, the agent gets
    the task again and copies from its journaled checkpoint: the redelivered copy reads only the
    data beyond it (the old code read the whole 234 MiB again), the volume equals the disk."""
    began, state = time.monotonic(), tmp_path / "ferry.db"
    lab.read_delay(VM, 2000, SLOW)
    apply = coordinator(lab, one_agent["spec"], state)
    try:
        mark = first_checkpoint(state, apply)
        stop(one_agent["agent"], signal.SIGKILL)
        lab.read_errors(VM, 2000, None)
        one_agent["agent"] = start_agent(lab, one_agent["spec"], one_agent["log"])
        out, err = apply.communicate(timeout=300)
    finally:
        lab.read_errors(VM, 2000, None)
        if apply.poll() is None:
            os.killpg(apply.pid, signal.SIGKILL)
    assert apply.returncode == 0 and "Traceback" not in err, out + err
    lines = said(events(out))
    again = re.search(
        rf"{re.escape(DISK)}: taken again \(redelivered\) by agent {HOST} .*resumed at its "
        r"checkpoint, byte (\d+)",
        lines,
    )
    assert again, lines
    resumed = int(again.group(1))
    source_disk = next(d for d in vm().disks if d.key == 2000)
    assert source_disk.capacity > resumed >= mark > 0, "killed mid-copy"
    source = lab_disks.live_path(lab.disks, vm(), 2000)
    read = int(records(state)[DISK]["last_sync"]["bytes"])
    assert read <= data_after(source, resumed) + 2 * MiB, (read, data_after(source, resumed))
    assert read < data_after(source, 0), "the redelivered copy started over"
    assert_converged(lab, state, vm(), server=False)
    SECONDS["agent killed"] = time.monotonic() - began
    print(
        f"\nagent killed at checkpoint {mark}; redelivered copy resumed at {resumed}, read "
        f"{read} of {data_after(source, 0)} data bytes"
    )


AGENT_LINE = re.compile(r"task (\S+?):? (.*)$")


def agent_lines(log: Path, marker: str) -> list[tuple[str, str]]:
    """(task ID, what) of the agent's own lines about its tasks since `marker`, in order."""
    text = log.read_text(errors="replace")
    found = []
    for line in text[text.rindex(marker) :].splitlines():
        match = AGENT_LINE.search(line)
        if match and "ferry.sync[" not in line:
            found.append((match.group(1), match.group(2)))
    return found


def test_a_killed_coordinators_copy_stops_and_a_new_apply_takes_over(
    lab: Lab, one_agent: dict[str, Any], tmp_path: Path
) -> None:
    """Drill 2: SIGKILL of `ferry apply` once a checkpoint is recorded, and a new apply at once.
    The agent's copy stops at a checkpoint within seconds (its apply's reply queue is gone; the
    old code copied on to the end, a second writer beside the new apply's copy); the new apply
    takes the lock over, its copy starts only after the old one ended, one volume, byte-exact."""
    began, state, log = time.monotonic(), tmp_path / "ferry.db", one_agent["log"]
    marker = f"--- drill 2 {uuid.uuid4().hex}"
    log.write_text(log.read_text() + f"\n{marker}\n")
    lab.read_delay(VM, 2000, SLOW)
    apply = coordinator(lab, one_agent["spec"], state)
    try:
        mark = first_checkpoint(state, apply)
        checkpointed = time.monotonic() - began
        os.killpg(apply.pid, signal.SIGKILL)
        killed = time.monotonic()
        apply.communicate(timeout=30)
        while "sent it is gone" not in log.read_text(errors="replace").split(marker)[-1]:
            assert time.monotonic() - killed < 30, "the agent did not notice its apply is gone"
            time.sleep(0.1)
        noticed = time.monotonic() - killed
        lab.read_errors(VM, 2000, None)
        again = ferry(lab, "apply", str(one_agent["spec"]), "--auto-approve", "--json",
                      "--state", str(state))  # fmt: skip
        took = time.monotonic() - killed
    finally:
        lab.read_errors(VM, 2000, None)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stdout + again.stderr
    tasks = agent_lines(log, marker)
    starts = [i for i, (_, what) in enumerate(tasks) if " from byte " in what]
    assert len(starts) == 2, tasks
    old, new = tasks[starts[0]][0], tasks[starts[1]][0]
    gone = [
        i for i, (t, what) in enumerate(tasks) if t == old and "apply that sent it is gone" in what
    ]
    ended = [i for i, (t, what) in enumerate(tasks) if t == old and what.startswith("ended")]
    assert gone and ended, f"the killed apply's copy did not stop: {tasks}"
    assert ended[0] < starts[1], f"two copies into one volume at once: {tasks}"
    assert tasks[ended[0]][1].startswith("ended: stopped at "), tasks
    assert new != old
    assert_converged(lab, state, vm(), server=False)  # one volume, byte-equal
    SECONDS["coordinator killed"] = time.monotonic() - began
    print(
        f"\ncoordinator killed {checkpointed:.1f} s after its start at checkpoint {mark}; the "
        f"agent noticed {noticed:.1f} s later and {tasks[ended[0]][1]}; the new apply ended "
        f"{took:.0f} s after the kill"
    )


def test_a_rabbitmq_restart_mid_copy_ends_cleanly_and_a_rerun_converges(
    lab: Lab, one_agent: dict[str, Any], tmp_path: Path
) -> None:
    """Drill 3: RabbitMQ stopped and started again once a checkpoint is recorded. The apply
    completes, or fails with one line per failure and no traceback; the agent survives and a
    re-run converges byte-exact."""
    began, state = time.monotonic(), tmp_path / "ferry.db"
    lab.read_delay(VM, 2000, SLOW)
    apply = coordinator(lab, one_agent["spec"], state)
    try:
        first_checkpoint(state, apply)
        lab.outage("rabbitmq")
        lab.recover("rabbitmq")
        lab.read_errors(VM, 2000, None)
        out, err = apply.communicate(timeout=300)
    finally:
        lab.read_errors(VM, 2000, None)
        if apply.poll() is None:
            os.killpg(apply.pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    if apply.returncode == 0:
        outcome = "completed"
    else:
        failed = [e for e in events(out) if e.get("outcome") == "failed"]
        assert failed and all("\n" not in e["error"].strip() for e in failed), out + err
        rerun = ferry(lab, "apply", str(one_agent["spec"]), "--auto-approve",
                      "--state", str(state))  # fmt: skip
        tail = "\n".join(one_agent["log"].read_text().splitlines()[-40:])
        assert rerun.returncode == 0, f"{rerun.stdout}{rerun.stderr}\nagent log:\n{tail}"
        outcome = f"failed in one line ({failed[0]['error'][:300]}), re-run converged"
    assert one_agent["agent"].poll() is None, "the agent died with the broker"
    assert_converged(lab, state, vm(), server=False)
    SECONDS["RabbitMQ restarted"] = time.monotonic() - began
    print(f"\nRabbitMQ restarted mid-copy: {outcome}")


def test_a_host_whose_agent_never_comes_up_fails_its_vms_only(
    lab: Lab, one_agent: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drill 4: two hosts, web01 pinned to one whose agent never starts. Its disks wait with a
    status line naming the host (a JSON step event), then fail after execution.timeout (5 s)
    naming the host, in one line; build-old, on the host whose agent runs, completes."""
    began = time.monotonic()
    other = "ferry-conversion-02"
    monkeypatch.setenv("FERRY_STATE_DSN", lab.postgres.dsn())  # the agent's environment too
    schema = f"drills_{uuid.uuid4().hex[:8]}"
    state = f"state: {{backend: postgres, dsn_env: FERRY_STATE_DSN, schema: {schema}}}\n"
    pinned = f"  - name: web01\n    verify: false\n    conversion_host: {other}\n"
    spec = write_spec(tmp_path / "two-hosts.yaml", (HOST, other), state, pinned)
    spec.write_text(spec.read_text().replace("timeout: 120", "timeout: 5"))
    ensure_conversion_host(lab.openstack("ferry-lab"), other)  # new_cloud_objects removes it
    booted = time.monotonic() - began
    stop(one_agent["agent"], signal.SIGKILL)  # idle; one agent per host: this spec's replaces it
    log = tmp_path / "agent.log"
    agent = start_agent(lab, spec, log)
    started = time.monotonic() - began
    try:
        done = ferry(lab, "apply", str(spec), "--auto-approve", "--json")
        print(f"\nboot {booted:.0f} s, agent {started:.0f} s, apply {time.monotonic() - began:.0f}")
    finally:
        stop(agent, signal.SIGKILL)  # idle (a SIGTERM waits for Celery's shutdown, ~10 s)
        one_agent["agent"] = start_agent(lab, one_agent["spec"], one_agent["log"], wait=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    found = events(done.stdout)
    lines = said(found)
    for key in (2000, 2001):
        waiting = (
            f"vm.web01.disk[{key}]: waiting for an agent on conversion host {other} to take "
            "the copy (queue "
            f"ferry.host.{other}; fails after 5 s without one, execution.timeout)"
        )
        assert waiting in lines, lines
    failed = [e for e in found if e.get("outcome") == "failed"]
    assert failed and all("\n" not in e["error"].strip() for e in failed), failed
    assert any(
        f"no agent took the copy from queue ferry.host.{other} in 5 s" in e["error"]
        and f"`ferry agent --host {other}`" in e["error"]
        for e in failed
    ), failed
    assert not [e for e in failed if VM in json.dumps(e)], failed
    resources = postgres_at(lab.postgres.dsn(), schema).open(create=False).read().resources
    record = resources[DISK].attributes
    assert record["last_sync"]["kind"] == "full", record
    ready(one_agent["agent"], one_agent["log"])
    SECONDS["agent never up"] = time.monotonic() - began
