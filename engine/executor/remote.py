"""Host-bound syncs run by a conversion host's `ferry agent`, through Celery on RabbitMQ
(issue 14). Owns the Celery app's settings, the agent's task and the coordinator's side of one
remote sync; what a sync does is executor.host's, what to copy and the state are the
coordinator's (executor.apply), exactly as when the sync runs in-process.

The protocol, JSON only (no pickle is ever accepted):

- task `ferry.sync` on the queue `ferry.host.<NAME>` (durable), args `[job, spec_digest]`:
  `job` is `SyncJob.to_json()`; `ferry.compare` (a `--verify` compare: `SyncJob.to_json()`,
  returns a SyncResult) and `ferry.convert` (`ConvertJob.to_json()`, returns a ConvertResult)
  on the same queue, the same way. The agent refuses a job whose spec digest differs from its own
  spec's, that names another server than its own, or whose apply no longer waits for it (its
  reply queue is gone: the apply ended, was killed or gave up; no `expires`, which would also
  drop a redelivery after a long copy);
- while it runs, the agent sends task states `PROGRESS` with a cumulative meta: {agent,
  redelivered, done, total (data bytes), checkpoint (bytes, or None), rewritten (bool), note
  (a line for the VM's log, e.g. the conversion's start, or None)}, at each copy callback (~2 a
  second) and at least every `BEAT` seconds (a live agent is never silent);
- its return value is {"result": SyncResult.to_json() (ConvertResult's for ferry.convert)} or
  {"error": {"type": a FerryError
  class name, "message": one line, for a StoppedError "moved": what the copy read and wrote
  until it stopped}}: failures are values, so the coordinator raises the same
  error class as an in-process sync would, and never imports a class a message names.

Progress travels on Celery's `rpc://` result backend: task states are AMQP messages to the
coordinator's own reply queue on the same broker. No second service (Redis, a database) to run
and secure, and only the coordinator that sent a task reads its states, which is all a live view
needs. Its limits: states are not stored (the state's checkpoints are the memory a new apply
resumes from), and the reply queue ends with the coordinator's connection.

Delivery: late acknowledgement (`task_acks_late`, one message prefetched per slot), so a task
whose agent dies (kill -9, host lost) is redelivered by RabbitMQ when an agent consumes the
queue again; the redelivered sync reads the same snapshot, so it ends byte-exact, and resumes
from the last checkpoint the dead agent gave (its journal, a file per task in the agent's
checkpoint directory), not from the job's start.

The agent notices that the apply which sent a task is gone (killed, lost the broker, gave up)
by its reply queue: the rpc:// backend's queue is auto-deleted with the coordinator's
connection, and the agent checks it exists every CHECK seconds on one connection per copy;
gone, the copy stops at its next checkpoint. A new apply takes over from the state's checkpoint
(the apply lock lets one apply at a time); its copy of the same volume waits in the agent until
the old one stopped and detached: one writer per volume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amqp import exceptions as amqp_exceptions
from celery import Celery, signals
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.worker import state as worker_state
from kombu.exceptions import KombuError

from engine import errors
from engine.errors import AgentError, FerryError, StoppedError, UserError
from engine.executor import host
from engine.executor.host import Callbacks, ConvertJob, ConvertResult, SyncJob, SyncResult
from engine.providers.vsphere.session import read_secret
from engine.units import human

TASK = "ferry.sync"
COMPARE_TASK = "ferry.compare"
CONVERT_TASK = "ferry.convert"
QUEUE_PREFIX = "ferry.host."
STEPS = {TASK: "copy", COMPARE_TASK: "compare", CONVERT_TASK: "conversion"}  # what each runs
PASSWORD_ENV = "FERRY_BROKER_PASSWORD"
TIMEOUT = 300.0  # seconds an agent may be silent (default of execution.timeout)
PING_TIMEOUT = 1.0  # seconds an agent starting waits for another of its host to answer
ASK_TIMEOUT = 2.0  # seconds a coordinator re-placing a VM waits for the agents' answers
NODE_PREFIX = "ferry-agent-"  # an agent's Celery node name: ferry-agent-<HOST>@<machine>
BEAT = 5.0  # seconds between an agent's progress messages when the copy reports none
CHECK = 1.0  # seconds between an agent's checks that a copy's apply still waits for it
POLL = 1.0  # seconds the coordinator waits for a message before checking stop and silence
WAIT_NOTICE = 5.0  # seconds a copy waits for an agent before the apply says it waits
CONNECT_RETRIES = 2

log = logging.getLogger(__name__)


def queue_name(host_name: str) -> str:
    """The queue a conversion host's agent consumes: ferry.host.<NAME>."""
    return f"{QUEUE_PREFIX}{host_name}"


