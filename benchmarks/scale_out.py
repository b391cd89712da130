"""Scale-out over conversion-host agents: Celery workers on RabbitMQ, as `ferry agent` runs them.

1. Real copies: the same workload (`--disks` disks of `--disk-mib` MiB of data each, one nbdkit
   server per disk behind nbdkit's rate filter at `--rate-mbs` MB/s, burstiness 0.1 s: an NFC
   stream, not the filter's default 2 s burst after idle) copied by
   ferry's copy engine on 1, 2 and 3 agents (`--agents`), each its own process consuming its own
   queue with `--slots` copies at once, the disks placed longest first on the least loaded host.
   Prints the makespan against the ideal (total work / (hosts x slots), never below the longest
   disk) and the dispatch overhead per task (queue → start on the agent; end → result back).
2. Simulated: `--sim-vms` VMs (1-3 disks each, 20-200 GiB of data a disk, seeded) over
   `--sim-agents` agents whose tasks only sleep for each copy's modelled time at the same rate,
   time compressed `--compress` times; prints the coordinator's CPU seconds and the makespan
   against the ideal.

The broker is the lab's (`eval "$(ferry lab env)"`: FERRY_LAB_BROKER and the 0600 file in
FERRY_BROKER_PASSWORD_FILE; the agents get the password in their environment, never on argv),
on queues of their own (ferry.bench.*). Measures, asserts nothing.
Usage: .venv/bin/python benchmarks/scale_out.py [--disks 6] [--disk-mib 256] [--agents 1,2,3]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.dataplane.copy import CopyOptions, copy  # noqa: E402
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer  # noqa: E402
from engine.executor.remote import Broker, make_app  # noqa: E402

MiB, GiB, MB = 1024**2, 1024**3, 1000**2
TASK = "ferry.bench.copy"
PASSWORD_ENV = "FERRY_BENCH_BROKER_PASSWORD"


def queue(host: str) -> str:
    return f"ferry.bench.{host}"


def broker() -> Broker:
    """The lab's broker from the environment (`ferry lab env`)."""
    url, password_file = (
        os.environ.get("FERRY_LAB_BROKER"),
        os.environ.get("FERRY_BROKER_PASSWORD_FILE"),
    )
    if os.environ.get(PASSWORD_ENV) and url:
        return Broker(url, os.environ[PASSWORD_ENV])
    if not url or not password_file:
        sys.exit('error: no broker: run `eval "$(ferry lab env)"` first (a lab that is up)')
    return Broker(url, Path(password_file).read_text().strip())


# -- the agent ----------------------------------------------------------------------------------


def register(app: Celery) -> None:
    @app.task(name=TASK)
    def bench_copy(job: dict[str, Any]) -> dict[str, Any]:
        """Copy one disk (job: uri, destination) or sleep its modelled seconds (job: sleep)."""
        began = time.time()
        moved = 0
        if "sleep" in job:
            time.sleep(float(job["sleep"]))
        else:
            stats = copy(job["uri"], Path(job["destination"]), None, CopyOptions(dst_is_zero=True))
            moved = stats.bytes_read
        return {"start": began, "end": time.time(), "bytes": moved}


