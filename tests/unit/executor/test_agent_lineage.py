"""An agent serves one state (issue 14: "an agent refuses a task whose spec digest or state
lineage differs from its own view"; break-it 14 F5: two coordinators with the same spec and
different states were both served). The coordinator's tasks carry its state's lineage; the
agent records the first one it runs in its checkpoint directory and refuses another in one
line naming both, until `ferry agent --forget-lineage`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from engine.cli.app import _run
from engine.executor import agent as agent_module
from engine.executor import remote
from engine.executor.agent import LINEAGE_FILE, Agent, run_task
from engine.executor.host import SyncJob, SyncResult
from engine.executor.remote import Broker, Remote

A, B = "11111111-aaaa-4000-8000-000000000001", "22222222-bbbb-4000-8000-000000000002"
RESULT = SyncResult(1, 1, 0, 0, 0, 0.1).to_json()


class FakeTask:
    class request:  # noqa: N801 - Celery's attribute name
        id = "task-1"
        reply_to = ""
        delivery_info: dict[str, Any] = {}  # noqa: RUF012


class QuietReporter(agent_module._Reporter):
    def send(self, *, force: bool = False) -> None:
        pass


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The volumes the agent's copies wrote (host.sync faked)."""
    done: list[str] = []

    def sync(job: SyncJob, _host: Any, _calls: Any) -> SyncResult:
        done.append(job.volume_id)
        return SyncResult(**RESULT)

    monkeypatch.setattr(agent_module.host, "sync", sync)
    monkeypatch.setattr(agent_module, "_sender_gone", lambda _task, _name: "")
    monkeypatch.setattr(agent_module, "_Reporter", QuietReporter)
    return done