@dataclass(frozen=True)
class Broker:
    """The spec's execution block, resolved: the URL (never with a password), the password
    (kept out of repr, argv, logs, state and plans), the CA file for amqps://, and the
    silence timeout in seconds."""

    url: str
    password: str = field(repr=False)
    ca_file: Path | None = None
    timeout: float = TIMEOUT

    @property
    def tls(self) -> bool:
        return self.url.startswith("amqps://")


def broker_from_spec(spec: Mapping[str, Any], env: Mapping[str, str]) -> Broker | None:
    """The validated spec's `execution` block as a Broker; None without one (in-process).
    The password comes from broker_password_file, else the variable broker_password_env
    (default FERRY_BROKER_PASSWORD). Raises UserError when it cannot be read."""
    execution = spec.get("execution")
    if not isinstance(execution, dict) or not execution.get("broker"):
        return None
    block: dict[str, Any] = {"password_env": execution.get("broker_password_env", PASSWORD_ENV)}
    if "broker_password_file" in execution:
        block = {"password_file": execution["broker_password_file"]}
    ca_file = (execution.get("tls") or {}).get("ca_file")
    return Broker(
        url=str(execution["broker"]),
        password=read_secret(block, "broker", dict(env)),
        ca_file=Path(ca_file) if ca_file else None,
        timeout=float(execution.get("timeout", TIMEOUT)),
    )


