"""The execution block and the agent protocol without a broker (issue 14): the spec's broker is
validated with clear one-line errors and never carries a password; the Celery app accepts JSON
only and acknowledges late; an agent refuses a job from another spec or for another server; the
coordinator relays an agent's cumulative PROGRESS states (rewrite, checkpoints, progress) and
raises the error class the agent reported."""

from __future__ import annotations

import contextlib
import copy
import re
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.worker import state as worker_state

from engine.cli.app import _run
from engine.errors import AgentError, DataplaneError, StoppedError, UserError, VerifyError
from engine.executor import agent as agent_module
from engine.executor import host as host_module
from engine.executor import remote
from engine.executor.agent import Agent, run_task
from engine.executor.host import Callbacks, ConvertJob, SyncJob, SyncResult
from engine.executor.remote import (
    Broker,
    _error,
    _Waiter,
    broker_from_spec,
    busy_line,
    make_app,
    queue_name,
)
from engine.spec.validate import validate_file
from tests.unit.spec.test_validate import VALID, errors

LINEAGE = "6f1d2c3e-0000-4000-8000-000000000001"  # the state the coordinator's tasks are of

URL = "amqp://ferry@rabbit.example.com:5672/ferry"


def spec_with(execution: dict[str, Any]) -> str:
    return yaml.safe_dump({**copy.deepcopy(VALID), "execution": execution})


def test_a_broker_url_with_user_host_port_and_vhost_is_valid() -> None:
    assert errors(spec_with({"broker": URL})) == []
    assert errors(spec_with({"broker": "amqps://ferry@rabbit:5671/ferry", "timeout": 60})) == []


@pytest.mark.parametrize(
    ("execution", "message"),
    [
        ({"broker": "amqp://ferry:s3cret@rabbit:5672/ferry"}, "without a password"),
        ({"broker": "redis://ferry@rabbit:6379/0"}, "is not a valid broker URL: amqp://USER@"),
        ({"broker": "amqp://rabbit:5672/"}, "is not a valid broker URL"),
        ({}, "missing required key 'broker'"),
        (
            {"broker": URL, "broker_password": "x"},
            "never written in the spec: use broker_password_file or broker_password_env",
        ),
        ({"broker": URL, "tls": {"ca_file": "/ca.pem"}}, "tls is for an amqps:// broker"),
        (
            {"broker": URL, "broker_password_file": "/pw", "broker_password_env": "PW"},
            "give one of broker_password_file or broker_password_env, not both",
        ),
        ({"broker": URL, "timeout": 0}, "execution.timeout"),
    ],
)
def test_a_bad_execution_block_is_one_clear_error(execution: dict[str, Any], message: str) -> None:
    found = errors(spec_with(execution))
    assert len(found) == 1 and message in found[0], found
    assert "s3cret" not in found[0], "a password in the URL is echoed"


def test_the_broker_password_file_is_checked_like_any_password_file(tmp_path: Path) -> None:
    password = tmp_path / "broker-password"
    password.write_text("pw\n")
    password.chmod(0o644)
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_with({"broker": URL, "broker_password_file": str(password)}))
    found = [d.render() for d in validate_file(spec).diagnostics]
    assert any("can be read by others (mode 0644): chmod 600" in f for f in found), found


def test_the_password_comes_from_the_file_or_the_environment_and_is_never_shown(
    tmp_path: Path,
) -> None:
    password = tmp_path / "pw"
    password.write_text("from-file\n")
    spec = {"execution": {"broker": URL, "broker_password_file": str(password)}}
    broker = broker_from_spec(spec, {"FERRY_BROKER_PASSWORD": "from-env"})
    assert broker is not None and broker.password == "from-file"
    assert "from-file" not in repr(broker)
    broker = broker_from_spec({"execution": {"broker": URL}}, {"FERRY_BROKER_PASSWORD": "pw2"})
    assert broker is not None and broker.password == "pw2" and broker.timeout == 300
    with pytest.raises(UserError, match="FERRY_BROKER_PASSWORD holding the broker password"):
        broker_from_spec({"execution": {"broker": URL}}, {})
    assert broker_from_spec({"version": 1}, {}) is None


