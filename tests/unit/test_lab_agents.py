"""`ferry lab up --hosts N` and `ferry lab agents` (issue 14), without a lab: --hosts reaches
Lab.up and boots ferry-conversion-01..NN (a fake cloud records the servers), a bad count is one
line that starts nothing, and the agents are real processes (a stand-in command that says
'ready.' as Celery's worker does) whose PIDs the lab directory records: `--stop` and `lab down`
stop exactly them and no other process, and an agent that exits is one line naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.cli import lab as lab_cli
from engine.cli.app import _run
from engine.errors import LabError, UserError
from engine.lab import agents as lab_agents
from engine.lab.lab import Lab
from engine.lab.openstack import bootstrap
from engine.lab.processes import ProcessRecord, is_running
from engine.proc import start_time

READY = "import time; print('ready.', flush=True); time.sleep(120)"


def ferry(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(sys, "argv", ["ferry", *argv])
    return _run()


def test_lab_up_hosts_reaches_the_lab_and_a_bad_count_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[int] = []

    def up(self: Lab, progress: Any = None, hosts: int = 1) -> float:
        asked.append(hosts)
        return 1.0

    monkeypatch.setattr(Lab, "up", up)
    assert ferry(monkeypatch, "lab", "up", "--dir", str(tmp_path), "--hosts", "3") == 0
    assert ferry(monkeypatch, "lab", "up", "--dir", str(tmp_path)) == 0
    assert asked == [3, 1]  # the default stays one host: as fast as before
    capsys.readouterr()
    assert ferry(monkeypatch, "lab", "up", "--dir", str(tmp_path), "--hosts", "0") == 1
    err = capsys.readouterr().err
    assert err == "error: --hosts 0: the lab boots 1 to 8 conversion hosts\n"
    assert asked == [3, 1]


def test_the_lab_boots_its_hosts_by_number() -> None:
    made: list[str] = []

    def create_server(**fields: Any) -> Any:
        made.append(fields["name"])
        return SimpleNamespace(id=fields["name"])

    found = SimpleNamespace(id="x")
    compute = SimpleNamespace(
        find_flavor=lambda _: found,
        create_server=create_server,
        wait_for_server=lambda server, **_: server,
        find_server=lambda name, **_: found if name in made else None,
    )
    conn = SimpleNamespace(
        compute=compute,
        image=SimpleNamespace(find_image=lambda _: found),
        network=SimpleNamespace(find_network=lambda _: found),
    )
    said: list[str] = []
    names = bootstrap.conversion_hosts(conn, 3, said.append)
    assert names == made == ["ferry-conversion-01", "ferry-conversion-02", "ferry-conversion-03"]
    assert said == ["conversion host ferry-conversion-02 booted",
                    "conversion host ferry-conversion-03 booted"]  # fmt: skip
    bootstrap.ensure_conversion_host(conn, "ferry-conversion-02")  # there: not booted again
    bootstrap.ensure_conversion_host(conn, "ferry-conversion-04")
    assert made[3:] == ["ferry-conversion-04"]


def test_agents_are_recorded_and_stopped_exactly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = lab_agents.argv("ferry-conversion-01", tmp_path / "spec.yaml")
    assert argv[1:] == [
        "-m",
        "engine.cli",
        "agent",
        "--host",
        "ferry-conversion-01",
        "--spec",
        str(tmp_path / "spec.yaml"),
    ]  # fmt: skip  (no secret)
    monkeypatch.setattr(lab_agents, "argv", lambda host, spec: [sys.executable, "-c", READY])
    other = subprocess.Popen([sys.executable, "-c", READY], stdout=subprocess.DEVNULL)
    try:
        hosts = ["ferry-conversion-01", "ferry-conversion-02", "ferry-conversion-03"]
        began = time.monotonic()
        started = lab_agents.start(tmp_path, tmp_path / "spec.yaml", hosts, {"X": "1"})
        assert time.monotonic() - began < 10
        assert [a.name for a in started] == [f"agent {h}" for h in hosts]
        assert len({a.pid for a in started}) == 3 and all(is_running(a) for a in started)
        assert lab_agents.recorded(tmp_path) == started
        assert json.loads((tmp_path / "agents.json").read_text())["spec"].endswith("spec.yaml")
        with pytest.raises(UserError, match="the lab's agents run already: agent ferry-conv"):
            lab_agents.start(tmp_path, tmp_path / "spec.yaml", hosts, {})
        assert lab_agents.stop(tmp_path) == started
        assert not any(is_running(a) for a in started)
        assert other.poll() is None  # not one of them: left alone
        assert lab_agents.recorded(tmp_path) == [] and lab_agents.stop(tmp_path) == []
    finally:
        other.kill()
        other.wait()


def test_a_dead_agent_is_started_again_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Break-it 12o L2: with one agent killed (a drill), `lab agents` refused ('run already')
    until every agent was stopped; it now starts that one and keeps the others, and refuses
    while agents of another spec run."""
    monkeypatch.setattr(lab_agents, "argv", lambda host, spec: [sys.executable, "-c", READY])
    hosts = ["ferry-conversion-01", "ferry-conversion-02", "ferry-conversion-03"]
    first = lab_agents.start(tmp_path, tmp_path / "spec.yaml", hosts, {})
    try:
        os.kill(first[1].pid, signal.SIGKILL)
        while is_running(first[1]):
            time.sleep(0.05)
        said: list[str] = []
        again = lab_agents.start(tmp_path, tmp_path / "spec.yaml", hosts, {}, say=said.append)
        assert again[:2] == [first[0], first[2]] and again[2].name == "agent ferry-conversion-02"
        assert again[2].pid != first[1].pid and all(is_running(a) for a in again)
        assert said[0].startswith("agent ferry-conversion-01 runs already (pid ")
        assert said[2].startswith("agent ferry-conversion-02 ready (pid ")
        assert lab_agents.recorded(tmp_path) == again
        with pytest.raises(UserError, match=r"run already for .*spec\.yaml: agent ferry-conv"):
            lab_agents.start(tmp_path, tmp_path / "other.yaml", hosts, {})
        assert lab_agents.recorded(tmp_path) == again
    finally:
        lab_agents.stop(tmp_path)