class _OneLine(logging.Filter):
    """Drops the traceback Celery's rpc result consumer logs with its reconnect warning (a
    broker restarting is an event, not a crash: the warning's line stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("celery.backends.rpc").addFilter(_OneLine())


def make_app(broker: Broker) -> Celery:
    """A Celery app on `broker`: JSON only, late acknowledgement, one prefetched message per
    slot, results (task states) over rpc://; amqps:// verifies the broker's certificate (the
    spec's CA, else the system's) and its host name."""
    app = Celery("ferry", set_as_current=False)
    app.conf.update(
        broker_url=broker.url,
        broker_password=broker.password,
        broker_use_ssl=_tls_options(broker) if broker.tls else False,
        broker_connection_retry_on_startup=True,
        result_backend="rpc://",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # RabbitMQ closes a channel whose delivery stays unacknowledged past its consumer_timeout
        # (30 min by default) and requeues the message: a channel error the worker must survive
        # (without this Celery 5 shuts the agent down, "Unrecoverable error: PreconditionFailed",
        # killing every copy), keeping its running copies (Celery 6 will cancel them by default)
        # while run_task joins the redelivered message to the copy that still runs.
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


def _tls_options(broker: Broker) -> dict[str, Any]:
    options: dict[str, Any] = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": urlsplit(broker.url).hostname,
    }
    if broker.ca_file is not None:
        options["ca_certs"] = str(broker.ca_file)
    return options


def check_broker(app: Celery) -> None:
    """Connect once (a few retries): a wrong URL, password or CA is one clear line before
    anything is changed. Raises UserError naming the broker (its password masked)."""
    with app.connection_for_write() as conn:
        uri = conn.as_uri()  # amqp://user:**@host:port/vhost
        try:
            conn.ensure_connection(max_retries=CONNECT_RETRIES, interval_start=0.5)
        except Exception as exc:
            raise UserError(f"cannot connect to the broker {uri}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- the coordinator's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """Sends host-bound syncs to agents: one Celery app (its own connections) per sync, so
    parallel syncs in the walker's threads share no connection."""

    broker: Broker
    spec_digest: str

    def sync(
        self, host_name: str, job: SyncJob, calls: Callbacks, say: Callable[[str], None]
    ) -> SyncResult:
        """Run `job` on `host_name`'s agent and return its result, relaying its progress,
        checkpoints and rewrite to `calls` as they arrive; `calls.cancel` set: the agent stops
        at its next checkpoint (a task no agent took yet is revoked). `say` gets a line when an
        agent takes the job (or takes it again after a redelivery).

        Raises what the agent's sync raised (VerifyError, DataplaneError, StoppedError, ...),
        AgentError when no agent takes the job or the agent goes silent for the timeout (naming
        the host), or refuses it."""
        return SyncResult(**self._run(TASK, host_name, job.to_json(), calls, say))

    def compare(
        self, host_name: str, job: SyncJob, cancel: threading.Event, say: Callable[[str], None]
    ) -> SyncResult:
        """A `--verify` compare (host.compare) on `host_name`'s agent; raises as `sync`."""
        return SyncResult(**self._run(COMPARE_TASK, host_name, job.to_json(), _on(cancel), say))

    def convert(
        self, host_name: str, job: ConvertJob, cancel: threading.Event, say: Callable[[str], None]
    ) -> ConvertResult:
        """A guest's conversion (host.convert) on `host_name`'s agent, its output in the agent's
        log directory; `say` also gets the agent's line when the tool starts. Raises as `sync`
        (ConversionError when the tool failed)."""
        return ConvertResult(**self._run(CONVERT_TASK, host_name, job.to_json(), _on(cancel), say))

    def answering(self, timeout: float = ASK_TIMEOUT) -> set[str]:
        """The conversion hosts whose agent answers a ping on the broker within `timeout`
        seconds (Celery's remote control, one broadcast). Raises AgentError when the broker
        cannot be reached."""
        app = make_app(self.broker)
        try:
            return agents_of(app.control.ping(timeout=timeout))
        except BROKER_ERRORS as exc:
            raise AgentError(f"cannot ask the agents on the broker: {_one_line(exc)}") from exc
        finally:
            app.close()

    def _run(
        self,
        task: str,
        host_name: str,
        job: dict[str, Any],
        calls: Callbacks,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Send `task` with `job` to `host_name`'s queue and wait for its result (a dict)."""
        app = make_app(self.broker)
        try:
            sent = app.send_task(task, args=[job, self.spec_digest], queue=queue_name(host_name))
            waiter = _Waiter(app, sent, host_name, calls, say, self.broker.timeout, STEPS[task])
            return waiter.wait()
        except BROKER_ERRORS as exc:
            raise AgentError(lost_broker(host_name, exc, STEPS[task])) from exc
        except RuntimeError as exc:  # Celery's rpc consumer could not reconnect
            if "reconnect" not in str(exc):
                raise
            raise AgentError(lost_broker(host_name, exc, STEPS[task])) from exc
        finally:
            app.close()


def agents_of(replies: list[dict[str, Any]]) -> set[str]:
    """The host names of the ferry agents among Celery ping replies ([{node name: {"ok":
    "pong"}}, ...]; an agent's node is ferry-agent-<HOST>@<machine>, other workers are left
    out)."""
    nodes = (node for reply in replies for node, answer in reply.items() if answer)
    return {
        node.rsplit("@", 1)[0].removeprefix(NODE_PREFIX)
        for node in nodes
        if node.startswith(NODE_PREFIX) and "@" in node
    }


def _on(cancel: threading.Event) -> Callbacks:
    """Callbacks of a step that reports no progress: only its stop."""
    return Callbacks(cancel=cancel)


@dataclass(frozen=True)
class OnHost:
    """Where the host-bound steps run: in this process on `host` (no broker configured: the
    single-host default), or on the named conversion host's agent through `remote`. A compare
    of a local file (image mode, no server) always runs here."""

    host: host.Host
    remote: Remote | None

    def sync(
        self, host_name: str, job: SyncJob, calls: Callbacks, say: Callable[[str], None]
    ) -> SyncResult:
        """host.sync, here or on `host_name`'s agent; raises what it raises."""
        if self.remote is None:
            return host.sync(job, self.host, calls)
        return self.remote.sync(host_name, job, calls, say)

    def compare(
        self, host_name: str, job: SyncJob, cancel: threading.Event, say: Callable[[str], None]
    ) -> SyncResult:
        """host.compare, here or on `host_name`'s agent; raises what it raises."""
        if self.remote is None or not job.host_id:
            return host.compare(job, self.host, cancel)
        return self.remote.compare(host_name, job, cancel, say)

    def convert(
        self,
        host_name: str,
        job: ConvertJob,
        log_dir: Path,
        cancel: threading.Event,
        say: Callable[[str], None],
    ) -> ConvertResult:
        """host.convert, here (its output in `log_dir`) or on `host_name`'s agent (in the
        agent's log directory); `say` gets the line the tool starts with. Raises what it
        raises."""
        if self.remote is None:
            return host.convert(job, self.host, log_dir, cancel, say)
        return self.remote.convert(host_name, job, cancel, say)


@dataclass
class _Waiter:
    """Waits for one task's result, relaying its PROGRESS states."""

    app: Celery
    sent: Any  # celery.result.AsyncResult
    host_name: str
    calls: Callbacks
    say: Callable[[str], None]
    timeout: float
    step: str = "copy"  # what the task runs: copy | compare | conversion (STEPS)
    last: float = field(default_factory=time.monotonic)
    agent: str | None = None
    mark: int | None = None
    rewritten: bool = False
    done: tuple[int, int] | None = None
    revoked: bool = False
    noticed: bool = False
    note: str | None = None

    def wait(self) -> dict[str, Any]:
        while True:
            try:
                envelope = self.sent.get(
                    timeout=POLL, on_message=self._message, propagate=False, interval=0.2
                )
            except CeleryTimeout:
                self._check()
                continue
            return self._outcome(envelope)

    def _message(self, body: dict[str, Any]) -> None:
        self.last = time.monotonic()
        if body.get("status") != "PROGRESS":
            return
        meta = body.get("result") or {}
        agent = str(meta.get("agent", "?"))
        if agent != self.agent or meta.get("started"):
            again = " again (redelivered)" if meta.get("redelivered") else ""
            resumed = meta.get("resumed_at")
            at = f", resumed at its checkpoint, byte {resumed}" if isinstance(resumed, int) else ""
            queue = queue_name(self.host_name)
            self.say(f"taken{again} by agent {agent} (queue {queue}) for the {self.step}{at}")
            self.agent, self.mark, self.rewritten, self.done = agent, None, False, None
        note = meta.get("note")
        if isinstance(note, str) and note != self.note:
            self.note = note
            self.say(note)
        if meta.get("rewritten") and not self.rewritten:
            self.rewritten = True
            self.calls.rewritten()
        mark = meta.get("checkpoint")
        if isinstance(mark, int) and mark != self.mark:
            self.mark = mark
            self.calls.checkpoint(mark)
        done, total = meta.get("done"), meta.get("total")
        if isinstance(done, int) and isinstance(total, int) and (done, total) != self.done:
            self.done = (done, total)  # a beat repeats it: progress is relayed once
            self.calls.progress(done, total)

    def _check(self) -> None:
        """Between messages: relay a stop, and give up on a silent host."""
        if self.calls.cancel.is_set() and not self.revoked:
            self.app.control.revoke(self.sent.id)
            self.revoked = True
            if self.agent is None:  # no agent took it: nothing to wait for
                raise StoppedError(
                    f"stopped before an agent on {self.host_name} took the {self.step}"
                )
        silent = time.monotonic() - self.last
        if self.agent is None and not self.noticed and silent >= min(WAIT_NOTICE, self.timeout / 2):
            self.noticed = True
            self.say(waiting_line(self.host_name, self.timeout, self.step))
        if silent < self.timeout:
            return
        self.app.control.revoke(self.sent.id)  # a late agent must not run it after we gave up
        queue = queue_name(self.host_name)
        if self.agent is None:
            raise AgentError(
                f"no agent took the {self.step} from queue {queue} in {self.timeout:.0f} s: is "
                f"`ferry agent --host {self.host_name}` running with this spec and broker?"
            )
        raise AgentError(
            f"agent {self.agent} on conversion host {self.host_name} went silent for "
            f"{self.timeout:.0f} s mid-{self.step} (no agent took it again from queue {queue})"
        )

    def _outcome(self, envelope: Any) -> dict[str, Any]:
        state = self.sent.state
        if state != "SUCCESS" or not isinstance(envelope, dict):
            raise AgentError(
                f"the {self.step} on conversion host {self.host_name} ended {state}: {envelope!r}"
            )
        if "error" in envelope:
            raise _error(envelope["error"], self.host_name)
        return dict(envelope["result"])


BROKER_ERRORS = (OSError, amqp_exceptions.AMQPError, KombuError)


def lost_broker(host_name: str, exc: BaseException, step: str = "copy") -> str:
    """The line for a `step` (copy, compare, conversion) whose broker connection broke
    (RabbitMQ restarted or unreachable): a new apply resumes from the state's checkpoint (the
    agent's step stops once it sees this apply's reply queue gone; until then a new step on
    that volume waits for it)."""
    return (
        f"lost the broker while the {step} ran on conversion host {host_name} "
        f"({_one_line(exc)}): apply again to resume from the last checkpoint"
    )


def waiting_line(host_name: str, timeout: float, step: str = "copy") -> str:
    """The status of a `step` (copy, compare, conversion) no agent took yet: names the step,
    the host, its queue and the timeout."""
    return (
        f"waiting for an agent on conversion host {host_name} to take the {step} (queue "
        f"{queue_name(host_name)}; "
        f"fails after {timeout:.0f} s without one, execution.timeout)"
    )


def _error(error: dict[str, Any], host_name: str) -> FerryError:
    """The FerryError an agent reported, as its class (a name outside engine.errors' FerryError
    classes becomes an AgentError naming the host)."""
    kind = getattr(errors, str(error.get("type")), None)
    message = str(error.get("message", ""))
    if isinstance(kind, type) and issubclass(kind, StoppedError):
        moved = error.get("moved") or {}
        return kind(message, {str(k): int(v) for k, v in dict(moved).items()})
    if isinstance(kind, type) and issubclass(kind, FerryError) and kind is not AgentError:
        return kind(message)
    return AgentError(f"conversion host {host_name}: {message}")


# -- the agent's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """One conversion host's agent: its name (the Nova server's, as the spec lists it), the
    server's ID, the digest of the spec it was started with, the host's seams, the
    directory of its checkpoint journal (None: none kept, a redelivered copy starts over) and
    the directory its conversions' logs go to (None: the journal's `logs`, else a temporary
    one)."""

    name: str
    host_id: str
    spec_digest: str
    host: host.Host
    checkpoints: Path | None = None
    log_dir: Path | None = None

    def logs(self) -> Path:
        """Where the conversions' output goes: <log_dir>, else <checkpoints>/logs."""
        if self.log_dir is not None:
            return self.log_dir
        if self.checkpoints is not None:
            return self.checkpoints / "logs"
        return Path(tempfile.gettempdir()) / f"ferry-agent-{self.name}"