def test_the_app_takes_json_only_acks_late_and_verifies_amqps() -> None:
    conf = make_app(Broker(URL, "pw")).conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.result_accept_content == ["json"] and conf.result_serializer == "json"
    assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
    # a channel closed for RabbitMQ's consumer_timeout must not end the agent or its copies
    assert conf.broker_channel_error_retry is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.broker_url == URL and "pw" not in conf.broker_url
    tls = make_app(Broker("amqps://ferry@rabbit:5671/ferry", "pw", Path("/ca.pem"))).conf
    assert tls.broker_use_ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "rabbit",
        "ca_certs": "/ca.pem",
    }
    with make_app(Broker(URL, "pw")).connection_for_write() as conn:
        assert conn.as_uri() == "amqp://ferry:**@rabbit.example.com:5672/ferry"


RESULT: dict[str, Any] = {
    "bytes_read": 4096, "bytes_written": 4096, "bytes_zeroed": 0, "bytes_skipped": 0,
    "retries": 0, "seconds": 0.5, "sha256": None, "verified": None, "source": "file", "waited": 0.0,
}  # fmt: skip


class QuietReporter:
    """A task's reporter that sends nothing (no broker); keeps the notes it was given."""

    notes: list[str] = []  # noqa: RUF012

    def __init__(self, _task: Any, _agent: str, _journal: Any = None) -> None:
        self.cancel = threading.Event()
        self.meta: dict[str, Any] = {}

    def note(self, line: str) -> None:
        self.notes.append(line)

    def callbacks(self) -> Callbacks:
        return Callbacks(lambda _m: None, lambda: None, lambda _d, _t: None, self.cancel)

    @contextlib.contextmanager
    def beating(self) -> Any:
        yield


class FakeTask:
    """A bound task's request, as an agent's task sees it (no broker)."""

    class request:  # noqa: N801 - Celery's attribute name
        id = "task-1"
        reply_to = ""
        delivery_info: dict[str, Any] = {}  # noqa: RUF012


def test_an_agent_refuses_a_job_of_another_spec_or_for_another_server() -> None:
    agent = Agent("conv-01", "server-1", "a" * 64, host=None)  # type: ignore[arg-type]
    job = {"host_id": "server-1", "volume_id": "v", "source": {}}
    refused = run_task(FakeTask(), agent, job, "b" * 64, lineage=LINEAGE)
    assert refused["error"]["type"] == "AgentError"
    assert refused["error"]["message"].startswith(
        "agent conv-01 refused the copy: the coordinator's spec differs from the agent's in what "
        "an agent uses (agent digest bbbbbbbbbbbb, the agent's aaaaaaaaaaaa: "
    )
    refused = run_task(FakeTask(), agent, {**job, "host_id": "server-2"}, "a" * 64, lineage=LINEAGE)
    assert "refused a copy for server server-2" in refused["error"]["message"]
    assert isinstance(_error(refused["error"], "conv-01"), AgentError)


