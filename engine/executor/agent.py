"""A conversion host's `ferry agent`: the Celery worker consuming the host's own queue, running
the host-bound steps (executor.host) the coordinator's tasks ask for, with its checkpoint
journal, one writer per volume, progress beats, and the checks that the apply which sent a task
still waits for it. The protocol and the coordinator's side are executor.remote's."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from amqp import exceptions as amqp_exceptions
from celery import Celery, signals
from celery.exceptions import CPendingDeprecationWarning, SecurityWarning
from celery.worker import state as worker_state
from celery.worker.control import control_command

from engine.errors import AgentError, FerryError, StoppedError
from engine.executor import host, watchdog
from engine.executor.host import Callbacks, ConvertJob, SyncJob
from engine.executor.remote import (
    ACCEPTS,
    AGENT_USES,
    COMPARE_TASK,
    CONVERT_TASK,
    NODE_PREFIX,
    STEPS,
    TASK,
    brief,
    queue_name,
)
from engine.units import human

log = logging.getLogger(__name__)

PING_TIMEOUT = 1.0  # seconds an agent starting waits for another of its host to answer
BEAT = 5.0  # seconds between an agent's progress messages when the copy reports none
CHECK = 1.0  # seconds between an agent's checks that a copy's apply still waits for it


@dataclass(frozen=True)
class Agent:
    """One conversion host's agent: its name (the Nova server's, as the spec lists it), the
    server's ID, its agent digest (remote.agent_digest of the spec it was started with: what
    it uses of it), the host's seams, the
    directory of its checkpoint journal (None: none kept, a redelivered copy starts over) and
    the directory its conversions' logs go to (None: the journal's `logs`, else a temporary
    one)."""

    name: str
    host_id: str
    digest: str
    host: host.Host
    checkpoints: Path | None = None
    log_dir: Path | None = None
    # the state lineage served, without a checkpoint directory (Served): {"lineage": ...}
    served: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def logs(self) -> Path:
        """Where the conversions' output goes: <log_dir>, else <checkpoints>/logs."""
        if self.log_dir is not None:
            return self.log_dir
        if self.checkpoints is not None:
            return self.checkpoints / "logs"
        return Path(tempfile.gettempdir()) / f"ferry-agent-{self.name}"


def register(app: Celery, agent: Agent) -> None:
    """Register the host-bound tasks (`ferry.sync`, `ferry.compare`, `ferry.convert`) on
    `app`, running on `agent`'s host, and the remote-control command ACCEPTS (Celery's
    registry of control commands is the process's: one agent per process)."""
    for name in (TASK, COMPARE_TASK, CONVERT_TASK):
        _register(app, agent, name)

    def ferry_accepts(_state: Any, digest: str = "", lineage: str = "") -> dict[str, str]:
        return {"ok": refusal_of(agent, digest, lineage)}

    control_command(
        name=ACCEPTS,
        args=[("digest", str), ("lineage", str)],
        signature="<agent digest> <state lineage>",
        help="why this agent would refuse the tasks of a coordinator (empty: it takes them)",
    )(ferry_accepts)


def refusal_of(agent: Agent, digest: str, lineage: str) -> str:
    """Why `agent` would refuse a cutover's final sync from the coordinator whose agent digest
    (for this host) and state lineage are `digest` and `lineage` ("": it would take it),
    without claiming the lineage: what a coordinator asks before it powers a source off
    (remote.Remote.refusal), so a spec whose agent fields were edited since the agents
    started is refused with the source still on (break-it
    12m F6), not by the agent after the power-off."""
    step = "cutover's final sync"
    if digest != agent.digest:
        return _spec_refusal(agent, digest, step)
    if not lineage:
        return _no_lineage(agent, step)
    try:
        served = Served.serving(agent)
    except OSError as exc:
        return f"agent {agent.name} refused the {step}: its state lineage record: {brief(exc)}"
    if served in ("", lineage):
        return ""
    return _other_lineage(agent, lineage, served, step)


