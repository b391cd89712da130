"""`ferry lab agents`: one `ferry agent --host NAME` process per conversion host of a spec, each
its own process (own session), on the lab's broker (vhost and user `ferry`, the password in its
0600 file: the agents get the file's path in their environment, never the password on argv).

Their PIDs (and start times) are kept in <lab>/agents.json, so `lab agents --stop` and
`lab down` stop exactly them; each logs to <lab>/logs/agent-<host>.log and keeps its checkpoint
journal in the lab (<lab>/agent-state/ferry/agent/<host>, by XDG_STATE_HOME: not shared with
another lab's agents on the machine), where the state lineage it serves is forgotten at each
start (a lab's states come and go; agent.Served)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.errors import LabError, UserError
from engine.executor.agent import Served, default_checkpoints
from engine.lab.processes import ProcessRecord, is_running, spawn, stop_all

AGENTS_FILE = "agents.json"
READY = "ready."  # what Celery's worker logs when it consumes its queue
CHECKOUT = Path(__file__).resolve().parents[2]


def _read(root: Path) -> dict[str, Any]:
    """<root>/agents.json as written by _record; {} when there is none. LabError when it is
    unreadable."""
    try:
        data: dict[str, Any] = json.loads((root / AGENTS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise LabError(f"{root / AGENTS_FILE} is unreadable: {exc}") from exc
    return data


def recorded(root: Path) -> list[ProcessRecord]:
    """The agents <root>/agents.json records (running or not); [] when there is none."""
    return [ProcessRecord.from_json(p) for p in _read(root).get("agents", [])]


def agent_name(host: str) -> str:
    """The name an agent of conversion host `host` is recorded and said under."""
    return f"agent {host}"


def _record(root: Path, agents: list[ProcessRecord], spec: Path) -> None:
    path = root / AGENTS_FILE
    tmp = path.with_suffix(".tmp")
    data = {"spec": str(spec), "agents": [a.to_json() for a in agents]}
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def spec_hosts(spec: Mapping[str, Any]) -> list[str]:
    """The names of a spec's conversion_hosts, in order; UserError when it lists none."""
    names = [str(h["name"]) for h in spec.get("conversion_hosts") or [] if isinstance(h, dict)]
    if not names:
        raise UserError("the spec lists no conversion_hosts: no agent to start")
    return names


def argv(host: str, spec: Path) -> list[str]:
    """One agent's command line: no secret on it (the broker's password is in a file)."""
    return [sys.executable, "-m", "engine.cli", "agent", "--host", host, "--spec", str(spec)]


def start(
    root: Path,
    spec: Path,
    hosts: list[str],
    env: Mapping[str, str],
    *,
    timeout: float = 120.0,
    say: Callable[[str], None] = lambda _: None,
    warn: Callable[[str], None] = lambda _: None,
) -> list[ProcessRecord]:
    """Start one agent per host in `hosts` for `spec` with `env` added to this environment
    (the lab's), each recorded in agents.json as soon as it runs; wait until each consumes
    its queue (`timeout` seconds in all) and return those that do. One that exits or is not
    ready in time is stopped and named through `warn` (its last log line) while the others run
    (a host whose server is gone: the plan re-places its VMs onto the others, break-it 12n L2).
    Agents of this lab that run already for the same spec are kept (said through `say`) and
    only the others are started: one killed agent is started again alone (break-it 12o L2).
    UserError when every host's agent runs already, or some run for another spec; LabError
    naming the first host that failed when none is ready (those started are stopped then)."""
    alive = _alive_for(root, spec, hosts)
    for agent in alive:
        say(f"{agent.name} runs already (pid {agent.pid}, log {agent.log}): kept")
    running = {a.name for a in alive}
    hosts = [h for h in hosts if agent_name(h) not in running]
    started: list[ProcessRecord] = []
    state = root / "agent-state"
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "XDG_STATE_HOME": str(state)}
    begins: dict[str, int] = {}  # each log's offset where this start's lines begin
    try:
        for host in hosts:
            Served.forget(default_checkpoints(host, {"XDG_STATE_HOME": str(state)}))
            log = root / "logs" / f"agent-{host}.log"
            begins[str(log)] = _mark_start(log, host)
            started.append(spawn(agent_name(host), argv(host, spec), log, env=full, cwd=CHECKOUT))
            _record(root, alive + started, spec)
        ready, failures = _ready(started, time.monotonic() + timeout, begins, say)
        if not ready and not alive:
            raise failures[0]
    except BaseException:
        stop_all(started)
        _record_or_forget(root, alive, spec)
        raise
    if failures:
        stop_all([a for a in started if a not in ready])
        _record(root, alive + ready, spec)
        for failure in failures:
            warn(f"{failure}: not started; the other agents run")
    return alive + ready