def register(app: Celery, agent: Agent) -> None:
    """Register the host-bound tasks (`ferry.sync`, `ferry.compare`, `ferry.convert`) on
    `app`, running on `agent`'s host."""
    for name in (TASK, COMPARE_TASK, CONVERT_TASK):
        _register(app, agent, name)


def _register(app: Celery, agent: Agent, name: str) -> None:
    @app.task(name=name, bind=True)  # type: ignore[untyped-decorator]
    def ferry_step(task: Any, job: dict[str, Any], digest: str) -> dict[str, Any]:
        return run_task(task, agent, job, digest, step=name)


def run_task(
    task: Any, agent: Agent, job: dict[str, Any], digest: str, step: str = TASK
) -> dict[str, Any]:
    """One task (`step`: TASK, COMPARE_TASK or CONVERT_TASK): refused on a spec digest or
    server that is not the agent's, else the step run with progress reported; every failure is
    returned as {"error": {type, message}}.

    A delivery of a task this agent is running (or ran lately) gets that run's outcome instead
    of a second writer on the same volume: RabbitMQ requeues a late-acknowledged message when
    it closes the channel for its consumer_timeout (default 30 min, shorter than a large disk's
    copy) and delivers it again once the worker reconnects, while the first copy still runs."""
    task_id = str(task.request.id)
    key = _run_key(task_id, job, digest)
    owner, run = _RUNS.claim(key)
    if not owner:
        log.warning(
            "task %s was delivered again while this agent runs its %s (the broker took back "
            "the unacknowledged delivery: its consumer_timeout is shorter than the %s): "
            "waiting for that %s instead of starting a second one",
            task_id,
            STEPS[step],
            STEPS[step],
            STEPS[step],
        )
        run.done.wait()
        return run.outcome
    try:
        if step == TASK:
            run.outcome = _run_task(task, agent, job, digest)
        else:
            run.outcome = _run_step(task, agent, job, digest, step)
    finally:
        _RUNS.finish(key)
    return run.outcome