def test_lab_down_stops_the_agents_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lab_agents, "argv", lambda host, spec: [sys.executable, "-c", READY])
    (agent,) = lab_agents.start(tmp_path, tmp_path / "s.yaml", ["ferry-conversion-01"], {})
    lab = Lab(tmp_path)
    service = subprocess.Popen([sys.executable, "-c", READY], start_new_session=True)
    started = start_time(service.pid)
    assert started is not None
    record = ProcessRecord("vcenter", service.pid, started, str(tmp_path / "v.log"))
    lab._record([record])
    monkeypatch.setattr(type(lab.postgres), "remove", lambda self: None)
    stopped = lab.down()
    service.wait(timeout=20)
    assert [p.name for p in stopped] == ["agent ferry-conversion-01", "vcenter"]
    assert not is_running(agent) and not (tmp_path / "agents.json").exists()


def test_an_agent_that_exits_is_named_and_the_others_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Break-it 12n L2: one host's server gone made `lab agents` start none of the three (the
    plan re-places that host's VMs onto the others, whose agents were then missing)."""
    commands = {
        "ferry-conversion-01": READY,
        "ferry-conversion-02": "print('error: conversion host is not a server in the cloud')",
    }
    monkeypatch.setattr(
        lab_agents, "argv", lambda host, spec: [sys.executable, "-c", commands[host]]
    )
    warned: list[str] = []
    (agent,) = lab_agents.start(
        tmp_path, tmp_path / "s.yaml", list(commands), {}, timeout=20, warn=warned.append
    )
    try:
        assert agent.name == "agent ferry-conversion-01" and is_running(agent)
        assert warned == [
            "agent ferry-conversion-02 exited: error: conversion host is not a server in the "
            f"cloud (log {tmp_path / 'logs' / 'agent-ferry-conversion-02.log'}): not started; "
            "the other agents run"
        ]
        assert lab_agents.recorded(tmp_path) == [agent]
    finally:
        lab_agents.stop(tmp_path)
    assert not is_running(agent)