def _alive_for(root: Path, spec: Path, hosts: list[str]) -> list[ProcessRecord]:
    """The lab's running agents when they serve `spec` and some host of `hosts` has none;
    UserError when they serve another spec or every host's agent runs."""
    alive = [a for a in recorded(root) if is_running(a)]
    if not alive:
        return []
    names = ", ".join(f"{a.name} (pid {a.pid})" for a in alive)
    served = str(_read(root).get("spec", ""))
    if served != str(spec):
        raise UserError(
            f"the lab's agents run already for {served}: {names}; `ferry lab agents --stop` first"
        )
    if {agent_name(h) for h in hosts} <= {a.name for a in alive}:
        raise UserError(f"the lab's agents run already: {names}; `ferry lab agents --stop` first")
    return alive


def _record_or_forget(root: Path, agents: list[ProcessRecord], spec: Path) -> None:
    """Record `agents` in agents.json, or remove the file when there is none."""
    if agents:
        _record(root, agents, spec)
    else:
        (root / AGENTS_FILE).unlink(missing_ok=True)


def _ready(
    started: list[ProcessRecord],
    deadline: float,
    begins: Mapping[str, int],
    say: Callable[[str], None],
) -> tuple[list[ProcessRecord], list[LabError]]:
    """The agents of `started` ready by `deadline` (each said), and a LabError per other."""
    ready: list[ProcessRecord] = []
    failures: list[LabError] = []
    for agent in started:
        try:
            _wait_ready(agent, deadline, begins.get(agent.log, 0))
        except LabError as exc:
            failures.append(exc)
            continue
        ready.append(agent)
        say(f"{agent.name} ready (pid {agent.pid}, log {agent.log})")
    return ready, failures


def _mark_start(log: Path, host: str) -> int:
    """Append a start line to the agent's log (its earlier starts' lines stay: the evidence of
    past incidents, break-it 14c F3) and return the offset where this start's lines begin."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with log.open("a", encoding="utf-8") as out:
        out.write(f"--- ferry lab agents: agent {host} started {stamp} ---\n")
    return log.stat().st_size


def _since(log: Path, offset: int) -> str:
    """The log's text from `offset` on (this start's lines)."""
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _wait_ready(agent: ProcessRecord, deadline: float, offset: int = 0) -> None:
    """Until the agent's log says its worker is ready (in its lines from `offset` on: this
    start's); LabError with its last line when it exits first or the deadline passes."""
    log = Path(agent.log)
    while READY not in _since(log, offset):
        if not is_running(agent) or time.monotonic() > deadline:
            lines = _since(log, offset).strip().splitlines() or ["(no output)"]
            why = "exited" if not is_running(agent) else "is not ready in time"
            raise LabError(f"{agent.name} {why}: {lines[-1]} (log {log})")
        time.sleep(0.2)


def stop(root: Path) -> list[ProcessRecord]:
    """Stop the agents agents.json records (by PID and start time: a PID reused since is left
    alone) and forget them; returns those that were running."""
    agents = recorded(root)
    alive = [a for a in agents if is_running(a)]
    stop_all(alive)
    (root / AGENTS_FILE).unlink(missing_ok=True)
    return alive