def _run_key(task_id: str, job: dict[str, Any], digest: str) -> str:
    """A delivery's identity: its task ID and its arguments (a redelivery carries the same)."""
    args = json.dumps([job, digest], sort_keys=True).encode()
    return f"{task_id}:{hashlib.sha256(args).hexdigest()}"


def _run_task(task: Any, agent: Agent, job: dict[str, Any], digest: str) -> dict[str, Any]:
    task_id = str(task.request.id)
    journal = Journal(agent.checkpoints, _run_key(task_id, job, digest))
    try:
        return _run_job(task, agent, job, digest, journal)
    finally:
        journal.drop()  # the outcome goes back to the apply; only a dead agent leaves one


def _run_job(
    task: Any, agent: Agent, job: dict[str, Any], digest: str, journal: Journal
) -> dict[str, Any]:
    refusal = _refusal(agent, job, digest, TASK) or _sender_gone(task, TASK)
    if refusal:
        log.warning("refused task %s: %s", task.request.id, refusal)
        return {"error": {"type": "AgentError", "message": refusal}}
    task_id = str(task.request.id)
    reporter = _Reporter(task, agent.name, journal)
    try:
        sync_job = resume_from(SyncJob.from_json(job), journal.mark())
        if sync_job.start_at != job.get("start_at", 0):
            reporter.meta["resumed_at"] = sync_job.start_at
        with _VOLUMES.writer(sync_job.volume_id, task_id), reporter.beating():
            log.info(
                "task %s: copy into volume %s from byte %d (job start %d)",
                task_id, sync_job.volume_id, sync_job.start_at, job.get("start_at", 0),
            )  # fmt: skip
            result = host.sync(sync_job, agent.host, reporter.callbacks())
    except FerryError as exc:
        log.info("task %s: ended: %s", task_id, _one_line(exc))
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, StoppedError) and exc.moved:
            error["moved"] = exc.moved  # what the apply reports as read and written
        return {"error": error}
    except Exception as exc:
        log.error("task %s failed:\n%s", task.request.id, traceback.format_exc())
        return {"error": {"type": "AgentError", "message": f"{type(exc).__name__}: {exc}"}}
    log.info("task %s: copy into volume %s done", task_id, sync_job.volume_id)
    return {"result": result.to_json()}