def _task(task_id: str) -> FakeTask:
    class Task(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = task_id

    return Task()  # ids unique across the tests: the agent keeps its last runs' outcomes


def _agent(checkpoints: Path | None) -> Agent:
    return Agent("conv-01", "server-1", "a" * 64, None, checkpoints)  # type: ignore[arg-type]


def _job(volume: str) -> dict[str, Any]:
    return SyncJob(volume, "server-1", {"key": 2000}).to_json()


def test_an_agent_serves_the_first_lineage_and_refuses_another_across_restarts(
    synced: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = _agent(tmp_path)
    assert run_task(_task("t-1"), agent, _job("vol-1"), "a" * 64, lineage=A) == {"result": RESULT}
    assert (tmp_path / LINEAGE_FILE).read_text().strip() == A
    refused = run_task(_task("t-2"), _agent(tmp_path), _job("vol-2"), "a" * 64, lineage=B)
    assert refused["error"]["type"] == "AgentError" and synced == ["vol-1"]
    assert refused["error"]["message"] == (
        f"agent conv-01 refused the copy: the coordinator's state (lineage {B}) is not the one "
        f"this agent serves (lineage {A}): apply with that state, or, once it is done with, run "
        "`ferry agent --host conv-01 --spec SPEC --forget-lineage` on this host"
    )
    argv = ["ferry", "agent", "--host", "conv-01", "--spec", "unread.yaml", "--checkpoints"]
    monkeypatch.setattr(sys, "argv", [*argv, str(tmp_path), "--forget-lineage"])
    assert _run() == 0
    assert capsys.readouterr().out == (
        f"agent conv-01: forgot state lineage {A} ({tmp_path}); its next task's state is the one "
        "it serves\n"
    )
    assert run_task(_task("t-3"), agent, _job("vol-2"), "a" * 64, lineage=B) == {"result": RESULT}
    assert (tmp_path / LINEAGE_FILE).read_text().strip() == B and synced == ["vol-1", "vol-2"]


def test_a_task_refused_for_its_spec_binds_no_lineage_and_none_sent_is_refused(
    synced: list[str],
) -> None:
    agent = _agent(None)  # no checkpoint directory: served for the agent's life
    other_spec = run_task(_task("spec-t-1"), agent, _job("vol-1"), "b" * 64, lineage=B)
    assert "differs from the agent's" in other_spec["error"]["message"]
    assert run_task(_task("spec-t-2"), agent, _job("vol-1"), "a" * 64, lineage=A) == {
        "result": RESULT
    }
    assert (
        "is not the one this agent serves"
        in run_task(_task("spec-t-3"), agent, _job("vol-2"), "a" * 64, lineage=B)["error"][
            "message"
        ]
    )
    unsent = run_task(_task("spec-t-4"), agent, _job("vol-3"), "a" * 64)
    assert unsent["error"]["message"].startswith(
        "agent conv-01 refused the copy: the coordinator sent no state lineage"
    )
    assert synced == ["vol-1"]


def test_the_coordinator_sends_its_states_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[list[Any]] = []

    class App:
        def send_task(self, _name: str, *, args: list[Any], queue: str) -> object:
            sent.append(args)
            return object()

        def close(self) -> None:
            pass

    monkeypatch.setattr(remote, "make_app", lambda _broker: App())
    monkeypatch.setattr(remote._Waiter, "wait", lambda _self: RESULT)
    broker = Broker("amqp://ferry@localhost/ferry", "pw")
    coordinator = Remote(broker, {"conv-01": "a" * 64, "conv-02": "c" * 64}, lineage=A)
    coordinator.sync("conv-01", SyncJob("vol-1", "server-1", {}), remote.Callbacks(), print)
    coordinator.sync("conv-02", SyncJob("vol-2", "server-2", {}), remote.Callbacks(), print)
    assert sent == [  # each host's own agent digest
        [SyncJob("vol-1", "server-1", {}).to_json(), "a" * 64, A],
        [SyncJob("vol-2", "server-2", {}).to_json(), "c" * 64, A],
    ]


def test_asked_before_a_power_off_the_agent_says_why_it_would_refuse_and_claims_nothing(
    tmp_path: Path,
) -> None:
    """Break-it 12m F6: the coordinator asks the placed host's agent (remote.Remote.refusal, a
    Celery control command) before a cutover's power-off; the answer is the refusal its task
    would get, and asking binds no lineage."""
    agent = _agent(tmp_path)
    assert agent_module.refusal_of(agent, "a" * 64, A) == ""
    assert not (tmp_path / LINEAGE_FILE).exists()  # asked, not claimed
    assert agent_module.refusal_of(agent, "b" * 64, A) == (
        "agent conv-01 refused the cutover's final sync: the coordinator's spec differs from "
        "the agent's in what an agent uses (agent digest bbbbbbbbbbbb, the agent's aaaaaaaaaaaa: "
        "source.vcenter's connection, source.reader and lab_dir, destination, execution's "
        "broker and this host's conversion_hosts entry): restart the agent with the "
        "coordinator's spec"
    )
    assert agent_module.refusal_of(agent, "", A) == (
        "agent conv-01 refused the cutover's final sync: the coordinator's spec does not list "
        "conversion host conv-01: apply with the spec this agent was started with"
    )
    assert "sent no state lineage" in agent_module.refusal_of(agent, "a" * 64, "")
    (tmp_path / LINEAGE_FILE).write_text(A + "\n")
    assert agent_module.refusal_of(agent, "a" * 64, A) == ""
    assert f"is not the one this agent serves (lineage {A})" in agent_module.refusal_of(
        agent, "a" * 64, B
    )
    memory = _agent(None)  # no checkpoint directory: the lineage served in memory
    assert agent_module.refusal_of(memory, "a" * 64, B) == "" and memory.served == {}


def test_the_coordinator_reads_the_agents_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []
    replies: list[list[dict[str, Any]]] = [
        [{"ferry-agent-conv-01@box": {"ok": ""}}],
        [{"ferry-agent-conv-01@box": {"ok": "agent conv-01 refused the cutover's final sync"}}],
        [],
        [{"ferry-agent-conv-01@box": {"error": "No such command"}}],
    ]

    class App:
        class control:  # noqa: N801 - Celery's attribute name
            @staticmethod
            def broadcast(command: str, **kwargs: Any) -> list[dict[str, Any]]:
                asked.append({"command": command, **kwargs})
                return replies.pop(0)

        def close(self) -> None:
            pass

    monkeypatch.setattr(remote, "make_app", lambda _broker: App())
    broker = Broker("amqp://ferry@localhost/ferry", "pw")
    coordinator = Remote(broker, {"conv-01": "a" * 64}, lineage=A)
    assert coordinator.refusal("conv-01") == ""
    assert asked[0]["arguments"] == {"digest": "a" * 64, "lineage": A}
    assert asked[0]["pattern"] == "ferry-agent-conv-01@*" and asked[0]["limit"] == 1
    assert coordinator.refusal("conv-01") == "agent conv-01 refused the cutover's final sync"
    assert coordinator.refusal("conv-01") is None  # no agent of the host answered
    assert "run the same ferry version" in str(coordinator.refusal("conv-01"))