def test_agents_that_all_exit_are_one_line_and_leave_no_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        lab_agents, "argv", lambda host, spec: [sys.executable, "-c", "print('error: no broker')"]
    )
    with pytest.raises(LabError) as raised:
        lab_agents.start(tmp_path, tmp_path / "s.yaml", ["h1", "h2"], {}, timeout=20)
    assert str(raised.value).startswith("agent h1 exited: error: no broker")
    assert not (tmp_path / "agents.json").exists()


def test_lab_agents_stop_with_none_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ferry(monkeypatch, "lab", "agents", "--dir", str(tmp_path), "--stop") == 0
    assert capsys.readouterr().out == f"no agent of the lab in {tmp_path.resolve()} runs\n"
    assert ferry(monkeypatch, "lab", "agents", "--dir", str(tmp_path)) == 1
    assert "no lab is running in" in capsys.readouterr().err


def test_a_start_appends_to_the_agent_log_and_waits_for_its_own_ready(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """break-it 14c F3: the earlier starts' lines stay in the agent's log (they were emptied at
    each start, and the evidence of an incident with them); an old 'ready.' does not count for
    the new start: one that exits is still one line with its own last line."""
    log = tmp_path / "logs" / "agent-ferry-conversion-01.log"
    log.parent.mkdir()
    log.write_text("watchdog: starting the agent again\nready.\n")
    monkeypatch.setattr(
        lab_agents, "argv", lambda host, spec: [sys.executable, "-c", "print('error: no broker')"]
    )
    with pytest.raises(LabError, match="agent ferry-conversion-01 exited: error: no broker"):
        lab_agents.start(tmp_path, tmp_path / "s.yaml", ["ferry-conversion-01"], {}, timeout=20)
    text = log.read_text()
    assert text.startswith("watchdog: starting the agent again\nready.\n")
    assert "--- ferry lab agents: agent ferry-conversion-01 started " in text
    monkeypatch.setattr(lab_agents, "argv", lambda host, spec: [sys.executable, "-c", READY])
    (agent,) = lab_agents.start(tmp_path, tmp_path / "s.yaml", ["ferry-conversion-01"], {})
    try:
        assert text in log.read_text() and log.read_text().count("started ") == 2
    finally:
        lab_agents.stop(tmp_path)
    assert not is_running(agent)


def test_lab_agents_takes_the_spec_as_plan_does_and_refuses_two(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Break-it 12n L4: `ferry lab agents SPEC` (as `plan SPEC`) was refused ("unexpected extra
    argument"). The spec given twice, differently, is one line that starts nothing."""
    started: list[Path] = []
    monkeypatch.setattr(Lab, "running", lambda _self: True)
    monkeypatch.setattr(Lab, "env", lambda _self: {})
    monkeypatch.setattr(lab_agents, "spec_hosts", lambda _data: ["h1"])
    monkeypatch.setattr(lab_cli, "load_spec", lambda _path: SimpleNamespace(data={}))
    monkeypatch.setattr(
        lab_agents,
        "start",
        lambda _root, spec, *_a, **_k: started.append(spec) or [SimpleNamespace(name="agent h1")],
    )
    spec = Path("plans/demo-3-hosts.yaml").resolve()
    assert ferry(monkeypatch, "lab", "agents", str(spec), "--dir", str(tmp_path)) == 0
    assert started == [spec]
    capsys.readouterr()
    assert ferry(monkeypatch, "lab", "agents", "a.yaml", "--spec", "b.yaml") == 1
    said = capsys.readouterr().err
    assert said == "error: two specs given (a.yaml and --spec b.yaml): give one\n"
    assert started == [spec]