def _register(app: Celery, agent: Agent, name: str) -> None:
    @app.task(name=name, bind=True)  # type: ignore[untyped-decorator]
    def ferry_step(
        task: Any, job: dict[str, Any], digest: str, lineage: str = ""
    ) -> dict[str, Any]:
        return run_task(task, agent, job, digest, step=name, lineage=lineage)


def run_task(
    task: Any,
    agent: Agent,
    job: dict[str, Any],
    digest: str,
    step: str = TASK,
    *,
    lineage: str = "",
) -> dict[str, Any]:
    """One task (`step`: TASK, COMPARE_TASK or CONVERT_TASK) of the coordinator whose state
    has `lineage`: refused on an agent digest, server or state lineage that is not the agent's
    (`Served`), else the step run with progress reported; every failure is returned as
    {"error": {type, message}}.

    A delivery of a task this agent is running (or ran lately) gets that run's outcome instead
    of a second writer on the same volume: RabbitMQ requeues an unacknowledged message when
    the agent's connection drops (a broker restart, a network cut) or when it closes the
    channel for its consumer_timeout (default 30 min, shorter than a large disk's copy), and
    delivers it again once the worker reconnects, while the first copy still runs (the cause
    is not in the delivery: the line names both)."""
    task_id = str(task.request.id)
    key = _run_key(task_id, job, digest)
    owner, run = _RUNS.claim(key)
    if not owner:
        log.warning(
            "task %s was delivered again while this agent runs its %s (the broker took back "
            "the unacknowledged delivery: the agent's connection to it was lost, or its "
            "consumer_timeout is shorter than the %s): waiting for that %s instead of "
            "starting a second one",
            task_id,
            STEPS[step],
            STEPS[step],
            STEPS[step],
        )
        run.done.wait()
        return run.outcome
    try:
        if step == TASK:
            run.outcome = _run_task(task, agent, job, digest, lineage)
        else:
            run.outcome = _run_step(task, agent, job, (digest, lineage), step)
    finally:
        _RUNS.finish(key)
    return run.outcome


def _run_key(task_id: str, job: dict[str, Any], digest: str) -> str:
    """A delivery's identity: its task ID and its arguments (a redelivery carries the same)."""
    args = json.dumps([job, digest], sort_keys=True).encode()
    return f"{task_id}:{hashlib.sha256(args).hexdigest()}"


def _run_task(
    task: Any, agent: Agent, job: dict[str, Any], digest: str, lineage: str
) -> dict[str, Any]:
    task_id = str(task.request.id)
    journal = Journal(agent.checkpoints, _run_key(task_id, job, digest))
    try:
        return _run_job(task, agent, job, (digest, lineage), journal)
    finally:
        journal.drop()  # the outcome goes back to the apply; only a dead agent leaves one


def _run_job(
    task: Any, agent: Agent, job: dict[str, Any], sent: tuple[str, str], journal: Journal
) -> dict[str, Any]:
    """A copy of the coordinator whose agent digest and state lineage are `sent`."""
    digest, lineage = sent
    refusal = (
        _refusal(agent, job, digest, TASK)
        or _sender_gone(task, TASK)
        or _lineage_refusal(agent, lineage, TASK)
    )
    if refusal:
        log.warning("refused task %s: %s", task.request.id, refusal)
        return {"error": {"type": "AgentError", "message": refusal}}
    task_id = str(task.request.id)
    reporter = _Reporter(task, agent.name, journal)
    said = False
    try:
        sync_job = resume_from(SyncJob.from_json(job), journal.mark())
        if sync_job.start_at != job.get("start_at", 0):
            reporter.meta["resumed_at"] = sync_job.start_at
        with reporter.beating(), _VOLUMES.writer(sync_job.volume_id, task_id, reporter):
            log.info(
                "task %s: copy into volume %s from byte %d (job start %d)",
                task_id, sync_job.volume_id, sync_job.start_at, job.get("start_at", 0),
            )  # fmt: skip
            try:
                result = host.sync(sync_job, agent.host, reporter.callbacks())
            except FerryError as exc:  # said while it holds the volume: before the next writer
                _ended(task_id, exc)
                said = True
                raise
    except FerryError as exc:
        if not said:
            _ended(task_id, exc)
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, StoppedError) and exc.moved:
            error["moved"] = exc.moved  # what the apply reports as read and written
        return {"error": error}
    except Exception as exc:
        log.error("task %s failed:\n%s", task.request.id, traceback.format_exc())
        return {"error": {"type": "AgentError", "message": f"{type(exc).__name__}: {exc}"}}
    log.info("task %s: copy into volume %s done", task_id, sync_job.volume_id)
    return {"result": result.to_json()}