def test_a_delivery_of_a_task_the_agent_runs_waits_for_that_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ requeues a delivery unacknowledged past its consumer_timeout and the worker gets
    it again after reconnecting, while the first copy still runs: the second delivery gets the
    first one's outcome, never a second writer on the volume (nor a rerun just after the end)."""
    release, started = threading.Event(), threading.Event()
    synced: list[str] = []

    def sync(job: SyncJob, _host: Any, _calls: Any) -> SyncResult:
        synced.append(job.volume_id)
        started.set()
        assert release.wait(10)
        return SyncResult(**RESULT)

    monkeypatch.setattr(remote.host, "sync", sync)
    monkeypatch.setattr(agent_module, "_sender_gone", lambda _task, _name: "")
    monkeypatch.setattr(agent_module, "_Reporter", QuietReporter)

    class Task(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = "task-redelivered"

    agent = Agent("conv-01", "server-1", "a" * 64, host=None)  # type: ignore[arg-type]
    job = SyncJob("vol-1", "server-1", {"key": 2000}).to_json()
    outcomes: list[dict[str, Any]] = []
    first = threading.Thread(
        target=lambda: outcomes.append(run_task(Task(), agent, job, "a" * 64, lineage=LINEAGE))
    )
    first.start()
    assert started.wait(10)
    again = threading.Thread(
        target=lambda: outcomes.append(run_task(Task(), agent, job, "a" * 64, lineage=LINEAGE))
    )
    again.start()
    again.join(0.3)
    assert again.is_alive(), "the second delivery must wait for the running copy"
    release.set()
    first.join(10)
    again.join(10)
    assert synced == ["vol-1"]  # one writer
    assert outcomes == [{"result": RESULT}, {"result": RESULT}]
    assert run_task(Task(), agent, job, "a" * 64, lineage=LINEAGE) == {
        "result": RESULT
    }  # just after: no rerun
    assert synced == ["vol-1"]
    other = SyncJob("vol-2", "server-1", {"key": 2001}).to_json()  # another task: its own copy
    release.set()
    run_task(Task(), agent, other, "a" * 64, lineage=LINEAGE)
    assert synced == ["vol-1", "vol-2"]


def test_an_agents_error_is_raised_as_its_class() -> None:
    assert type(_error({"type": "VerifyError", "message": "m"}, "h")) is VerifyError
    assert type(_error({"type": "DataplaneError", "message": "m"}, "h")) is DataplaneError
    assert type(_error({"type": "StoppedError", "message": "m"}, "h")) is StoppedError
    other = _error({"type": "Exception", "message": "boom"}, "conv-01")
    assert type(other) is AgentError and str(other) == "conversion host conv-01: boom"


def test_progress_states_are_relayed_in_order_and_a_redelivery_is_said() -> None:
    seen: list[tuple[str, Any]] = []
    said: list[str] = []
    calls = Callbacks(
        checkpoint=lambda m: seen.append(("checkpoint", m)),
        rewritten=lambda: seen.append(("rewritten", None)),
        progress=lambda d, t: seen.append(("progress", (d, t))),
        cancel=threading.Event(),
        written=lambda: seen.append(("written", None)),
    )
    waiter = _Waiter(None, None, "conv-01", calls, said.append, 300)

    def state(**meta: Any) -> dict[str, Any]:
        base = {"agent": "a1", "redelivered": False, "started": False, "done": None}
        return {"status": "PROGRESS", "result": {**base, "total": None, "checkpoint": None,
                                                  "rewritten": False, **meta}}  # fmt: skip

    waiter._message(state(started=True))
    waiter._message(state(rewritten=True, done=5, total=10))
    waiter._message(state(rewritten=True, checkpoint=4, done=6, total=10))
    waiter._message(state(rewritten=True, checkpoint=4, done=7, total=10))
    waiter._message(state(rewritten=True, checkpoint=4, done=7, total=10))  # a beat: nothing new
    waiter._message(state(started=True, redelivered=True))
    waiter._message(state(checkpoint=2, done=2, total=10))
    waiter._message(state(checkpoint=2, done=10, total=10, written=True))
    waiter._message(state(checkpoint=2, done=10, total=10, written=True))  # a beat: once
    assert seen == [
        ("rewritten", None),
        ("progress", (5, 10)),
        ("checkpoint", 4),
        ("progress", (6, 10)),
        ("progress", (7, 10)),
        ("checkpoint", 2),
        ("progress", (2, 10)),
        ("written", None),  # the bytes are on the volume: the coordinator's slot goes
        ("progress", (10, 10)),
    ]
    assert said == [
        f"taken by agent a1 (queue {queue_name('conv-01')}) for the copy",
        "taken again (redelivered) by agent a1 (queue ferry.host.conv-01) for the copy",
    ]


class FakeControl:
    def __init__(self) -> None:
        self.revoked: list[str] = []
        self.active: dict[str, list[dict[str, Any]]] = {}  # `inspect active`'s replies

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)

    def inspect(self, timeout: float) -> Any:
        return type("Inspect", (), {"active": lambda _self: self.active})()


class FakeApp:
    def __init__(self) -> None:
        self.control = FakeControl()


class FakeSent:
    id = "task-9"


def waiter(timeout: float) -> _Waiter:
    return _Waiter(FakeApp(), FakeSent(), "conv-01", Callbacks(), lambda _: None, timeout)


def test_no_agent_or_a_silent_one_fails_naming_the_host_and_revokes_the_task() -> None:
    idle = waiter(300)
    idle._check()  # within the timeout: keeps waiting
    assert idle.app.control.revoked == []
    untaken = waiter(0.01)
    time.sleep(0.02)
    with pytest.raises(AgentError, match=r"no agent took the copy from queue ferry\.host\.conv-01"):
        untaken._check()
    assert untaken.app.control.revoked == ["task-9"]
    silent = waiter(0.01)
    silent.agent = "ferry-agent-conv-01@h"
    time.sleep(0.02)
    with pytest.raises(AgentError, match="on conversion host conv-01 went silent for"):
        silent._check()


