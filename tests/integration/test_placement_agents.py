"""Placement on agents (issue 14): with several conversion hosts and execution.broker, the plan
puts web01 and build-old on different hosts, and each VM's disk copies run on the agent of the
host it ends on (its own `ferry agent --host` process), byte-exact; state in the lab's
PostgreSQL, as several hosts need. The third host's server is deleted between the saved plan
and its apply: its VM is re-placed on the host the plan's rule picks among those whose agent
answers (the least loaded), not on the first host, whose agent is silent (stopped) then."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.lab import disks as lab_disks
from engine.lab.estate import LabVM, find_vm
from engine.lab.lab import Lab
from engine.lab.openstack.bootstrap import conversion_host, ensure_conversion_host
from engine.model.state import RECORDED_HOST
from engine.statestore import postgres_at
from tests.integration.agent_spec import agents_spec
from tests.integration.chaos import content_digest
from tests.integration.cli import ROOT, ferry, ferry_background
from tests.integration.converge import volume_file
from tests.integration.test_agents import STARTED, ready, start_agent, stop

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
HOSTS = ("ferry-conversion-01", "ferry-conversion-02")  # the lab's host, and one booted here
GONE = "ferry-conversion-gone"  # booted here; the plan places a VM there (3 slots); deleted
LISTED = ((HOSTS[0], 2), (HOSTS[1], 2), (GONE, 3))  # spec order, max_parallel
DISKS = {"web01": (2000, 2001), "build-old": (2000,)}


def spec_for(tmp_path: Path, schema: str) -> Path:
    """The demo spec for web01 and build-old (not verified: the test compares), the conversion
    hosts of LISTED, the lab's broker, state in PostgreSQL (`schema`)."""
    vms = [f"name: {vm}\n    verify: false\n" for vm in DISKS]
    return agents_spec(tmp_path / "two-hosts.yaml", schema, LISTED, vms)


