"""Host-bound syncs run by a conversion host's `ferry agent`, through Celery on RabbitMQ
(issue 14). Owns the protocol, the Celery app's settings and the coordinator's side of one
remote sync; the agent's side is executor.agent's; what a sync does is executor.host's, what to
copy and the state are the coordinator's (executor.apply), exactly as when the sync runs
in-process.

The protocol, JSON only (no pickle is ever accepted):

- task `ferry.sync` on the queue `ferry.host.<NAME>` (durable), args `[job, agent_digest,
  state_lineage]` (the digest of what the host's agent uses of the spec, `agent_digest`; the
  lineage of the coordinator's state, which its plan was made against):
  `job` is `SyncJob.to_json()`; `ferry.compare` (a `--verify` compare: `SyncJob.to_json()`,
  returns a SyncResult) and `ferry.convert` (`ConvertJob.to_json()`, returns a ConvertResult)
  on the same queue, the same way. The agent refuses a job whose agent digest differs from its
  own spec's (an edit of what only the coordinator uses, a VM's mode or a timeout, is not
  one), that names another server than its own, whose state lineage is not the one it serves
  (the first it ran a task of, recorded in its checkpoint directory: agent.Served), or whose
  apply no longer waits for it (its
  reply queue is gone: the apply ended, was killed or gave up; no `expires`, which would also
  drop a redelivery after a long copy);
- while it runs, the agent sends task states `PROGRESS` with a cumulative meta: {agent,
  redelivered, done, total (data bytes), checkpoint (bytes, or None), rewritten (bool), written
  (bool: the bytes are on the volume, verified when asked; the detach follows), note
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

import hashlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amqp import exceptions as amqp_exceptions
from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu.exceptions import KombuError

from engine import errors
from engine.errors import AgentError, FerryError, StoppedError, UserError
from engine.executor import host
from engine.executor.host import Callbacks, ConvertJob, ConvertResult, SyncJob, SyncResult
from engine.planner.placement import MAX_ATTACHED
from engine.providers.vsphere.session import read_secret

TASK = "ferry.sync"
COMPARE_TASK = "ferry.compare"
CONVERT_TASK = "ferry.convert"
QUEUE_PREFIX = "ferry.host."
STEPS = {TASK: "copy", COMPARE_TASK: "compare", CONVERT_TASK: "conversion"}  # what each runs
PASSWORD_ENV = "FERRY_BROKER_PASSWORD"
TIMEOUT = 300.0  # seconds an agent may be silent (default of execution.timeout)
ASK_TIMEOUT = 2.0  # seconds a coordinator re-placing a VM waits for the agents' answers
# the agents' remote-control command a coordinator asks before a cutover's power-off
# (agent.refusal_of): {"ok": why the agent would refuse this coordinator's tasks, "" if not}
ACCEPTS = "ferry_accepts"
NODE_PREFIX = "ferry-agent-"  # an agent's Celery node name: ferry-agent-<HOST>@<machine>
URGENT_SILENCE = 15.0  # seconds a step silent while its source is off waits before asking
URGENT_ASKS = 2  # asks in a row, URGENT_SILENCE apart, no agent answers before such a step fails
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


def agent_threads(entry: dict[str, Any]) -> int:
    """Tasks an agent's worker runs at once: agent_concurrency, and as many more for urgent
    steps (a cutover's, its source off: the walker's urgent share of the host's pool), at most
    MAX_ATTACHED (each holds an attached volume)."""
    return min(2 * agent_concurrency(entry), MAX_ATTACHED)


def agent_concurrency(entry: dict[str, Any]) -> int:
    """Tasks an agent runs at once: twice its host's `max_parallel`, at most MAX_ATTACHED
    (Nova's cap on volumes attached to one server: a task holds one). Only `max_parallel` of
    them move bytes at once (host.Host.slots); the others attach, detach or wait for a slot,
    so that a copy's attach and detach run beside the other copies' bytes."""
    return min(2 * int(entry.get("max_parallel", 2)), MAX_ATTACHED)


# What an agent reads of the spec, and all of it (engine/cli/agent.py and what it calls:
# broker_from_spec, target_from_spec, cli.apply.host_seams with spec.validate.reader_of,
# connect_destination, agent_concurrency; executor.host reads no spec field: a job carries what
# its step needs, conversion settings and first-boot scripts included). A key maps to None for
# its whole value, to a dict for the keys of its mapping that are read.
VCENTER_FIELDS = (
    "host", "port", "username", "password_file", "password_env", "tls", "vddk_libdir",
    "datastore_path",
)  # fmt: skip
AGENT_FIELDS: dict[str, Any] = {
    "source": {
        "reader": None,
        "lab_dir": None,
        "vcenter": dict.fromkeys(VCENTER_FIELDS),
    },
    "destination": dict.fromkeys(("cloud", "region", "project")),
    "execution": dict.fromkeys(("broker", "broker_password_file", "broker_password_env", "tls")),
}
HOST_FIELDS = ("name", "max_parallel", "devices")  # of the agent's own conversion_hosts entry
AGENT_USES = (
    "source.vcenter's connection, source.reader and lab_dir, destination, execution's broker "
    "and this host's conversion_hosts entry"
)  # the agent digest's fields, for people


def agent_view(spec: Mapping[str, Any], host_name: str) -> dict[str, Any]:
    """What the agent of conversion host `host_name` uses of the validated `spec` (after
    ${NAME} interpolation): AGENT_FIELDS, and HOST_FIELDS of its conversion_hosts entry (None
    when the spec lists no such host)."""
    view = _picked(spec, AGENT_FIELDS)
    entries = [h for h in spec.get("conversion_hosts") or () if isinstance(h, Mapping)]
    entry = next((h for h in entries if h.get("name") == host_name), None)
    own = None if entry is None else {k: entry[k] for k in HOST_FIELDS if k in entry}
    view["conversion_host"] = own
    return view


def _picked(data: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, inner in fields.items():
        if key not in data:
            continue
        value = data[key]
        out[key] = _picked(value, inner) if inner and isinstance(value, Mapping) else value
    return out


def agent_digest(spec: Mapping[str, Any], host_name: str) -> str:
    """The agent digest of conversion host `host_name`: sha256 (hex, 64 characters) of
    `agent_view` as canonical JSON. The coordinator sends it with each task and each
    ACCEPTS question, the agent compares it with its own: they agree exactly when what the
    agent uses of the spec is the same on both sides; a plan keeps the whole spec's digest."""
    canonical = json.dumps(
        agent_view(spec, host_name), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def agent_digests(spec: Mapping[str, Any]) -> dict[str, str]:
    """{conversion host name: its agent digest} for every host the spec lists."""
    names = [h.get("name") for h in spec.get("conversion_hosts") or () if isinstance(h, Mapping)]
    return {str(n): agent_digest(spec, str(n)) for n in names if n}


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
            raise UserError(f"cannot connect to the broker {uri}: {brief(exc)}") from exc


def brief(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its class name when it says nothing)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- the coordinator's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """Sends host-bound syncs to agents: one Celery app (its own connections) per sync, so
    parallel syncs in the walker's threads share no connection."""

    broker: Broker
    digests: Mapping[str, str]  # {conversion host: its agent digest} (agent_digests)
    lineage: str = ""  # the coordinator's state's lineage, which the agent checks
    # the VM's source is powered off (a cutover's final sync): a host whose agent answers no
    # ping for URGENT_SILENCE seconds fails the step then, not after execution.timeout
    urgent: bool = False

    def digest(self, host_name: str) -> str:
        """The agent digest sent to `host_name`'s agent ("" for a host the spec does not list:
        its agent refuses it, saying so)."""
        return self.digests.get(host_name, "")

    def of_state(self, lineage: str) -> Remote:
        """This Remote sending tasks of the state whose lineage is `lineage`."""
        return replace(self, lineage=lineage)

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
        return SyncResult.from_json(self._run(TASK, host_name, job.to_json(), calls, say))

    def compare(
        self, host_name: str, job: SyncJob, cancel: threading.Event, say: Callable[[str], None]
    ) -> SyncResult:
        """A `--verify` compare (host.compare) on `host_name`'s agent; raises as `sync`."""
        return SyncResult.from_json(
            self._run(COMPARE_TASK, host_name, job.to_json(), _on(cancel), say)
        )

    def convert(
        self, host_name: str, job: ConvertJob, cancel: threading.Event, say: Callable[[str], None]
    ) -> ConvertResult:
        """A guest's conversion (host.convert) on `host_name`'s agent, its output in the agent's
        log directory; `say` also gets the agent's line when the tool starts; urgent (Remote.
        urgent): the source is off. Raises as `sync` (ConversionError when the tool failed)."""
        # a guest is converted with its source off: a silent host fails it in ~URGENT_SILENCE
        # x URGENT_ASKS seconds, not execution.timeout (break-it 12o H2: 5 min 24 s down)
        urgent = replace(self, urgent=True)
        job_data = job.to_json()
        return ConvertResult(**urgent._run(CONVERT_TASK, host_name, job_data, _on(cancel), say))

    def answering(self, timeout: float = ASK_TIMEOUT) -> set[str]:
        """The conversion hosts whose agent answers a ping on the broker within `timeout`
        seconds (Celery's remote control, one broadcast). Raises AgentError when the broker
        cannot be reached."""
        app = make_app(self.broker)
        try:
            return agents_of(app.control.ping(timeout=timeout))
        except BROKER_ERRORS as exc:
            raise AgentError(f"cannot ask the agents on the broker: {brief(exc)}") from exc
        finally:
            app.close()

    def refusal(self, host_name: str, timeout: float = ASK_TIMEOUT) -> str | None:
        """Why the agent of `host_name` would refuse this coordinator's tasks (its agent digest
        or the state lineage it serves differ: agent.refusal_of), "" when it would take them,
        None when no agent of the host answers within `timeout` seconds (Celery's remote
        control, one broadcast to that host's nodes). An agent of an older ferry, which does
        not know the command, is refused with a line. Raises AgentError when the broker cannot
        be reached."""
        app = make_app(self.broker)
        try:
            replies = app.control.broadcast(
                ACCEPTS,
                arguments={"digest": self.digest(host_name), "lineage": self.lineage},
                reply=True,
                timeout=timeout,
                limit=1,
                pattern=f"{NODE_PREFIX}{host_name}@*",
                matcher="glob",
            )
        except BROKER_ERRORS as exc:
            raise AgentError(f"cannot ask the agents on the broker: {brief(exc)}") from exc
        finally:
            app.close()
        for reply in replies or ():
            for node, answer in reply.items():
                if isinstance(answer, dict) and isinstance(answer.get("ok"), str):
                    return str(answer["ok"])
                return (
                    f"agent {node} does not answer ferry's checks ({brief(Exception(answer))}): "
                    "run the same ferry version on the coordinator and the agents"
                )
        return None

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
            args = [job, self.digest(host_name), self.lineage]
            sent = app.send_task(task, args=args, queue=queue_name(host_name))
            waiter = _Waiter(app, sent, host_name, calls, say, self.broker.timeout, STEPS[task])
            waiter.urgent = self.urgent
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
    written: bool = False
    done: tuple[int, int] | None = None
    revoked: bool = False
    noticed: bool = False
    note: str | None = None
    busy_said: bool = False
    urgent: bool = False  # Remote.urgent
    asked: float = 0.0  # when the host's agents were last asked (urgent only), monotonic s
    unanswered: int = 0  # the asks in a row no agent of the host answered (urgent only)

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
            self.written = False
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
        if meta.get("written") and not self.written:
            self.written = True
            self.calls.written()
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
            self.say(waiting_line(self.host_name, self.timeout, self.step, self.urgent))
        self._check_urgent(silent)
        if silent < self.timeout:
            return
        queue = queue_name(self.host_name)
        busy = self._busy() if self.agent is None else None
        if busy:  # alive, every task slot taken by earlier tasks: the step waits its turn
            self.last = time.monotonic()
            if not self.busy_said:
                self.busy_said = True
                self.say(busy_line(self.host_name, busy, self.step))
            return
        self.app.control.revoke(self.sent.id)  # a late agent must not run it after we gave up
        if self.agent is None and busy == 0:
            raise AgentError(
                f"the agent of conversion host {self.host_name} answers but took nothing from "
                f"queue {queue} in {self.timeout:.0f} s and runs no task: restart it"
            )
        if self.agent is None:
            raise AgentError(
                f"no agent took the {self.step} from queue {queue} in {self.timeout:.0f} s: is "
                f"`ferry agent --host {self.host_name}` running with this spec and broker?"
            )
        raise AgentError(
            f"agent {self.agent} on conversion host {self.host_name} went silent for "
            f"{self.timeout:.0f} s mid-{self.step} (no agent took it again from queue {queue})"
        )

    def _check_urgent(self, silent: float) -> None:
        """While the VM's source is off (`urgent`): a step silent for URGENT_SILENCE seconds
        whose host has no agent answering (`_busy` None: died after the pre-power-off check,
        or stopped) URGENT_ASKS times in a row, URGENT_SILENCE seconds apart, fails then,
        revoked, so the cutover puts the source back on at once instead of after
        execution.timeout (break-it 12n M1: 69 s, 5 min at the default). An agent that
        answers (busy with earlier tasks, or copying between its beats) is waited for."""
        now = time.monotonic()
        if not self.urgent or silent < URGENT_SILENCE or now - self.asked < URGENT_SILENCE:
            return
        self.asked = now
        if self._busy() is not None:
            self.unanswered = 0
            return
        self.unanswered += 1
        if self.unanswered < URGENT_ASKS:  # one lost answer (a busy broker) is not a death
            return
        self.app.control.revoke(self.sent.id)  # a late agent must not run it after we gave up
        where = f"taken by agent {self.agent}, then silent" if self.agent else "not taken"
        raise AgentError(
            f"no agent of conversion host {self.host_name} answers while the source is powered "
            f"off (the {self.step} {where} for {silent:.0f} s): not waiting the "
            f"{self.timeout:.0f} s of execution.timeout"
        )

    def _busy(self) -> int | None:
        """The tasks the host's agent runs now (Celery's `inspect active`, ASK_TIMEOUT
        seconds), None when no agent of the host answers or the broker cannot be asked."""
        try:
            replies = self.app.control.inspect(timeout=ASK_TIMEOUT).active() or {}
        except BROKER_ERRORS:
            return None
        mine = f"{NODE_PREFIX}{self.host_name}@"
        found = [len(tasks or []) for node, tasks in replies.items() if node.startswith(mine)]
        return max(found) if found else None

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
        f"({brief(exc)}): apply again to resume from the last checkpoint"
    )


def waiting_line(host_name: str, timeout: float, step: str = "copy", urgent: bool = False) -> str:
    """The status of a `step` (copy, compare, conversion) no agent took yet: names the step,
    the host, its queue and when it fails (`urgent`: its source is off, so after
    URGENT_ASKS asks URGENT_SILENCE seconds apart without an agent answering, break-it 12o
    L1)."""
    fails = (
        f"fails after ~{URGENT_SILENCE * URGENT_ASKS:.0f} s without an agent answering: the "
        "source is powered off"
        if urgent
        else f"fails after {timeout:.0f} s without one, execution.timeout"
    )
    return (
        f"waiting for an agent on conversion host {host_name} to take the {step} (queue "
        f"{queue_name(host_name)}; {fails})"
    )


def busy_line(host_name: str, tasks: int, step: str = "copy") -> str:
    """The status of a `step` whose host's agent answers but has not taken it: every task
    slot of it runs an earlier task (an earlier copy, or one of an apply that is gone, which
    stops at its next checkpoint). The step waits on, without a timeout, while it answers."""
    return (
        f"the agent of conversion host {host_name} runs {tasks} earlier task(s) and has not "
        f"taken the {step} yet: it waits its turn (queue {queue_name(host_name)})"
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