def _ended(task_id: str, exc: FerryError) -> None:
    log.info("task %s: ended: %s", task_id, brief(exc))


def _run_step(
    task: Any, agent: Agent, job: dict[str, Any], sent: tuple[str, str], step: str
) -> dict[str, Any]:
    """A compare or a conversion (`sent`: the coordinator's agent digest and state lineage): no
    checkpoint to resume from; one writer per volume still (a conversion holds every volume
    it converts)."""
    digest, lineage = sent
    refusal = (
        _refusal(agent, job, digest, step)
        or _sender_gone(task, step)
        or _lineage_refusal(agent, lineage, step)
    )
    if refusal:
        log.warning("refused task %s: %s", task.request.id, refusal)
        return {"error": {"type": "AgentError", "message": refusal}}
    task_id = str(task.request.id)
    reporter = _Reporter(task, agent.name)
    try:
        with contextlib.ExitStack() as held:
            if step == COMPARE_TASK:
                compare = SyncJob.from_json(job)
                held.enter_context(reporter.beating())
                held.enter_context(_VOLUMES.writer(compare.volume_id, task_id, reporter))
                log.info("task %s: compare volume %s", task_id, compare.volume_id)
                outcome = host.compare(compare, agent.host, reporter.cancel).to_json()
            else:
                convert = ConvertJob.from_json(job)
                held.enter_context(reporter.beating())
                for volume_id in sorted(convert.volume_ids):
                    held.enter_context(_VOLUMES.writer(volume_id, task_id, reporter))
                log.info(
                    "task %s: convert %s on volumes %s",
                    task_id, convert.name, ", ".join(convert.volume_ids),
                )  # fmt: skip
                outcome = host.convert(
                    convert, agent.host, agent.logs(), reporter.cancel, reporter.note
                ).to_json()
    except FerryError as exc:
        log.info("task %s: ended: %s", task_id, brief(exc))
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        log.error("task %s failed:\n%s", task.request.id, traceback.format_exc())
        return {"error": {"type": "AgentError", "message": f"{type(exc).__name__}: {exc}"}}
    log.info("task %s: %s done", task_id, STEPS[step])
    return {"result": outcome}


def resume_from(job: SyncJob, mark: int | None) -> SyncJob:
    """`job` resumed at `mark` (bytes; everything below it is on the volume), the last
    checkpoint an earlier delivery of the same task gave: it starts there, without its rewrite
    areas (a checkpoint comes only after them). `job` itself when `mark` is None or not beyond
    its start. Raises AgentError for a mark beyond the disk's capacity (a foreign journal)."""
    if mark is None or mark <= job.start_at:
        return job
    if mark > int(job.source["capacity"]):
        capacity = human(int(job.source["capacity"]))
        raise AgentError(f"checkpoint {human(mark)} is beyond the disk's capacity {capacity}")
    return replace(job, start_at=mark, rewrite=[])