def test_each_vm_is_copied_by_the_agent_of_the_host_the_plan_placed_it_on(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saved plan (JSON) places the larger VM on GONE (3 slots) and the other on the first
    host; GONE's server is deleted before the apply, which re-places its VM once, on
    ferry-conversion-02: the least loaded host whose agent answers its ping (nothing placed
    there; the old rule took the first host), said in a `replaced` event and a step line (the
    VM's log and the console say the same line: Context.say). The first host's agent is
    stopped (SIGSTOP) until that event: its silence on the ping is said in the reason, and the
    other VM's copies wait in its queue meanwhile (seconds). The apply's JSON
    events say which agent took each disk (the agent's own name, from its task state), each
    agent's log has exactly its VM's tasks, and each volume (a full copy, in sync) equals its
    source disk (sha256). A second agent for a host whose agent runs is one line, exit 1."""
    began = time.monotonic()
    dsn = lab.postgres.dsn()
    monkeypatch.setenv("FERRY_STATE_DSN", dsn)  # the agents' environment too
    schema = f"placement_{uuid.uuid4().hex[:8]}"
    spec = spec_for(tmp_path, schema)
    # booted here unless the lab has it (`lab up --hosts 2`); removed by new_cloud_objects
    cloud = lab.openstack("ferry-lab")
    ensure_conversion_host(cloud, HOSTS[1])
    gone = conversion_host(cloud, GONE)  # a name of its own: the test deletes it

    marks = {"boot": time.monotonic() - began}
    saved = tmp_path / "placed.plan.json"
    moved, ends = placed_by_plan(lab, spec, saved)
    delete_server(cloud, gone)

    marks["plan"] = time.monotonic() - began - sum(marks.values())
    logs = {h: tmp_path / f"agent-{h}.log" for h in HOSTS}
    events = apply_on_agents(lab, spec, saved, logs)
    marks["agents + apply"] = time.monotonic() - began - sum(marks.values())
    assert events[-1]["event"] == "apply_end" and events[-1]["ok"] is True
    said_moved(events, moved)
    taken = {
        e["message"].split(":")[0]: e["message"].split("taken by agent ")[1].split()[0]
        for e in events
        if e["event"] == "step" and "taken by agent " in e["message"]
    }
    expected = {f"vm.{vm}.disk[{k}]": ends[vm] for vm, keys in DISKS.items() for k in keys}
    assert taken == expected, taken
    for h in HOSTS:  # each agent ran its own VM's disks, no other (a task an earlier test's
        # coordinator left on the durable queue is refused, its apply gone: not run)
        lines = logs[h].read_text().splitlines()
        ran = sum(1 for line in lines if ": copy into volume " in line and line.endswith(" done"))
        assert ran == sum(1 for a in expected.values() if a == h), logs[h].read_text()[-2000:]

    resources = postgres_at(dsn, schema).open(create=False).read().resources
    for address, host in expected.items():  # the record in sync keeps the host that wrote it
        record = resources[address].attributes
        assert record["last_sync"]["kind"] == "full", record
        assert record[RECORDED_HOST] == record["last_sync"]["host"] == host, record
        vm, key = address.split(".")[1], int(address.split("[")[1].rstrip("]"))
        capacity = next(d.capacity for d in lab_vm(vm).disks if d.key == key)
        got = content_digest(volume_file(lab, str(record["volume_id"])), capacity)  # data only
        source = lab_disks.live_path(lab.disks, lab_vm(vm), key)
        assert got == content_digest(source, capacity), address
    report_per_host(lab, spec, tmp_path, ends)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in marks.items())
    applied = f"the apply's own {events[-1]['seconds']:.1f} s"
    print(
        f"\nthree hosts, one gone: {time.monotonic() - began:.0f} s ({phases}; {applied}); {ends}"
    )


def apply_on_agents(
    lab: Lab, spec: Path, saved: Path, logs: dict[str, Path]
) -> list[dict[str, Any]]:
    """Each host's agent started (its own process, logging to `logs[host]`), and the saved plan
    applied (--json) with the first host's agent stopped (SIGSTOP: silent on the
    re-placement's ping) until the apply says it re-placed a VM; meanwhile a second agent for
    the second host is refused (one line, exit 1). Every agent is stopped at the end. Returns
    the apply's events (it succeeded)."""
    try:
        agents = [start_agent(lab, spec, logs[h], host=h, wait=False) for h in HOSTS]
        for agent, h in zip(agents, HOSTS, strict=True):
            ready(agent, logs[h])
        twice = subprocess.Popen(  # while the apply runs (the running agent answers it)
            [sys.executable, "-m", "engine.cli", "agent", "--host", HOSTS[1], "--spec", str(spec)],
            cwd=ROOT,
            env={**os.environ, **lab.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.kill(agents[0].pid, signal.SIGSTOP)
        code, out, err = apply_resuming(lab, saved, agents[0])
        twice_out, twice_err = twice.communicate(timeout=120)
    finally:
        for started in STARTED:
            resume(started)
            stop(started)
        STARTED.clear()
    assert twice.returncode == 1 and twice_err.startswith(  # one agent per host
        f"error: an agent for conversion host {HOSTS[1]} already runs on this machine"
    ), twice_out + twice_err
    assert len(twice_err.splitlines()) == 1 and "Traceback" not in twice_out, twice_out
    assert code == 0, out + err
    return [json.loads(line) for line in out.splitlines()]


def apply_resuming(lab: Lab, saved: Path, agent: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """`ferry apply SAVED --json`, `agent` resumed (SIGCONT) once the apply says it re-placed a
    VM (its `replaced` event: the ping was answered); (exit code, stdout, stderr). Its stdout
    is read line by line to the end here (a read after a partial one loses what was
    buffered)."""
    apply = ferry_background(lab, "apply", str(saved), "--auto-approve", "--json")
    assert apply.stdout is not None and apply.stderr is not None
    out = []
    for line in apply.stdout:
        out.append(line)
        if '"event": "replaced"' in line:
            resume(agent)
    err = apply.stderr.read()
    return apply.wait(timeout=60), "".join(out), err


def resume(agent: subprocess.Popen[bytes]) -> None:
    """SIGCONT to a stopped agent (a running one ignores it)."""
    if agent.poll() is None:
        os.kill(agent.pid, signal.SIGCONT)


def placed_by_plan(lab: Lab, spec: Path, saved: Path) -> tuple[str, dict[str, str]]:
    """The plan (JSON, saved as `saved`) places the larger VM on GONE (3 slots: it finishes
    there earliest) and the other on the first host; (the VM on GONE, each VM's host once the
    apply moved it)."""
    plan = ferry(lab, "plan", str(spec), "--json", "--out", str(saved))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    placed = {v["name"]: v["conversion_host"] for v in json.loads(plan.stdout)["vms"]}
    assert set(placed) == set(DISKS) and set(placed.values()) == {HOSTS[0], GONE}, placed
    moved = next(vm for vm, h in placed.items() if h == GONE)
    return moved, {vm: HOSTS[1] if h == GONE else h for vm, h in placed.items()}


def delete_server(cloud: Any, server: Any) -> None:
    """Delete `server` and wait until the cloud has no server of its name."""
    cloud.compute.delete_server(server)
    cloud.compute.wait_for_delete(server, wait=120, interval=0.25)


def said_moved(events: list[dict[str, Any]], moved: str) -> None:
    """The apply re-placed `moved` once, from GONE to the second host (the least loaded whose
    agent answers; not the first, whose agent was silent), in a `replaced` event and a step
    line."""
    replaced = [e for e in events if e["event"] == "replaced"]
    assert [(e["vm"], e["placed"], e["host"]) for e in replaced] == [(moved, GONE, HOSTS[1])]
    why = replaced[0]["reason"]
    assert why.startswith(f"{GONE}, where the plan placed it, is gone"), why
    assert f"{HOSTS[1]} finishes it earliest" in why and f"{HOSTS[0]}: " in why, why
    assert why.endswith(f"; not {HOSTS[0]}: its agent does not answer)"), why  # stopped
    said = [e["message"] for e in events if e["event"] == "step"]
    line = f"vm.{moved}: re-placed from conversion host {GONE} to {HOSTS[1]}: {why}"
    assert said.count(line) == 1, said


def report_per_host(lab: Lab, spec: Path, tmp_path: Path, placed: dict[str, str]) -> None:
    """`ferry report` draws one lane group per host and totals each host: its VM, its copies
    and its throughput, data moved per second; the re-placed VM's notes say its move."""
    said = ferry(lab, "report", "--spec", str(spec), "--md", str(tmp_path / "report.md"))
    assert said.returncode == 0, said.stdout + said.stderr
    report = (tmp_path / "report.md").read_text()
    timeline = (tmp_path / "report.timeline.svg").read_text()
    headers = re.findall(r'<text class="host"[^>]*>([^<]+)</text>', timeline)
    assert headers == list(HOSTS), timeline
    for vm, h in placed.items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {h} | "))
        assert row.startswith(f"| {h} | 1 | {len(DISKS[vm])} | ") and row.endswith(" MiB/s |"), row
    assert "Holes skipped and zeros written are not data" in report
    assert f"UTC: re-placed from conversion host {GONE} to {HOSTS[1]}: " in report, report


def lab_vm(name: str) -> LabVM:
    vm = find_vm(name)
    assert vm is not None, name
    return vm