def test_an_agent_busy_with_earlier_tasks_is_waited_for_and_an_idle_one_is_not() -> None:
    """CI of stop 22: after a RabbitMQ restart the agent's one free prefetch slot held the
    redelivery of a gone apply's copy (stopping at its checkpoint); the re-run's copy was not
    taken within execution.timeout and failed "no agent took the copy" while the agent ran.
    An agent of the host that answers with tasks running: the step waits its turn, said once;
    one that answers with none running: the line says so."""
    said: list[str] = []
    busy = _Waiter(FakeApp(), FakeSent(), "conv-01", Callbacks(), said.append, 0.01)
    busy.app.control.active = {
        "ferry-agent-conv-01@m1": [{"id": "old-1"}],
        "ferry-agent-conv-02@m2": [],  # another host's agent: not this one
    }
    for _ in range(3):
        time.sleep(0.02)
        busy._check()
    assert busy.app.control.revoked == [] and said[1:] == [busy_line("conv-01", 1)]
    busy.app.control.active["ferry-agent-conv-01@m1"] = []
    time.sleep(0.02)
    with pytest.raises(AgentError, match=r"conv-01 answers but took nothing from queue "):
        busy._check()
    assert busy.app.control.revoked == ["task-9"]


def test_a_stop_revokes_the_task_and_ends_at_once_when_no_agent_took_it() -> None:
    untaken = waiter(300)
    untaken.calls.cancel.set()
    with pytest.raises(StoppedError, match="before an agent on conv-01 took the copy"):
        untaken._check()
    taken = waiter(300)
    taken.agent = "a1"
    taken.calls.cancel.set()
    taken._check()  # the agent stops at its checkpoint and answers StoppedError
    taken._check()
    assert taken.app.control.revoked == ["task-9"]


def test_a_revoked_task_cancels_the_agents_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    class Backend:
        def store_result(self, task_id: str, meta: dict[str, Any], state: str, **_: Any) -> None:
            sent.append({"id": task_id, "state": state, **meta})

    class Task(FakeTask):
        backend = Backend()

    monkeypatch.setattr(agent_module, "BEAT", 0.01)
    reporter = agent_module._Reporter(Task(), "a1")
    with reporter.beating():
        reporter.progress(1, 2)
        worker_state.revoked.add("task-1")
        try:
            assert reporter.cancel.wait(5), "the revoke did not reach the sync"
        finally:
            worker_state.revoked.discard("task-1")
    assert sent[0]["started"] is True and sent[0]["state"] == "PROGRESS"
    assert all(m["id"] == "task-1" and m["agent"] == "a1" for m in sent)
    assert {"done": 1, "total": 2}.items() <= sent[-1].items()


