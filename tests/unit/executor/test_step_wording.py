"""The agents' and the coordinator's lines name the step a task runs (issue 14): a compare or a
conversion sent to an agent is not called a copy — in the apply's lines (taken, waiting, no
agent, silent, lost broker, stopped) and in the agent's refusals and log."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import AgentError, StoppedError
from engine.executor import agent as agent_module
from engine.executor import host as host_module
from engine.executor import remote
from engine.executor.agent import Agent, run_task
from engine.executor.host import Callbacks, ConvertJob, ConvertResult
from engine.executor.remote import (
    COMPARE_TASK,
    CONVERT_TASK,
    TASK,
    _Waiter,
    lost_broker,
    waiting_line,
)
from tests.unit.executor.test_remote import FakeApp, FakeSent, FakeTask, QuietReporter

LINEAGE = "6f1d2c3e-0000-4000-8000-000000000001"  # the state the coordinator's tasks are of


def _waiter(step: str, timeout: float = 300) -> _Waiter:
    return _Waiter(FakeApp(), FakeSent(), "conv-01", Callbacks(), lambda _: None, timeout, step)


def test_the_apply_says_which_step_an_agent_takes_or_no_agent_took() -> None:
    said: list[str] = []
    compare = _waiter("compare")
    compare.say = said.append
    compare._message({"status": "PROGRESS", "result": {"agent": "a1", "started": True}})
    assert said == ["taken by agent a1 (queue ferry.host.conv-01) for the compare"]
    assert waiting_line("conv-01", 300, "conversion").startswith(
        "waiting for an agent on conversion host conv-01 to take the conversion (queue "
    )
    untaken = _waiter("conversion", 0.01)
    time.sleep(0.02)
    with pytest.raises(AgentError, match=r"^no agent took the conversion from queue "):
        untaken._check()
    silent = _waiter("compare", 0.01)
    silent.agent = "a1"
    time.sleep(0.02)
    with pytest.raises(AgentError, match=r"went silent for 0 s mid-compare \(no agent"):
        silent._check()
    stopped = _waiter("compare")
    stopped.calls.cancel.set()
    with pytest.raises(StoppedError, match=r"before an agent on conv-01 took the compare$"):
        stopped._check()
    assert lost_broker("conv-01", OSError("gone"), "conversion").startswith(
        "lost the broker while the conversion ran on conversion host conv-01 (gone)"
    )


def _task(task_id: str) -> Any:
    """A bound task of its own id (an agent runs a task id and arguments once)."""

    class Task(FakeTask):
        app = None  # the broker's app: only _reply_queue_gone (faked here) uses it

        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = task_id

    return Task()


def test_an_agent_refuses_and_logs_each_step_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A compare and a conversion for another spec or server are refused by name (it said "the
    copy" / "a copy" of all three); a task whose apply is gone says what it was; the agent's log
    says which step ended ("ferry.convert done" before)."""
    agent = Agent("conv-b", "id-b", "a" * 64, host=None, checkpoints=tmp_path)  # type: ignore[arg-type]
    job = ConvertJob("id-b", ["vol-1"], "web01", {"disks": []}, "web01").to_json()
    monkeypatch.setattr(agent_module, "_reply_queue_gone", lambda _app, _reply: False)
    other_spec = run_task(_task("w-1"), agent, job, "b" * 64, lineage=LINEAGE, step=CONVERT_TASK)
    assert other_spec["error"]["message"].startswith("agent conv-b refused the conversion: ")
    elsewhere = {**job, "host_id": "id-c"}
    other_server = run_task(
        _task("w-2"), agent, elsewhere, "a" * 64, lineage=LINEAGE, step=COMPARE_TASK
    )
    assert "refused a compare for server id-c" in other_server["error"]["message"]
    monkeypatch.setattr(agent_module, "_reply_queue_gone", lambda _app, _reply: True)
    gone = run_task(_task("w-3"), agent, job, "a" * 64, lineage=LINEAGE, step=CONVERT_TASK)
    assert gone["error"]["message"] == (
        "the apply that sent this conversion no longer waits for it: not run"
    )
    assert remote.STEPS == {TASK: "copy", COMPARE_TASK: "compare", CONVERT_TASK: "conversion"}

    monkeypatch.setattr(agent_module, "_reply_queue_gone", lambda _app, _reply: False)
    monkeypatch.setattr(agent_module, "_Reporter", QuietReporter)
    monkeypatch.setattr(host_module, "convert", lambda *_a: ConvertResult(1.0, "x.log"))
    with caplog.at_level(logging.INFO, logger=agent_module.__name__):
        assert "result" in run_task(
            _task("w-4"), agent, job, "a" * 64, lineage=LINEAGE, step=CONVERT_TASK
        )
    assert any(r.getMessage().endswith(": conversion done") for r in caplog.records), caplog.text