class Journal:
    """One task's last checkpoint on the agent's disk: `<dir>/<key digest>.json`, {"key",
    "checkpoint" (bytes)}, replaced atomically at each checkpoint. With `directory` None it
    keeps nothing."""

    def __init__(self, directory: Path | None, key: str) -> None:
        self.key = key
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        self.path = None if directory is None else directory / f"{name}.json"

    def mark(self) -> int | None:
        """The checkpoint saved for this key, or None (none, unreadable or another key's)."""
        if self.path is None or not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        mark = data.get("checkpoint") if isinstance(data, dict) else None
        if data.get("key") != self.key or not isinstance(mark, int) or mark < 0:
            return None
        return mark

    def save(self, mark: int) -> None:
        """Record `mark`; raises OSError when the directory cannot be written."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_suffix(".part")
        part.write_text(json.dumps({"key": self.key, "checkpoint": mark}))
        os.replace(part, self.path)

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Volumes:
    """One writer per volume in this agent: a copy into a volume another task still writes
    (an apply that took over from a killed one, before the old copy stopped) waits for it,
    taken (its apply hears it: the waiting is said in the VM's log, no timeout runs out) and
    stoppable (a revoke or its apply gone end the wait: StoppedError, nothing written)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def writer(self, volume_id: str, task_id: str, reporter: _Reporter | None = None) -> Any:
        with self.lock:
            lock = self.locks.setdefault(volume_id, threading.Lock())
        if not lock.acquire(blocking=False):
            line = f"waits for the earlier task that still writes volume {volume_id} to stop"
            log.warning("task %s %s", task_id, line)
            if reporter is not None:
                reporter.note(f"the agent {line} (one writer per volume)")
            cancel = reporter.cancel if reporter is not None else None
            stopped = f"stopped while it waited to write volume {volume_id}"
            host.acquire_or_stop(lock, cancel, stopped, CHECK)
        try:
            yield
        finally:
            lock.release()


_VOLUMES = _Volumes()


@dataclass
class _Run:
    """One task's run in this agent: set `done` when `outcome` is final."""

    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict)


class _Runs:
    """The tasks this agent process runs, and the last KEEP it finished (a redelivery can arrive
    just after its copy ended, before the ack that failed on the closed channel is noticed)."""

    KEEP = 256

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, _Run] = {}

    def claim(self, key: str) -> tuple[bool, _Run]:
        """(True, a new run) for a delivery not seen; (False, its run) for one running or
        finished."""
        with self.lock:
            run = self.runs.get(key)
            if run is not None:
                return False, run
            run = self.runs[key] = _Run()
            return True, run

    def busy(self) -> bool:
        """Whether a copy runs."""
        with self.lock:
            return any(not run.done.is_set() for run in self.runs.values())

    def finish(self, key: str) -> None:
        with self.lock:
            self.runs[key].done.set()
            finished = [k for k, r in self.runs.items() if r.done.is_set()]
            for old in finished[: max(0, len(finished) - self.KEEP)]:
                del self.runs[old]


_RUNS = _Runs()
SHUTDOWN_GRACE = 10.0  # seconds a stopping agent's worker gets to end once no copy runs


def _exit_once_idle(**_: Any) -> None:
    """On the worker's warm shutdown: once no copy runs, give Celery SHUTDOWN_GRACE seconds to
    end, then end the process. After RabbitMQ closed channels for their consumer_timeout,
    Celery's shutdown can block for good reading the broker's socket (seen in the lab: SIGTERM
    waited > 60 s); nothing is lost by ending then, every copy having ended."""

    def watch() -> None:
        while _RUNS.busy():
            time.sleep(0.5)
        time.sleep(SHUTDOWN_GRACE)
        log.warning("the worker did not end %.0f s after its last task: exiting", SHUTDOWN_GRACE)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name="ferry-exit-once-idle", daemon=True).start()