def _run_step(
    task: Any, agent: Agent, job: dict[str, Any], digest: str, step: str
) -> dict[str, Any]:
    """A compare or a conversion: no checkpoint to resume from; one writer per volume still
    (a conversion holds every volume it converts)."""
    refusal = _refusal(agent, job, digest, step) or _sender_gone(task, step)
    if refusal:
        log.warning("refused task %s: %s", task.request.id, refusal)
        return {"error": {"type": "AgentError", "message": refusal}}
    task_id = str(task.request.id)
    reporter = _Reporter(task, agent.name)
    try:
        with contextlib.ExitStack() as held:
            if step == COMPARE_TASK:
                compare = SyncJob.from_json(job)
                held.enter_context(_VOLUMES.writer(compare.volume_id, task_id))
                held.enter_context(reporter.beating())
                log.info("task %s: compare volume %s", task_id, compare.volume_id)
                outcome = host.compare(compare, agent.host, reporter.cancel).to_json()
            else:
                convert = ConvertJob.from_json(job)
                for volume_id in sorted(convert.volume_ids):
                    held.enter_context(_VOLUMES.writer(volume_id, task_id))
                held.enter_context(reporter.beating())
                log.info(
                    "task %s: convert %s on volumes %s",
                    task_id, convert.name, ", ".join(convert.volume_ids),
                )  # fmt: skip
                outcome = host.convert(
                    convert, agent.host, agent.logs(), reporter.cancel, reporter.note
                ).to_json()
    except FerryError as exc:
        log.info("task %s: ended: %s", task_id, _one_line(exc))
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
    (an apply that took over from a killed one, before the old copy stopped) waits for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def writer(self, volume_id: str, task_id: str) -> Any:
        with self.lock:
            lock = self.locks.setdefault(volume_id, threading.Lock())
        if not lock.acquire(blocking=False):
            log.warning(
                "task %s waits for the task that still writes volume %s to stop",
                task_id, volume_id,
            )  # fmt: skip
            lock.acquire()
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
    """Why `agent` refuses `task`'s job ("": it runs it), naming the step (STEPS)."""
    step = STEPS[task]
    if digest != agent.spec_digest:
        return (
            f"agent {agent.name} refused the {step}: the coordinator's spec (digest {digest[:12]}) "
            f"differs from the agent's ({agent.spec_digest[:12]}): start both with the same spec"
        )
    if job.get("host_id") != agent.host_id:
        return (
            f"agent {agent.name} (server {agent.host_id}) refused a {step} for server "
            f"{job.get('host_id')}"
        )
    return ""


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
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        self.meta: dict[str, Any] = {
            "agent": agent,
            "redelivered": redelivered,
            "started": True,
            "done": None,
            "total": None,
            "checkpoint": None,
            "rewritten": False,
            "note": None,
        }

    def callbacks(self) -> Callbacks:
        return Callbacks(self.checkpoint, self.rewritten, self.progress, self.cancel)

    def checkpoint(self, mark: int) -> None:
        if self.journal is not None:
            try:
                self.journal.save(mark)
            except OSError as exc:  # a journal is an optimisation: the copy goes on
                log.warning("task %s: checkpoint journal not written: %s", self.task_id, exc)
        self._send(checkpoint=mark)

    def rewritten(self) -> None:
        self._send(rewritten=True)

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
                log.warning("task %s: progress not sent: %s", self.task_id, _one_line(exc))
                return
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
            log.warning("task %s: cannot ask the broker: %s", self.task_id, _one_line(exc))
            self._close()
            return False
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


def serve(app: Celery, agent: Agent, concurrency: int) -> int:
    """Run the agent: a Celery worker consuming only queue ferry.host.<NAME>, `concurrency`
    syncs at once (threads: the worker keeps its broker heartbeats and revokes while copies
    run). Returns the worker's exit code when it is stopped (SIGTERM/SIGINT: warm shutdown,
    running copies finish first; a second signal ends at once, their tasks are redelivered).
    Raises AgentError, before consuming anything, when this host's agent already runs on this
    machine (its worker answers a ping): Celery's worker would fail on its control queue, which
    RabbitMQ gives one connection only (RESOURCE_LOCKED), with a traceback."""
    node = f"{NODE_PREFIX}{agent.name}@{socket.gethostname()}"
    if app.control.ping(destination=[node], timeout=PING_TIMEOUT):
        raise AgentError(
            f"an agent for conversion host {agent.name} already runs on this machine (worker "
            f"{node} answered on the broker): one agent per host; stop it first"
        )
    register(app, agent)
    signals.worker_shutting_down.connect(_exit_once_idle, weak=False)
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
