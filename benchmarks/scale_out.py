"""Scale-out of ferry's coordinator over conversion-host agents (issue 14), on the lab's broker.

1. Real copies (`--agents 1,2,3`): the same workload applied by `ferry apply` (the CLI, in a
   subprocess) from a spec listing 1, 2 or 3 of the lab's conversion hosts, each served by a
   real `ferry agent --host` process started by `ferry lab agents`. Every layer is ferry's:
   the planner's placement, the walker with its per-host slot pools and its default
   --parallelism, the Remote dispatch to the agents over RabbitMQ, the agents' attach, copy
   and detach into the lab's Cinder volumes, the state in the lab's PostgreSQL. The workload
   is whole lab VMs (`--disks N`: the first VMs of WORKLOAD_ORDER holding N disks or more),
   `--disk-mib` MiB written at the start of each of their disks (`ferry lab write`), every
   disk read behind nbdkit's rate filter at `--rate-mbs` MB/s (`ferry lab fault
   --read-rate-mib`: an NFC stream), `--slots` copies at once per host (max_parallel), no
   verify. Between runs `ferry plan --destroy` + `ferry apply` delete the replicas (each run
   has its own state schema, so each copies in full).
   Prints, from the apply's JSON event log: the walk's makespan (first step's start to last
   step's end) against the ideal (the disks' modelled copy times, bytes read / rate, over
   hosts x slots, never below the longest disk) and the whole apply's wall time; per copy
   step, the time outside the copy itself: before the agent took it (the coordinator's
   Cinder volume create, its state write, the dispatch) and the rest (the agent's attach
   and detach, the result back, the state write).
2. Simulated (`--sim-vms`, `--sim-agents`): VMs of 1-3 disks of 20-200 GiB of data (seeded)
   on 8 ESXi hosts. Real: ferry's planner (make_plan: desired state, diff, graph and the
   placement over the agents, from a synthetic inventory instead of vCenter's), the walker
   with the apply's slot pools and default parallelism (engine.cli.apply), Remote.sync (the
   coordinator's dispatch and wait, progress relayed), and the agents: `engine.executor.agent
   .serve` workers (their task, refusal checks, reply-queue checks, progress beats), one
   process per agent. Not real: the copy (host.sync sleeps the copy's modelled time, bytes /
   rate, compressed `--compress` times, reporting progress every 0.5 s), and the
   coordinator's other steps (snapshots: no-ops), the state writes and the event log.
   Prints the coordinator's CPU seconds for the walk, the makespan against the ideal, and
   the dispatch overhead per copy (Remote.sync's wall time less the agent's sleep).

The broker and the lab come from the environment (`eval "$(ferry lab env)"`: FERRY_LAB_DIR,
FERRY_LAB_BROKER, the password's 0600 file FERRY_BROKER_PASSWORD_FILE; the agents get the
file's path, or the password in their environment, never on argv). The lab needs as many
conversion hosts as the largest agent count (`ferry lab up --hosts 3`; missing ones are booted).
Measures, asserts nothing.
Usage: .venv/bin/python benchmarks/scale_out.py [--disks 5] [--disk-mib 1024] [--agents 1,2,3]
       [--sim-vms 1000] [--sim-agents 8] [--skip-real] [--skip-sim]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.addresses import Address  # noqa: E402
from engine.cli.apply import _graph, _slot_pools, default_parallelism  # noqa: E402
from engine.dataplane.cbt import total_bytes  # noqa: E402
from engine.errors import StoppedError, UserError  # noqa: E402
from engine.executor import host  # noqa: E402
from engine.executor.agent import Agent, serve  # noqa: E402
from engine.executor.host import Callbacks, SyncJob, SyncResult, source_of  # noqa: E402
from engine.executor.remote import (  # noqa: E402
    PASSWORD_ENV,
    Broker,
    Remote,
    agent_concurrency,
    agent_digests,
    make_app,
    queue_name,
)
from engine.executor.walker import Outcome, Walker  # noqa: E402
from engine.lab.disks import data_extents, live_path  # noqa: E402
from engine.lab.estate import find_vm  # noqa: E402
from engine.lab.faults import faults_file  # noqa: E402
from engine.lab.lab import Lab  # noqa: E402
from engine.lab.openstack.bootstrap import ensure_conversion_host, host_name  # noqa: E402
from engine.model.observed import (  # noqa: E402
    Destination,
    Flavor,
    Inventory,
    SourceDisk,
    SourceNic,
    SourceVM,
)
from engine.model.plan import Action, Plan  # noqa: E402
from engine.model.state import State  # noqa: E402
from engine.planner.make import make_plan  # noqa: E402
from engine.providers.vsphere.snapshots import DiskInfo  # noqa: E402

MiB, GiB, MB = 1024**2, 1024**3, 1000**2
DEMO = ROOT / "plans" / "demo-3-hosts.yaml"  # the lab's 3-host spec the real runs derive from
# lab VMs in the order the workload takes them: one-disk VMs first (a VM is placed whole);
# db01's first disk is thick (all of it data) and comes last
WORKLOAD_ORDER = ("win-app01", "build-old", "Reporting Ünit 1", "web01", "db01")
SEED = 1414  # of the data written to the workload's disks


def ratio(measured: float, ideal: float) -> str:
    return f"{(measured / ideal - 1) * 100:+5.1f}%" if ideal > 0 else "n/a"


def ideal(seconds: list[float], slots: int) -> float:
    """Total work over `slots` copies at once, never below the longest one (seconds)."""
    return max(sum(seconds) / slots, *seconds) if seconds else 0.0


# -- 1. real copies: ferry apply, ferry agents, the lab ------------------------------------------


@dataclass
class Workload:
    vms: list[str]
    disks: list[tuple[str, int]]  # (VM, device key)


def workload(count: int) -> Workload:
    """The first VMs of WORKLOAD_ORDER that hold `count` disks or more."""
    chosen = Workload([], [])
    for name in WORKLOAD_ORDER:
        if len(chosen.disks) >= count:
            break
        vm = find_vm(name)
        assert vm is not None, name
        chosen.vms.append(name)
        chosen.disks += [(name, d.key) for d in vm.disks]
    return chosen


@contextmanager
def rated_disks(lab: Lab, work: Workload, mib: int, rate_mbs: float) -> Iterator[None]:
    """`mib` MiB of data written at the start of each disk of `work` (ferry lab write), and each
    read at most `rate_mbs` MB/s (ferry lab fault --read-rate-mib) until the end; the lab's
    fault drills as they were after."""
    path = faults_file(lab.root)
    before = path.read_text() if path.exists() else None
    try:
        for vm, key in work.disks:
            lab.write(vm, key, 0, mib * MiB, seed=SEED)
            lab.read_rate(vm, key, rate_mbs * MB / MiB)
        yield
    except UserError as exc:  # e.g. --disk-mib beyond a disk's capacity
        sys.exit(f"error: {exc}")
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)


def spec_for(hosts: int, slots: int, vms: list[str], schema: str) -> dict[str, Any]:
    """The lab's demo-3-hosts spec with the first `hosts` conversion hosts (`slots` copies at
    once each), only `vms`, no verify, and its own state schema."""
    spec = yaml.safe_load(DEMO.read_text())
    spec["conversion_hosts"] = [
        {"name": host_name(n + 1), "max_parallel": slots, "devices": "connection-info"}
        for n in range(hosts)
    ]
    spec["vms"] = [v for v in spec["vms"] if v["name"] in vms]
    spec["defaults"]["verify"] = False
    spec["state"]["schema"] = schema
    return dict(spec)


def ferry(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ferry ARGS` of this checkout (`python -m engine.cli` with the checkout first on
    PYTHONPATH: the venv's `ferry` script may be another checkout's editable install), its
    output captured, run in `cwd`: the run's own directory, where its state/logs go (break-it
    14c F7: in the checkout they mixed with other sessions' logs)."""
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**env, "PYTHONPATH": path},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def checked(done: subprocess.CompletedProcess[str], what: str) -> str:
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        sys.exit(f"error: {what} exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


@dataclass
class Copy:
    address: str
    host: str
    start: float  # epoch seconds: node_start
    end: float = 0.0  # node_end
    taken: float | None = None  # the agent's first message ("taken by agent …")
    read: int = 0  # bytes
    seconds: float = 0.0  # the copy's own (the agent's copy engine)


@dataclass
class Run:
    hosts: int
    wall: float  # seconds: the whole `ferry apply` process
    events: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[AgentTask] = field(default_factory=list)  # the agents' side of each copy

    def walk(self) -> float:
        starts = [e["ts"] for e in self.events if e["event"] == "node_start"]
        ends = [e["ts"] for e in self.events if e["event"] == "node_end"]
        return float(max(ends) - min(starts))

    def copies(self) -> list[Copy]:
        found: dict[str, Copy] = {}
        for e in self.events:
            address = str(e.get("address", ""))
            if e["event"] == "node_start" and e.get("kind") == "volume":
                found[address] = Copy(address, str(e.get("host", "")), e["ts"])
            elif e["event"] == "node_end" and address in found:
                found[address].end = e["ts"]
            elif e["event"] == "synced" and address in found:
                found[address].read, found[address].seconds = int(e["read"]), float(e["seconds"])
            elif e["event"] == "step" and "taken by agent" in str(e.get("message")):
                taken = str(e["message"]).split(":", 1)[0]
                if taken in found and found[taken].taken is None:
                    found[taken].taken = e["ts"]
        return list(found.values())


@dataclass
class AgentTask:
    """One ferry.sync as its agent's log tells it (seconds since the epoch, local clock)."""

    received: float = 0.0  # Celery's worker received it
    start: float = 0.0  # the agent's checks passed: "copy into volume … from byte"
    done: float = 0.0  # host.sync returned (after the detach)
    copy: float = 0.0  # the copy engine's own seconds (its SyncResult)

    def complete(self) -> bool:
        return bool(self.received and self.start and self.done)


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
TASK_ID = re.compile(r"(?:ferry\.sync\[|task )([0-9a-f-]{36})")


def agent_tasks(logs: list[Path]) -> list[AgentTask]:
    """The ferry.sync tasks in the agents' logs (`ferry lab agents` starts each log afresh)."""
    tasks: dict[str, AgentTask] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            at, task = LOG_TIME.match(line), TASK_ID.search(line)
            if at is None or task is None:
                continue
            stamp = time.mktime(time.strptime(at[1], "%Y-%m-%d %H:%M:%S")) + int(at[2]) / 1000
            found = tasks.setdefault(task[1], AgentTask())
            if "ferry.sync[" in line and line.endswith(" received"):
                found.received = stamp
            elif ": copy into volume " in line and " from byte " in line:
                found.start = stamp
            elif ": copy into volume " in line and line.endswith(" done"):
                found.done = stamp
            elif "succeeded in" in line and (seconds := COPY_SECONDS.search(line)):
                found.copy = float(seconds[1])
    return [t for t in tasks.values() if t.complete()]


COPY_SECONDS = re.compile(r"'seconds': ([0-9.]+)")


def apply_once(lab: Lab, env: dict[str, str], spec: dict[str, Any], tmp: Path) -> Run:
    """`ferry apply` of `spec` with one `ferry agent` per host, then its replicas destroyed; all
    run in `tmp` (its state/logs there)."""
    tmp = tmp.resolve()
    path = tmp / f"scale-out-{len(spec['conversion_hosts'])}.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    checked(ferry(env, tmp, "lab", "agents", "--spec", str(path)), "ferry lab agents")
    try:
        began = time.monotonic()
        done = ferry(env, tmp, "apply", str(path), "--auto-approve", "--json")
        wall = time.monotonic() - began
        checked(done, "ferry apply")
    finally:
        checked(ferry(env, tmp, "lab", "agents", "--stop"), "ferry lab agents --stop")
    run = Run(len(spec["conversion_hosts"]), wall)
    run.events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (tmp / f"apply-{len(spec['conversion_hosts'])}.jsonl").write_text(done.stdout)
    hosts = [str(h["name"]) for h in spec["conversion_hosts"]]
    run.tasks = agent_tasks([lab.root / "logs" / f"agent-{name}.log" for name in hosts])
    destroy = tmp / "destroy.json"
    plan = ferry(env, tmp, "plan", str(path), "--destroy", "--out", str(destroy))
    checked(plan, "ferry plan --destroy")
    checked(ferry(env, tmp, "apply", str(destroy)), "ferry apply (destroy)")
    return run


def report(run: Run, slots: int, rate: float) -> None:
    copies = run.copies()
    best = ideal([c.read / rate for c in copies], run.hosts * slots)
    walk = run.walk()
    span = max(c.end for c in copies) - min(c.start for c in copies)
    per_host = {h: [c.read / rate for c in copies if c.host == h] for h in {c.host for c in copies}}
    placed = max(ideal(seconds, slots) for seconds in per_host.values())
    moved = sum(c.read for c in copies)
    first = min(c.start for c in copies) - min(e["ts"] for e in run.events if "kind" in e)
    print(
        f"{run.hosts} agent(s): makespan (the walk) {walk:6.2f} s vs ideal {best:6.2f} s "
        f"({ratio(walk, best)}); the copies alone {span:6.2f} s ({ratio(span, best)}), the "
        f"first after {first:5.2f} s of snapshots; the placement's own bound {placed:6.2f} s; "
        f"{moved / walk / MB:6.1f} MB/s over the walk; apply {run.wall:6.1f} s in all; copies "
        f"per host {dict(sorted((h, len(s)) for h, s in per_host.items()))}"
    )
    print("    " + step_line(copies, run.tasks))


def step_line(copies: list[Copy], tasks: list[AgentTask]) -> str:
    """Where a copy step's time goes, in means over the steps: the copy engine's own seconds;
    the agent's checks (spec, server, lineage, the apply's reply queue) and its attach +
    detach (the agents' logs); the rest is the coordinator's (the Cinder volume's create, the
    state's writes, the dispatch and the result through the broker)."""
    step = mean([c.end - c.start for c in copies])
    copy = mean([c.seconds for c in copies])
    checks = mean([t.start - t.received for t in tasks])
    attach = mean([t.done - t.start - t.copy for t in tasks])
    until_taken = mean([c.taken - c.start for c in copies if c.taken is not None])
    return (
        f"per copy step ({len(copies)} steps; {len(tasks)} tasks in the agents' logs): "
        f"{step:5.2f} s = the copy {copy:5.2f} s + the agent's checks {checks:5.3f} s + its "
        f"attach and detach {attach:5.2f} s + the coordinator's and the broker's "
        f"{step - copy - checks - attach:5.2f} s (volume create, state writes, dispatch, result; "
        f"{until_taken:5.2f} s from the step's start to the agent's first message)"
    )


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def real(args: argparse.Namespace) -> None:
    lab = Lab(Path(os.environ.get("FERRY_LAB_DIR") or sys.exit(NO_LAB)).resolve())
    if not lab.running():
        sys.exit(NO_LAB)
    env = {**os.environ, **lab.env()}
    counts = [int(n) for n in args.agents.split(",")]
    conn = lab.openstack("ferry-lab")
    for n in range(max(counts)):
        ensure_conversion_host(conn, host_name(n + 1))
    work = workload(args.disks)
    rate = args.rate_mbs * MB
    with (
        rated_disks(lab, work, args.disk_mib, args.rate_mbs),
        tempfile.TemporaryDirectory(prefix="ferry-scale-out-") as scratch,
    ):
        held = [
            total_bytes(data_extents(live_path(lab.disks, lab.vm(v), k))) for v, k in work.disks
        ]
        print(
            f"real: {len(work.disks)} disks of lab VMs {', '.join(work.vms)}, {args.disk_mib} "
            f"MiB written at the start of each (they hold {min(held) / MiB:.0f}-"
            f"{max(held) / MiB:.0f} MiB of data, with the lab's own and earlier writes), read "
            f"behind nbdkit's rate filter at {args.rate_mbs:g} MB/s; {args.slots} slot(s) per "
            "host; ferry apply + ferry agent (lab agents) + the lab's Cinder, PostgreSQL, RabbitMQ"
        )
        for count in counts:
            schema = f"scale_out_{count}_{os.getpid()}_{int(time.time())}"
            spec = spec_for(count, args.slots, work.vms, schema)
            report(apply_once(lab, env, spec, args.keep or Path(scratch)), args.slots, rate)


NO_LAB = 'error: no lab: run `ferry lab up --hosts 3` and `eval "$(ferry lab env)"` first'


# -- 2. simulated: ferry's planner, walker, Remote and agent workers; the copies sleep ----------


def broker() -> Broker:
    """The lab's broker from the environment (`ferry lab env`); the password from its file."""
    url, password_file = (
        os.environ.get("FERRY_LAB_BROKER"),
        os.environ.get("FERRY_BROKER_PASSWORD_FILE"),
    )
    if os.environ.get(PASSWORD_ENV) and url:
        return Broker(url, os.environ[PASSWORD_ENV])
    if not url or not password_file:
        sys.exit(NO_LAB)
    return Broker(url, Path(password_file).read_text().strip())


def sim_vm(i: int, rng: random.Random, esxi_hosts: int) -> SourceVM:
    disks = tuple(
        SourceDisk(
            2000 + k,
            f"Hard disk {k + 1}",
            256 * GiB,
            "ds0",
            f"[ds0] app-{i:05d}/app-{i:05d}_{k}.vmdk",
            True,
            "persistent",
            None,
            None,
            1000,
            k,
            f"52 aa/{i}",
            allocated=int(rng.uniform(20, 200) * GiB),
        )
        for k in range(rng.randint(1, 3))
    )
    mac = f"00:50:56:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
    nic = SourceNic(4000, "nic 0", mac, "VirtualVmxnet3", "pg0", None, False, True)
    return SourceVM(
        f"vm-{i}", f"app-{i:05d}", f"42150000-0000-4000-8000-{i:012d}", None, "/DC0/vm",
        f"host-{i % esxi_hosts}", "rhel9_64Guest", None, "bios", 2, 4096, "poweredOn",
        "guestToolsRunning", True, False, disks, (nic,), (),
    )  # fmt: skip


def sim_spec(agents: int, slots: int, url: str) -> dict[str, Any]:
    return {
        "version": 1,
        "source": {"vcenter": {"host": "vc", "username": "u", "password_env": "P"}},
        "destination": {"cloud": "c"},
        "conversion_hosts": [
            {"name": f"sim-{n + 1:02d}", "max_parallel": slots} for n in range(agents)
        ],
        "execution": {"broker": url},
        "state": {"backend": "postgres", "dsn_env": "FERRY_LAB_STATE_DSN"},
        "defaults": {
            "mode": "replicate",
            "flavor": "auto",
            "network_map": {"pg0": {"network": "n0"}},
            "volume_type_map": {"ds0": "t0"},
        },
        "vms": [{"pattern": {"name": "app-*"}}],
    }


def server_id(name: str) -> str:
    return f"sim-server-{name}"


def sleeping_sync(rate: float, compress: float) -> Callable[..., SyncResult]:
    """host.sync for the simulated agents: sleeps the job's modelled copy time (its areas'
    bytes / `rate`, over `compress`), reporting progress every 0.5 s as the copy engine does
    ~2 a second; stops at the apply's cancel as a copy does."""

    def sync(job: SyncJob, seams: host.Host, calls: Callbacks) -> SyncResult:
        data = total_bytes(job.areas or [])
        seconds = data / rate / compress
        asked = time.monotonic()
        with host.slot(seams, calls.cancel, "the simulated copy"):  # the agent's slots
            began = time.monotonic()
            while (left := seconds - (time.monotonic() - began)) > 0:
                if calls.cancel.wait(min(0.5, left)):
                    raise StoppedError("stopped (simulated copy)", {})
                calls.progress(int(data * min(1.0, (time.monotonic() - began) / seconds)), data)
            slept = time.monotonic() - began
        calls.written()  # as host.sync: the bytes are written, the slot goes back
        return SyncResult(data, data, 0, 0, 0, round(slept, 6), waited=round(began - asked, 6))

    return sync


def sim_agent(args: argparse.Namespace) -> None:
    """One simulated agent process: ferry's agent worker (executor.agent.serve) on queue
    ferry.host.<NAME>, its copies sleeping (sleeping_sync)."""
    host.sync = sleeping_sync(args.rate_mbs * MB, args.compress)
    name = args.sim_agent
    nothing: Any = None  # no cloud, no disks: the copy sleeps
    slots = threading.BoundedSemaphore(args.slots)  # as `ferry agent`'s: max_parallel
    seams = host.Host(nothing, nothing, nothing, slots)
    agent = Agent(name, server_id(name), args.digest, seams)
    concurrency = agent_concurrency({"max_parallel": args.slots})  # as `ferry agent`'s
    sys.exit(serve(make_app(broker()), agent, concurrency=concurrency))


def start_sim_agents(
    args: argparse.Namespace,
    names: list[str],
    digests: dict[str, str],
    stack: ExitStack,
    logs: Path,
) -> None:
    """One agent process per name (the password in its environment, never on argv), waited
    until every one answers the broker's ping."""
    env = {**os.environ, PASSWORD_ENV: broker().password}
    stack.callback(delete_queues, names)  # last: once every agent stopped
    procs = []
    for name in names:
        log = (logs / f"agent-{name}.log").open("w")
        stack.callback(log.close)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--sim-agent", name, "--digest", digests[name],
             "--slots", str(args.sim_slots), "--rate-mbs", str(args.rate_mbs),
             "--compress", str(args.compress)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        stack.callback(stop, proc)
        procs.append(proc)
    remote = Remote(broker(), digests)
    deadline = time.monotonic() + 180
    while not set(names) <= remote.answering(timeout=1.0):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            sys.exit(f"error: simulated agents not ready (logs in {logs})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def delete_queues(names: list[str]) -> None:
    """The simulated hosts' queues (durable) off the broker."""
    app = make_app(broker())
    with app.connection_for_write() as conn:
        for name in names:
            conn.default_channel.queue_delete(queue_name(name))
    app.close()


class SimApplier:
    """What the apply's slot pools (engine.cli.apply._slot_pools) ask an Applier: each VM's
    ESXi host (from the inventory, not vCenter) and the slot pool of its placed host (as
    Replacement.slot_pool names it when no host is gone)."""

    def __init__(self, plan: Plan, inventory: Inventory, first: str) -> None:
        self.placement = {v.name: v.conversion_host for v in plan.vms}
        self.esxi = {v.name: str(v.host) for v in inventory.vms}
        self.first = first

    def hosts(self) -> dict[str, str]:
        return dict(self.esxi)

    def slot_pool(self, vm: str) -> str:
        name = self.placement[vm]
        return "conversion" if name == self.first else f"conversion:{name}"


@dataclass
class Dispatch:
    """Each simulated copy's Remote.sync wall time less the agent's sleep and its wait for a
    slot on the agent (seconds), and that wait."""

    overheads: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sim_node(
    plan: Plan, remote: Remote, stopped: threading.Event, seen: Dispatch, walker: Walker
) -> Any:
    """The walker's node function: a disk copy goes to its placed host's agent through
    Remote.sync, its slot given back once the agent says its bytes are written (as the apply's
    volume step); the other steps (the VMs' snapshots) are no-ops here."""
    changes = {c.address: c for c in plan.changes}
    placement = {v.name: v.conversion_host for v in plan.vms}

    def run(node: Any) -> None:
        change = changes[str(node)]
        if change.kind != "volume" or change.action is Action.NOOP:
            return
        address = Address.parse(change.address)
        name = placement[address.name]
        capacity = int((change.after or {})["capacity"])
        disk = DiskInfo(int(address.index or 0), capacity, "", True, None)
        job = SyncJob(
            f"sim-volume-{change.address}",
            server_id(name),
            source_of("vm-sim", address.name, "snapshot-sim", disk),
            areas=[(0, int(change.bytes or 0))],
            dst_is_zero=True,
        )
        began = time.monotonic()
        calls = Callbacks(cancel=stopped, written=lambda: walker.release(node))
        result = remote.sync(name, job, calls, lambda _: None)
        with seen.lock:
            seen.overheads.append(time.monotonic() - began - result.seconds - result.waited)
            seen.waits.append(result.waited)

    return run


def simulated(args: argparse.Namespace) -> None:
    rate = args.rate_mbs * MB
    rng = random.Random(11)
    vms = tuple(sim_vm(i, rng, args.sim_esxi) for i in range(args.sim_vms))
    inventory = Inventory(vms, (), (), ())
    spec = sim_spec(args.sim_agents, args.sim_slots, broker().url)
    names = [str(h["name"]) for h in spec["conversion_hosts"]]
    destination = Destination(
        flavors=(Flavor("m1.medium", 2, 4096),),
        networks=frozenset({"n0"}),
        volume_types=frozenset({"t0"}),
        server_names=frozenset(names),
    )
    cpu = time.process_time()
    plan = make_plan(spec, inventory, destination, State(1, "sim", 0, {}))
    planning = time.process_time() - cpu
    copies = [c for c in plan.changes if c.kind == "volume" and c.action is not Action.NOOP]
    modelled = [int(c.bytes or 0) / rate for c in copies]
    slots = args.sim_agents * args.sim_slots
    best = ideal(modelled, slots) / args.compress
    placed = placement_bound(plan, copies, rate, args.sim_slots) / args.compress
    digests = agent_digests(spec)  # as `ferry apply` and `ferry agent` compute them
    applier = SimApplier(plan, inventory, names[0])
    pools, pools_of = _slot_pools(spec, applier, agents=True)  # type: ignore[arg-type]
    stopped, seen = threading.Event(), Dispatch()
    remote = Remote(broker(), digests, lineage="sim-lineage")
    walker = Walker(
        _graph(plan),
        lambda _: None,
        parallelism=default_parallelism(spec, agents=True),
        pools=pools,
        pools_of=pools_of,
    )
    walker.run = sim_node(plan, remote, stopped, seen, walker)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="ferry-sim-agents-") as logs:
        start_sim_agents(args, names, digests, stack, Path(logs))
        before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.monotonic()
        result = walker.walk()
        makespan = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    failed = sum(o is not Outcome.DONE for o in result.outcomes.values())
    overhead = mean(seen.overheads)
    serial = len(copies) / slots * overhead  # a slot's copies, one after the other
    print(
        f"simulated: {args.sim_vms} VMs, {len(copies)} disk copies ({sum(modelled) / 3600:.0f} h "
        f"of NFC streams at {args.rate_mbs:g} MB/s) over {args.sim_agents} agents x "
        f"{args.sim_slots} slots, {args.sim_esxi} ESXi hosts; time compressed "
        f"{args.compress:g}x; planned in {planning:.2f} s CPU (make_plan); walker parallelism "
        f"{walker.parallelism}; {failed} step(s) not done"
    )
    print(
        "  real: make_plan (placement), the walker with the apply's slot pools, Remote.sync, "
        "the agents' workers (executor.agent.serve), RabbitMQ; simulated: the copies (they "
        "sleep), the snapshots (no-ops), no state writes, no event log"
    )
    print(
        f"  makespan {makespan:6.2f} s, ideal {best:6.2f} s ({ratio(makespan, best)}), the "
        f"placement's own bound {placed:6.2f} s ({ratio(makespan, placed)}); coordinator CPU "
        f"{used:.2f} s for the walk ({used / len(copies) * 1000:.2f} ms a copy); dispatch "
        f"overhead per copy {overhead * 1000:.0f} ms (Remote.sync's wall less the agent's sleep "
        f"and its wait for a slot there, {mean(seen.waits) * 1000:.0f} ms a copy on average: "
        f"{overhead / mean(modelled) * 100:.3f}% of an uncompressed copy of "
        f"{mean(modelled):.0f} s; {serial:.2f} s of the makespan, {len(copies) / slots:.0f} "
        "copies a slot one after the other, compressed copies being that much shorter)"
    )


def placement_bound(plan: Plan, copies: list[Any], rate: float, slots: int) -> float:
    """The makespan the plan's placement allows at best: its busiest host's copies over its
    slots, never below its longest copy (seconds, uncompressed)."""
    placement = {v.name: v.conversion_host for v in plan.vms}
    per_host: dict[str, list[float]] = {}
    for change in copies:
        name = placement[Address.parse(change.address).name]
        per_host.setdefault(name, []).append(int(change.bytes or 0) / rate)
    return max(ideal(seconds, slots) for seconds in per_host.values())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--disks", type=int, default=5, help="lab disks in the workload")
    parser.add_argument("--disk-mib", type=int, default=1024, help="MiB written on each")
    parser.add_argument("--rate-mbs", type=float, default=160.0, help="MB/s per disk read")
    parser.add_argument("--agents", default="1,2,3", help="agent counts to apply on")
    parser.add_argument("--slots", type=int, default=1, help="copies at once per lab host")
    parser.add_argument(
        "--keep", type=Path, help="a directory to keep each run's spec and event log in"
    )
    parser.add_argument("--sim-vms", type=int, default=1000)
    parser.add_argument("--sim-agents", type=int, default=8)
    parser.add_argument("--sim-slots", type=int, default=2, help="copies at once per agent")
    parser.add_argument("--sim-esxi", type=int, default=8, help="ESXi hosts of the VMs")
    parser.add_argument("--compress", type=float, default=1000.0, help="time compression")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--sim-agent", help=argparse.SUPPRESS)  # internal: one agent
    parser.add_argument("--digest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sim_agent:
        sim_agent(args)
        return
    if not args.skip_real:
        real(args)
    if not args.skip_sim:
        simulated(args)


if __name__ == "__main__":
    main()