def _refusal(agent: Agent, job: dict[str, Any], digest: str, task: str) -> str:
    """Why `agent` refuses `task`'s job ("": it runs it, as far as the spec and the server
    go: the state lineage is `_lineage_refusal`'s, claimed last), naming the step (STEPS)."""
    step = STEPS[task]
    if digest != agent.digest:
        return _spec_refusal(agent, digest, step)
    if job.get("host_id") != agent.host_id:
        return (
            f"agent {agent.name} (server {agent.host_id}) refused a {step} for server "
            f"{job.get('host_id')}"
        )
    return ""


LINEAGE_FILE = "lineage"  # in an agent's checkpoint directory: the state lineage it serves


def _spec_refusal(agent: Agent, digest: str, step: str) -> str:
    """The line of a task whose agent digest is not `agent`'s: what the agent uses of the spec
    differs between the coordinator's spec and its own (or the coordinator's lists no such
    host: no digest)."""
    if not digest:
        return (
            f"agent {agent.name} refused the {step}: the coordinator's spec does not list "
            f"conversion host {agent.name}: apply with the spec this agent was started with"
        )
    return (
        f"agent {agent.name} refused the {step}: the coordinator's spec differs from the "
        f"agent's in what an agent uses (agent digest {digest[:12]}, the agent's "
        f"{agent.digest[:12]}: {AGENT_USES}): restart the agent with the coordinator's spec"
    )