@pytest.mark.parametrize(
    ("execution", "host", "line"),
    [
        (None, "conv-01", r"error: .*spec\.yaml sets no execution\.broker: an agent takes its"),
        ({"broker": URL}, "conv-99", r"error: --host 'conv-99' is not one of the spec's conv"),
        (
            {"broker": URL, "broker_password_env": "UNSET_PW"},
            "conv-01",
            r"error: environment variable UNSET_PW holding the broker password is not set",
        ),
    ],
)
def test_an_agent_started_wrongly_says_so_in_one_line(
    execution: dict[str, Any] | None,
    host: str,
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = tmp_path / "spec.yaml"
    data = copy.deepcopy(VALID) | ({"execution": execution} if execution else {})
    del data["source"]["vcenter"]["tls"]  # its CA file is not here
    spec.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("FERRY_BROKER_PASSWORD", "pw")
    monkeypatch.delenv("UNSET_PW", raising=False)
    monkeypatch.setattr(sys, "argv", ["ferry", "agent", "--host", host, "--spec", str(spec)])
    code = _run()
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    assert len(err.splitlines()) == 1 and re.fullmatch(line + ".*", err.strip()), err


def test_a_stopping_agent_ends_once_its_copies_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's warm shutdown can block on the broker's socket after channels were closed for
    the consumer_timeout: once no copy runs (and not before), the agent ends after the grace."""
    exited = threading.Event()
    monkeypatch.setattr(agent_module, "SHUTDOWN_GRACE", 0.0)
    monkeypatch.setattr(agent_module.os, "_exit", lambda _code: exited.set())
    runs = agent_module._Runs()
    monkeypatch.setattr(agent_module, "_RUNS", runs)
    owner, _ = runs.claim("copy")
    assert owner
    agent_module._exit_once_idle()
    assert not exited.wait(1.0), "ended while a copy ran"
    runs.finish("copy")
    assert exited.wait(5.0), "did not end once the copy ended"


def test_a_second_writer_of_a_volume_says_it_waits_and_stops_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One writer per volume on an agent: the second task waits for the first, says so to its
    apply (a note: taken, not silent), and a stop (revoke, its apply gone) ends the wait."""
    monkeypatch.setattr(agent_module, "CHECK", 0.01)
    volumes = agent_module._Volumes()

    class Reporter:
        def __init__(self) -> None:
            self.cancel = threading.Event()
            self.notes: list[str] = []

        def note(self, line: str) -> None:
            self.notes.append(line)

    second = Reporter()
    with volumes.writer("vol-1", "first"):
        threading.Timer(0.1, second.cancel.set).start()
        waited = volumes.writer("vol-1", "second", second)  # type: ignore[arg-type]
        with pytest.raises(StoppedError, match="while it waited to write volume vol-1"), waited:
            pytest.fail("a second writer ran beside the first")
    assert second.notes == [
        "the agent waits for the earlier task that still writes volume vol-1 to stop "
        "(one writer per volume)"
    ]
    with volumes.writer("vol-1", "third", Reporter()):  # type: ignore[arg-type]
        pass  # the first is done: no wait


def test_a_hosts_slots_bound_the_steps_moving_bytes_and_a_stop_ends_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent runs 2x max_parallel tasks, of which max_parallel move bytes at once
    (host.slot); a step waiting for a slot stops when asked, nothing moved; no slots (the
    in-process apply, bounded by the walker's pool) never waits."""
    monkeypatch.setattr(host_module, "SLOT_WAIT", 0.01)
    one = host_module.Host(None, None, None, threading.BoundedSemaphore(1))  # type: ignore[arg-type]
    cancel = threading.Event()
    with host_module.slot(one, cancel, "the copy into volume v1"):
        threading.Timer(0.05, cancel.set).start()
        with (
            pytest.raises(StoppedError, match="the copy into volume v2 waited for a slot"),
            host_module.slot(one, cancel, "the copy into volume v2"),
        ):
            pytest.fail("two copies moved bytes on a host of one slot")
    with host_module.slot(one, threading.Event(), "the copy into volume v3"):
        pass  # the first gave its slot back
    free = host_module.Host(None, None, None)  # type: ignore[arg-type]
    with host_module.slot(free, cancel, "a"), host_module.slot(free, cancel, "b"):
        pass


def test_with_the_source_off_a_host_whose_agent_stops_answering_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break-it 12n M1: an agent killed right after the pre-power-off check kept production
    off for the whole execution.timeout (69 s at 60 s; 5 min at the default). A cutover's
    final sync (urgent) silent for URGENT_SILENCE seconds asks the host's agents: none
    answering fails it then, revoked; one answering (busy) is waited for, asked again only
    URGENT_SILENCE later; a replicate sync (not urgent) waits out its timeout as before."""
    monkeypatch.setattr(remote, "URGENT_SILENCE", 0.01)
    calm = waiter(300)  # not urgent: no agent answering changes nothing before the timeout
    time.sleep(0.02)
    calm._check()
    assert calm.app.control.revoked == []
    busy = waiter(300)
    busy.urgent = True
    busy.app.control.active = {"ferry-agent-conv-01@m1": [{"id": "old-1"}]}
    time.sleep(0.02)
    busy._check()
    assert busy.app.control.revoked == []
    busy.app.control.active = {}  # the agent died: nothing answers
    time.sleep(0.02)
    busy._check()  # one ask unanswered: a lost answer is not a death (break-it 12o)
    assert busy.app.control.revoked == []
    time.sleep(0.02)
    with pytest.raises(AgentError, match=r"no agent of conversion host conv-01 answers while "
                       r"the source is powered off \(the copy not taken for "):  # fmt: skip
        busy._check()
    assert busy.app.control.revoked == ["task-9"]
    taken = waiter(300)
    taken.urgent, taken.agent = True, "a1"
    time.sleep(0.02)
    taken._check()
    time.sleep(0.02)
    with pytest.raises(AgentError, match="taken by agent a1, then silent for"):
        taken._check()


def test_a_conversion_is_urgent_its_source_being_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break-it 12o H2: an agent killed mid-conversion kept production off for the whole
    execution.timeout (5 min 24 s): a conversion's waiter is urgent, as a final sync's."""
    seen: list[bool] = []

    def run(self: remote.Remote, *_args: object) -> dict[str, object]:
        seen.append(self.urgent)
        return {"seconds": 1.0, "log": "l"}

    monkeypatch.setattr(remote.Remote, "_run", run)
    plain = remote.Remote(remote.Broker("amqp://h", "", None, 60.0), {})
    job = ConvertJob("srv", ["v1"], "t", {}, "log")
    plain.convert("conv-01", job, threading.Event(), lambda _line: None)
    assert seen == [True] and plain.urgent is False
    said = remote.waiting_line("h", 300, urgent=True)
    assert "fails after ~30 s without an agent answering" in said