def agent(host: str, slots: int) -> None:
    """One agent: a Celery worker (threads) on queue ferry.bench.<host>, `slots` at once."""
    app = make_app(broker())
    register(app)
    worker = app.Worker(
        hostname=f"ferry-bench-{host}@{socket.gethostname()}",
        queues=[queue(host)],
        pool="threads",
        concurrency=slots,
        loglevel="WARNING",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()


def start_agents(hosts: list[str], slots: int, stack: ExitStack) -> None:
    """One agent process per host, each waited until its worker answers a ping."""
    env = {**os.environ, PASSWORD_ENV: broker().password}
    procs = []
    for host in hosts:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--agent", host, "--slots", str(slots)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        stack.callback(_stop, proc)
        procs.append(proc)
    app = make_app(broker())
    names = {f"ferry-bench-{h}@{socket.gethostname()}" for h in hosts}
    deadline = time.monotonic() + 120
    while True:
        answered = {name for reply in app.control.ping(timeout=0.5) for name in reply}
        if names <= answered:
            return
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            sys.exit(f"error: agents not ready: {sorted(names - answered)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the coordinator ----------------------------------------------------------------------------


@dataclass
class Task:
    name: str
    seconds: float  # modelled: data / rate
    job: dict[str, Any]
    host: str = ""


def place(tasks: list[Task], hosts: list[str]) -> None:
    """Longest first on the least loaded host (ferry's placement balances bytes the same way)."""
    load = dict.fromkeys(hosts, 0.0)
    for task in sorted(tasks, key=lambda t: -t.seconds):
        task.host = min(hosts, key=lambda h: (load[h], h))
        load[task.host] += task.seconds


def ideal(tasks: list[Task], hosts: int, slots: int) -> float:
    """Total work over every slot of every host, never below the longest task."""
    return max(sum(t.seconds for t in tasks) / (hosts * slots), *(t.seconds for t in tasks))


def dispatch(tasks: list[Task]) -> tuple[float, list[dict[str, Any]], float]:
    """Send every task to its host's queue at once (the agents' slots pace them), wait for all;
    (makespan in s, each task's result with sent/back times, coordinator CPU seconds)."""
    app = make_app(broker())
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.time()
    sent = []
    for task in tasks:
        sent.append((time.time(), app.send_task(TASK, args=[task.job], queue=queue(task.host))))
    results = []
    for at, result in sent:
        out = dict(result.get(timeout=3600))
        results.append({**out, "sent": at, "back": time.time()})
    makespan = max(r["back"] for r in results) - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return makespan, results, used


def overhead(tasks: list[Task], results: list[dict[str, Any]]) -> tuple[float, float]:
    """(mean seconds per task from queue to start: from its send, or from the end of the task
    before it on the same host when it waited for a slot; seconds from the last task's end to
    its result at the coordinator). The coordinator collects results in send order, so only the
    last one's return time is a latency."""
    waits = []
    by_host: dict[str, list[dict[str, Any]]] = {}
    for task, result in zip(tasks, results, strict=True):
        by_host.setdefault(task.host, []).append(result)
    for runs in by_host.values():
        for result in runs:
            ended = [r["end"] for r in runs if r["end"] <= result["start"]]
            waits.append(result["start"] - max([result["sent"], *ended]))
    last = max(results, key=lambda r: r["end"])
    return sum(waits) / len(waits), max(r["back"] for r in results) - last["end"]


def real(args: argparse.Namespace) -> None:
    rate = args.rate_mbs * MB
    data = args.disk_mib * MiB
    rng = random.Random(7)
    with (
        tempfile.TemporaryDirectory(prefix="ferry-scale-out-", dir="/var/tmp") as tmp,
        ExitStack() as stack,
    ):
        servers = []
        for i in range(args.disks):
            src = Path(tmp) / f"disk{i}.raw"
            with src.open("wb") as out:  # incompressible data, written 16 MiB at a time
                for at in range(0, data, 16 * MiB):
                    out.write(rng.randbytes(min(16 * MiB, data - at)))
            server = NbdkitServer(
                FileDiskSource(src),
                filters=["rate"],
                filter_args=[f"rate={int(rate * 8)}", "burstiness=0.1"],
            )
            stack.enter_context(server)
            servers.append(server)
        print(
            f"workload: {args.disks} disks of {args.disk_mib} MiB of data, each read behind "
            f"nbdkit's rate filter at {args.rate_mbs} MB/s ({data / rate:.2f} s a disk); "
            f"{args.slots} slot(s) per agent"
        )
        for count in [int(n) for n in args.agents.split(",")]:
            hosts = [f"host{n + 1}" for n in range(count)]
            with ExitStack() as agents:
                start_agents(hosts, args.slots, agents)
                tasks = [
                    Task(f"disk{i}", data / rate,
                         {"uri": s.uri, "destination": str(Path(tmp) / f"out{i}-{count}.raw")})
                    for i, s in enumerate(servers)
                ]  # fmt: skip
                for task in tasks:  # fresh sparse volumes: zeros need no write
                    with open(task.job["destination"], "wb") as out:
                        out.truncate(data)
                place(tasks, hosts)
                makespan, results, _ = dispatch(tasks)
            best = ideal(tasks, count, args.slots)
            wait, back = overhead(tasks, results)
            moved = sum(r["bytes"] for r in results)
            assert moved == data * args.disks, moved
            print(
                f"{count} agent(s): makespan {makespan:6.2f} s, ideal {best:6.2f} s "
                f"({(makespan / best - 1) * 100:+5.1f}%), {moved / makespan / MB:6.1f} MB/s; "
                f"dispatch overhead per task: {wait * 1000:6.1f} ms to start, "
                f"last result back {back * 1000:5.1f} ms after its end"
            )
            for i in range(args.disks):
                (Path(tmp) / f"out{i}-{count}.raw").unlink(missing_ok=True)


def simulated(args: argparse.Namespace) -> None:
    rate = args.rate_mbs * MB
    rng = random.Random(11)
    tasks = []
    for vm in range(args.sim_vms):
        for disk in range(rng.randint(1, 3)):
            modelled = rng.uniform(20, 200) * GiB / rate  # seconds of an NFC stream
            tasks.append(Task(f"vm{vm}.disk{disk}", modelled, {"sleep": modelled / args.compress}))
    hosts = [f"sim{n + 1}" for n in range(args.sim_agents)]
    place(tasks, hosts)
    with ExitStack() as stack:
        start_agents(hosts, args.slots, stack)
        makespan, results, cpu = dispatch(tasks)
    best = ideal(tasks, len(hosts), args.slots) / args.compress
    wait, back = overhead(tasks, results)
    print(
        f"simulated: {args.sim_vms} VMs, {len(tasks)} disk copies over {len(hosts)} agents x "
        f"{args.slots} slots, modelled {sum(t.seconds for t in tasks) / 3600:.0f} h of NFC "
        f"streams, time compressed {args.compress:.0f}x"
    )
    print(
        f"  makespan {makespan:6.2f} s, ideal {best:6.2f} s ({(makespan / best - 1) * 100:+5.1f}%)"
        f" = {makespan * args.compress / 3600:.2f} h modelled vs {best * args.compress / 3600:.2f}"
        f" h; coordinator CPU {cpu:.2f} s ({cpu / len(tasks) * 1000:.2f} ms a task); dispatch "
        f"overhead per task {wait * 1000:.1f} ms to start; last result back {back * 1000:.1f} ms "
        "after its end"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--disks", type=int, default=6)
    parser.add_argument("--disk-mib", type=int, default=256)
    parser.add_argument("--rate-mbs", type=float, default=160.0, help="MB/s per disk read")
    parser.add_argument("--agents", default="1,2,3", help="agent counts to run the workload on")
    parser.add_argument("--slots", type=int, default=1, help="copies at once per agent")
    parser.add_argument("--sim-vms", type=int, default=1000)
    parser.add_argument("--sim-agents", type=int, default=8)
    parser.add_argument("--compress", type=float, default=5000.0, help="time compression")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--agent", help=argparse.SUPPRESS)  # internal: run one agent
    args = parser.parse_args()
    if args.agent:
        agent(args.agent, args.slots)
        return
    if not args.skip_real:
        real(args)
    if not args.skip_sim:
        simulated(args)


if __name__ == "__main__":
    main()