def default_checkpoints(host_name: str, env: Mapping[str, str] | None = None) -> Path:
    """An agent's checkpoint directory unless told: $XDG_STATE_HOME/ferry/agent/<host>
    (XDG_STATE_HOME defaults to ~/.local/state; `env`: os.environ unless given)."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ferry" / "agent" / host_name


class Served:
    """The state lineage (a UUID, the state's `lineage`) an agent serves: the first task's
    that it runs, recorded in `<checkpoints>/lineage` (kept across restarts; read at each
    task, so `ferry agent --forget-lineage` takes effect without a restart), in memory for
    the agent's life without a checkpoint directory. An agent serves one state: a second
    coordinator on another state (`--state`, another schema) would have this host write
    volumes for two states that each take them for their own."""

    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def claim(cls, agent: Agent, lineage: str) -> str:
        """The lineage `agent` serves: `lineage` when it serves none yet (recorded now).
        Raises OSError when the record cannot be read or written."""
        with cls._lock:
            if agent.checkpoints is None:
                return agent.served.setdefault("lineage", lineage)
            path = agent.checkpoints / LINEAGE_FILE
            if path.exists():
                return path.read_text().strip() or lineage
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(".part")
            part.write_text(lineage + "\n")
            os.replace(part, path)
            return lineage

    @classmethod
    def serving(cls, agent: Agent) -> str:
        """The lineage `agent` serves, "" when none yet (nothing recorded). Raises OSError."""
        with cls._lock:
            if agent.checkpoints is None:
                return agent.served.get("lineage", "")
            path = agent.checkpoints / LINEAGE_FILE
            return path.read_text().strip() if path.exists() else ""

    @classmethod
    def forget(cls, checkpoints: Path) -> str:
        """Forget the lineage the agent of `checkpoints` serves (its next task's is recorded);
        returns it ("" when none was recorded). Raises OSError."""
        path = checkpoints / LINEAGE_FILE
        with cls._lock:
            served = path.read_text().strip() if path.exists() else ""
            path.unlink(missing_ok=True)
        return served


def _lineage_refusal(agent: Agent, lineage: str, task: str) -> str:
    """Why `agent` refuses a task of the coordinator whose state has `lineage` ("": it runs
    it; the first task's lineage is the one it serves from then on)."""
    step = STEPS[task]
    if not lineage:
        return _no_lineage(agent, step)
    try:
        served = Served.claim(agent, lineage)
    except OSError as exc:
        return f"agent {agent.name} refused the {step}: its state lineage record: {brief(exc)}"
    if served == lineage:
        return ""
    return _other_lineage(agent, lineage, served, step)


def _no_lineage(agent: Agent, step: str) -> str:
    return (
        f"agent {agent.name} refused the {step}: the coordinator sent no state lineage (an "
        "older ferry): run the same ferry version on the coordinator and the agents"
    )


def _other_lineage(agent: Agent, lineage: str, served: str, step: str) -> str:
    return (
        f"agent {agent.name} refused the {step}: the coordinator's state (lineage {lineage}) "
        f"is not the one this agent serves (lineage {served}): apply with that state, or, "
        f"once it is done with, run `ferry agent --host {agent.name} --spec SPEC "
        "--forget-lineage` on this host"
    )


def _sender_gone(task: Any, name: str) -> str:
    """A reason not to run a task (`name`: TASK, COMPARE_TASK, CONVERT_TASK) whose apply no
    longer waits for it (its reply queue, which lives as long as that apply's wait, is gone):
    a redelivery after the apply ended or gave up must not write into a volume a later apply
    may own. "" when it still waits."""
    if _reply_queue_gone(task.app, task.request.reply_to):
        return f"the apply that sent this {STEPS[name]} no longer waits for it: not run"
    return ""


def _reply_queue_gone(app: Celery, reply_to: str | None) -> bool:
    """Whether the reply queue `reply_to` (a task's apply's: RabbitMQ deletes it with the
    apply's connection) no longer exists; False without one. Raises the broker's errors."""
    if not reply_to:
        return False
    with app.connection_for_read() as conn:
        return _queue_missing(conn, reply_to)


def _queue_missing(conn: Any, queue: str | None) -> bool:
    """Whether `queue` does not exist, asked on `conn` (a kombu Connection); False for no
    queue. Raises the broker's errors (the channel is closed by the broker when it is
    missing: ask again on a new one)."""
    if not queue:
        return False
    try:
        conn.default_channel.queue_declare(queue=queue, passive=True)
    except amqp_exceptions.NotFound:
        return True
    return False


class _Outage:
    """A task's view of the broker: the first failure to reach it (a progress state not sent,
    the apply's reply queue not asked: every CHECK seconds and at each progress while it is
    down) is one warning, the next ones are silent, and the first success after them says
    how long it lasted (INFO): one pair of lines per outage, not one line a second."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic seconds of the outage's first failure
        self.failures = 0

    def lost(self, exc: BaseException) -> None:
        with self.lock:
            self.failures += 1
            if self.since is not None:
                return
            self.since = time.monotonic()
        log.warning(
            "task %s: the broker does not answer (%s): the copy goes on; its progress is sent "
            "again once the broker answers",
            self.task_id,
            brief(exc),
        )

    def back(self) -> None:
        with self.lock:
            if self.since is None:
                return
            lasted, failures = time.monotonic() - self.since, self.failures
            self.since, self.failures = None, 0
        log.info(
            "task %s: the broker answers again after %.0f s (%d attempt(s) to reach it failed)",
            self.task_id,
            lasted,
            failures,
        )


class _Reporter:
    """A task's PROGRESS states, sent from whichever thread reports (the request is taken once:
    Celery keeps it per thread) and at least every BEAT seconds; a revoke of the task sets the
    sync's cancel event (it stops at its next checkpoint)."""

    def __init__(self, task: Any, agent: str, journal: Journal | None = None) -> None:
        self.conn: Any = None  # kombu Connection, for the apply's reply queue checks
        self.task = task
        self.journal = journal
        self.request = task.request
        self.task_id = str(task.request.id)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.outage = _Outage(self.task_id)
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        self.meta: dict[str, Any] = {
            "agent": agent,
            "redelivered": redelivered,
            "started": True,
            "done": None,
            "total": None,
            "checkpoint": None,
            "rewritten": False,
            "written": False,
            "note": None,
        }

    def callbacks(self) -> Callbacks:
        return Callbacks(self.checkpoint, self.rewritten, self.progress, self.cancel, self.written)

    def checkpoint(self, mark: int) -> None:
        if self.journal is not None:
            try:
                self.journal.save(mark)
            except OSError as exc:  # a journal is an optimisation: the copy goes on
                log.warning("task %s: checkpoint journal not written: %s", self.task_id, exc)
        self._send(checkpoint=mark)

    def rewritten(self) -> None:
        self._send(rewritten=True)

    def written(self) -> None:
        self._send(written=True)

    def note(self, line: str) -> None:
        """A line for the VM's log on the coordinator (e.g. the conversion's start)."""
        self._send(note=line)

    def progress(self, done: int, total: int) -> None:
        self._send(done=done, total=total)

    def _send(self, **changes: Any) -> None:
        """Send the task's state; a broker that cannot take it (restarting) loses this one
        (the copy goes on: the beat decides whether its apply still waits)."""
        with self.lock:
            self.meta.update(changes)
            try:
                self.task.backend.store_result(
                    self.task_id, dict(self.meta), "PROGRESS", request=self.request
                )
            except Exception as exc:  # kombu/amqp/socket errors: the broker's, not the copy's
                self.outage.lost(exc)
                return
            self.outage.back()
            self.meta["started"] = False

    @contextlib.contextmanager
    def beating(self) -> Any:
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(done,), daemon=True)
        self._send()
        beat.start()
        try:
            yield
        finally:
            done.set()
            beat.join()
            self._close()

    def _beat(self, done: threading.Event) -> None:
        """Every CHECK seconds: a revoke or a gone apply cancels the copy; every BEAT seconds
        the state is sent again."""
        sent = time.monotonic()
        while not done.wait(min(CHECK, BEAT)):
            if self.task_id in worker_state.revoked:
                self.cancel.set()
            if not self.cancel.is_set() and self._apply_gone():
                self.cancel.set()
            if time.monotonic() - sent >= BEAT:
                sent = time.monotonic()
                self._send()

    def _apply_gone(self) -> bool:
        """Whether the apply that sent this task is gone (its reply queue deleted: the
        coordinator was killed, lost the broker or gave up); the broker unreachable is not.
        Asked on one connection kept for the task; the request is the one taken at the start
        (Celery's is per thread, and this runs in the beat's)."""
        if not self.request.reply_to:
            return False
        try:
            if self.conn is None:
                self.conn = self.task.app.connection_for_read()
            gone = _queue_missing(self.conn, self.request.reply_to)
        except Exception as exc:  # the broker restarting: ask again at the next check
            self.outage.lost(exc)
            self._close()
            return False
        self.outage.back()
        if gone:
            log.warning(
                "task %s: the apply that sent it is gone (its reply queue was deleted): "
                "stopping at the next checkpoint",
                self.task_id,
            )
        return gone

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.release()
            self.conn = None


ROOT_LINE = (
    "the agent runs as root (uid 0): docs/production.md runs it as its own user (User=ferry, "
    "groups disk and kvm); tasks are JSON only, never pickle"
)


def quiet_celery() -> None:
    """Celery's lines that are no warnings for an agent, dropped (break-it 14c: a lab agent's
    log): its advice on `worker_cancel_long_running_tasks_on_connection_loss` (a
    CPendingDeprecationWarning of 8 lines at every broker connection loss; ferry sets it False
    on purpose: make_app), its root warning (7 lines at each start advising a `--uid` option
    `ferry agent` has not; one INFO line of ferry's says it instead) and "Failed to mark task
    … as revoked in backend: RPC backend missing task request" (a revoke of a task the agent
    never received: the rpc:// backend keeps no state to mark, the worker's revoked set is
    what counts); kombu's CRITICAL "Couldn't ack" with its traceback, for a delivery whose
    connection the broker closed, is one WARNING line saying what follows. Called before the
    worker is made (its root check runs then); the worker's
    logging setup puts its own `always` filter for CPendingDeprecationWarning first and routes
    warnings to the logger py.warnings, so the advice is also dropped there."""
    warnings.filterwarnings("ignore", message=CANCEL_ADVICE, category=CPendingDeprecationWarning)
    warnings.filterwarnings("ignore", message=ROOT_ADVICE, category=SecurityWarning)
    logging.getLogger("celery.worker.control").addFilter(_NotWarnings(RPC_REVOKE_MARK))
    logging.getLogger("py.warnings").addFilter(_NotWarnings(CANCEL_ADVICE))
    logging.getLogger("celery.worker.request").addFilter(_AckLost())
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        log.info(ROOT_LINE)


# what Celery says that is no warning for an agent (quiet_celery), as regular expressions
CANCEL_ADVICE = r"(?s).*worker_cancel_long_running_tasks_on_connection_loss"
ROOT_ADVICE = r"(?s).*superuser privileges"
ACK_LOST_SUFFIX = "this run's outcome (no second copy)"
RPC_REVOKE_MARK = r"Failed to mark task .* as revoked in backend: RPC backend missing task"


class _AckLost(logging.Filter):
    """kombu's "Couldn't ack N, reason: RecoverableConnectionError(... 'connection already
    closed' ...)" (CRITICAL, a traceback of 12 lines) after a broker restart: one WARNING
    line saying what follows. Nothing is lost: RabbitMQ delivers the unacknowledged message
    again and the agent gives that delivery the outcome of the run it acknowledged
    (run_task), never a second copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        said = record.getMessage()
        if (
            said.startswith("Couldn't ack ")
            and "connection already closed" in said
            and not said.endswith(ACK_LOST_SUFFIX)  # once, however often quiet_celery ran
        ):
            record.msg = (
                f"{said}: the broker connection it came on is gone; RabbitMQ delivers it again "
                f"and the agent answers that delivery with {ACK_LOST_SUFFIX}"
            )
            record.args, record.exc_info, record.exc_text = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _NotWarnings(logging.Filter):
    """Drops a logger's records whose message matches `said` (re.match)."""

    def __init__(self, said: str) -> None:
        super().__init__()
        self.said = re.compile(said)

    def filter(self, record: logging.LogRecord) -> bool:
        return self.said.match(record.getMessage()) is None


def serve(app: Celery, agent: Agent, concurrency: int) -> int:
    """Run the agent: a Celery worker consuming only queue ferry.host.<NAME>, `concurrency`
    syncs at once (threads: the worker keeps its broker heartbeats and revokes while copies
    run). Returns the worker's exit code when it is stopped (SIGTERM/SIGINT: warm shutdown,
    running copies finish first; a second signal ends at once, their tasks are redelivered).
    Raises AgentError, before consuming anything, when this host's agent already runs on this
    machine (its worker answers a ping): Celery's worker would fail on its control queue, which
    RabbitMQ gives one connection only (RESOURCE_LOCKED), with a traceback. A worker that stops
    answering its own pings while the broker answers is started again (engine.executor
    .watchdog)."""
    node = f"{NODE_PREFIX}{agent.name}@{socket.gethostname()}"
    if app.control.ping(destination=[node], timeout=PING_TIMEOUT):
        raise AgentError(
            f"an agent for conversion host {agent.name} already runs on this machine (worker "
            f"{node} answered on the broker): one agent per host; stop it first"
        )
    register(app, agent)
    quiet_celery()
    signals.worker_shutting_down.connect(_exit_once_idle, weak=False)
    ready, stopping = threading.Event(), threading.Event()
    signals.worker_ready.connect(lambda **_: ready.set(), weak=False)
    signals.worker_shutting_down.connect(lambda **_: stopping.set(), weak=False)
    watchdog.watch(app, node, ready, stopping)  # a worker stuck after a broker loss restarts
    worker = app.Worker(
        hostname=node,
        queues=[queue_name(agent.name)],
        pool="threads",
        concurrency=concurrency,
        loglevel="INFO",
        without_gossip=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
