"""The agent's side of issue 14's fault drills, without a broker: a redelivered copy resumes
from the checkpoint the dead agent journaled (not from the job's start); a copy whose apply is
gone (its reply queue deleted) stops at its next checkpoint, while a broker it cannot reach does
not stop it; one writer per volume; a copy no agent took yet says it waits, naming the host."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import AgentError
from engine.executor import agent as agent_module
from engine.executor import remote
from engine.executor.agent import Agent, Journal, _run_key, resume_from, run_task
from engine.executor.host import SyncJob, SyncResult
from tests.unit.executor.test_remote import RESULT, FakeTask, QuietReporter, waiter

LINEAGE = "6f1d2c3e-0000-4000-8000-000000000001"  # the state the coordinator's tasks are of

MiB = 1024**2
SOURCE = {"key": 2000, "capacity": 64 * MiB}


def test_a_job_resumes_at_a_mark_beyond_its_start_without_its_rewrite() -> None:
    job = SyncJob("v", "s", SOURCE, start_at=4 * MiB, rewrite=[(0, MiB)])
    assert resume_from(job, None) is job
    assert resume_from(job, 4 * MiB) is job  # not beyond the start
    assert resume_from(job, 2 * MiB) is job
    resumed = resume_from(job, 10 * MiB)
    assert (resumed.start_at, resumed.rewrite, resumed.volume_id) == (10 * MiB, [], "v")
    with pytest.raises(AgentError, match="beyond the disk's capacity"):
        resume_from(job, 65 * MiB)


def test_the_journal_keeps_one_keys_last_checkpoint(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "agent", "task-1:abc")
    assert journal.mark() is None
    journal.save(MiB)
    journal.save(3 * MiB)
    assert journal.mark() == 3 * MiB
    assert Journal(tmp_path / "agent", "task-1:other").mark() is None  # another delivery's
    assert journal.path is not None
    journal.path.write_text("{not json")
    assert journal.mark() is None
    journal.drop()
    journal.drop()
    assert list((tmp_path / "agent").iterdir()) == []
    nowhere = Journal(None, "task-1:abc")
    nowhere.save(MiB)
    assert nowhere.mark() is None


def test_a_redelivered_copy_starts_at_the_dead_agents_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first delivery journaled 24 MiB and its agent died (the file stays); the same task
    delivered again copies from 24 MiB, says so in its state, and the journal is dropped at its
    end. Another task (a new apply's) for the same volume starts where its job says."""
    starts: list[int] = []

    def sync(job: SyncJob, _host: Any, _calls: Any) -> SyncResult:
        starts.append(job.start_at)
        return SyncResult(**RESULT)

    reporters: list[QuietReporter] = []

    def reporter(*args: Any) -> QuietReporter:
        reporters.append(QuietReporter(*args))
        return reporters[-1]

    monkeypatch.setattr(remote.host, "sync", sync)
    monkeypatch.setattr(agent_module, "_sender_gone", lambda _task, _name: "")
    monkeypatch.setattr(agent_module, "_Reporter", reporter)
    agent = Agent("conv-01", "server-1", "a" * 64, None, tmp_path)  # type: ignore[arg-type]
    job = SyncJob("vol-1", "server-1", SOURCE, start_at=MiB).to_json()
    Journal(tmp_path, _run_key("task-1", job, "a" * 64)).save(24 * MiB)  # the dead agent's

    assert run_task(FakeTask(), agent, job, "a" * 64, lineage=LINEAGE) == {"result": RESULT}
    assert starts == [24 * MiB] and reporters[-1].meta == {"resumed_at": 24 * MiB}
    assert [p.name for p in tmp_path.iterdir()] == ["lineage"]  # its journal dropped

    class Later(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = "task-2"

    run_task(Later(), agent, job, "a" * 64, lineage=LINEAGE)
    assert starts == [24 * MiB, MiB] and reporters[-1].meta == {}


def test_a_second_copy_into_a_volume_waits_for_the_first_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new apply's task for a volume the killed apply's copy still writes (another task ID):
    it starts only once that copy ended."""
    release, started = threading.Event(), threading.Event()
    events: list[str] = []

    def sync(job: SyncJob, _host: Any, _calls: Any) -> SyncResult:
        events.append(f"start {job.start_at}")
        started.set()
        if job.start_at == 0:
            assert release.wait(10)
        events.append(f"end {job.start_at}")
        return SyncResult(**RESULT)

    monkeypatch.setattr(remote.host, "sync", sync)
    monkeypatch.setattr(agent_module, "_sender_gone", lambda _task, _name: "")
    monkeypatch.setattr(agent_module, "_Reporter", QuietReporter)
    agent = Agent("conv-01", "server-1", "a" * 64, host=None)  # type: ignore[arg-type]

    class Old(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = "task-old"

    class New(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = "task-new"

    old = SyncJob("vol-7", "server-1", SOURCE).to_json()
    new = SyncJob("vol-7", "server-1", SOURCE, start_at=MiB).to_json()
    first = threading.Thread(
        target=run_task, args=(Old(), agent, old, "a" * 64), kwargs={"lineage": LINEAGE}
    )
    first.start()
    assert started.wait(10)
    second = threading.Thread(
        target=run_task, args=(New(), agent, new, "a" * 64), kwargs={"lineage": LINEAGE}
    )
    second.start()
    second.join(0.3)
    assert second.is_alive() and events == ["start 0"]
    release.set()
    first.join(10)
    second.join(10)
    assert events == ["start 0", "end 0", f"start {MiB}", f"end {MiB}"]


class Backend:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[dict[str, Any]] = []

    def store_result(self, task_id: str, meta: dict[str, Any], state: str, **_: Any) -> None:
        if self.fail:
            raise ConnectionResetError("Connection reset by peer")
        self.sent.append(dict(meta))


def reporter_with(backend: Backend) -> agent_module._Reporter:
    class App:
        def connection_for_read(self) -> Any:
            return Conn()

    class Conn:
        def release(self) -> None:
            pass

    class Task(FakeTask):
        app = App()

        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            reply_to = "reply-queue-1"

    task = Task()
    task.backend = backend  # type: ignore[attr-defined]
    return agent_module._Reporter(task, "a1")


def test_a_copy_whose_apply_is_gone_stops_and_one_without_broker_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gone (the reply queue was deleted): the sync's cancel is set at the next beat. The broker
    unreachable (restarting): progress is lost, the copy is not stopped nor failed."""
    monkeypatch.setattr(agent_module, "BEAT", 0.01)
    monkeypatch.setattr(agent_module, "CHECK", 0.01)
    asked: list[str | None] = []

    def gone_queue(_conn: Any, reply_to: str | None) -> bool:
        asked.append(reply_to)
        return True

    monkeypatch.setattr(agent_module, "_queue_missing", gone_queue)
    gone = reporter_with(Backend())
    with gone.beating():
        assert gone.cancel.wait(5), "the copy of a gone apply goes on"
    assert asked[0] == "reply-queue-1"  # the request's, whichever thread asks

    def unreachable(_conn: Any, _reply_to: str | None) -> bool:
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(agent_module, "_queue_missing", unreachable)
    lost = reporter_with(Backend(fail=True))
    with lost.beating():
        lost.progress(1, 2)
        lost.checkpoint(1)
        time.sleep(0.1)
    assert not lost.cancel.is_set()


def test_a_copy_no_agent_took_says_it_waits_naming_the_host_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remote, "WAIT_NOTICE", 0.01)
    said: list[str] = []
    untaken = waiter(300)
    untaken.say = said.append
    untaken._check()
    assert said == []
    time.sleep(0.02)
    untaken._check()
    untaken._check()
    assert said == [
        "waiting for an agent on conversion host conv-01 to take the copy (queue "
        "ferry.host.conv-01; fails "
        "after 300 s without one, execution.timeout)"
    ]
    taken = waiter(300)
    taken.say, taken.agent = said.append, "a1"
    time.sleep(0.02)
    taken._check()
    assert len(said) == 1
