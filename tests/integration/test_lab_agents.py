"""`ferry lab agents` on the lab (issue 14): for plans/demo-3-hosts.yaml, three `ferry agent
--host` processes, one per conversion host, each the worker of its own host on the lab's broker,
no password on any command line or in their logs; their PIDs in the lab directory; `--stop`
stops exactly them. Hosts the lab lacks (it boots one unless `lab up --hosts 3`) boot here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.lab import agents as lab_agents
from engine.lab.lab import Lab
from engine.lab.openstack.bootstrap import ensure_conversion_host, host_name
from engine.lab.processes import is_running
from tests.integration.cli import ROOT, ferry

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
SPEC = ROOT / "plans" / "demo-3-hosts.yaml"
HOSTS = [host_name(n) for n in (1, 2, 3)]


def test_lab_agents_runs_one_agent_process_per_host_and_stops_exactly_them(lab: Lab) -> None:
    began = time.monotonic()
    conn = lab.openstack("ferry-lab")
    for name in HOSTS:
        ensure_conversion_host(conn, name)
    booted = time.monotonic() - began
    try:
        started = ferry(lab, "lab", "agents", "--spec", str(SPEC))
        assert started.returncode == 0, started.stdout + started.stderr
        agents = lab_agents.recorded(lab.root)
        assert [a.name for a in agents] == [f"agent {h}" for h in HOSTS], started.stdout
        assert len({a.pid for a in agents}) == 3 and all(is_running(a) for a in agents)
        password = Path(lab.env()["FERRY_BROKER_PASSWORD_FILE"]).read_text().strip()
        for agent, host in zip(agents, HOSTS, strict=True):
            command = Path(f"/proc/{agent.pid}/cmdline").read_bytes().split(b"\0")
            assert command[-5:-1] == [b"--host", host.encode(), b"--spec", str(SPEC).encode()]
            assert password.encode() not in b" ".join(command)
            log = Path(agent.log).read_text()
            assert f"{agent.name} ready (pid {agent.pid}" in started.stdout
            assert f"ferry-agent-{host}@" in log and password not in log, log[-2000:]
        ready = time.monotonic() - began - booted
        stopped = ferry(lab, "lab", "agents", "--stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert (
            stopped.stdout
            == "stopped " + ", ".join(f"{a.name} (pid {a.pid})" for a in agents) + "\n"
        )
        assert not any(is_running(a) for a in agents)
    finally:
        lab_agents.stop(lab.root)
    print(
        f"\nlab agents: {time.monotonic() - began:.0f} s (boot {booted:.0f} s, ready {ready:.0f} s)"
    )
