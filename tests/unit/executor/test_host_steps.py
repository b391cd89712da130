"""The host-bound steps besides the sync (issue 14): a `--verify` compare and a conversion run
where the VM's copies run. Without a broker (or for image mode's local file) in this process,
exactly as before; with one, on the placed host's agent, as plain JSON jobs that the agent
refuses for another server and answers with plain results or an error value."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.executor import agent as agent_module
from engine.executor import remote
from engine.executor.agent import Agent, run_task
from engine.executor.host import ConvertJob, ConvertResult, SyncJob, SyncResult, compare_job
from engine.executor.remote import COMPARE_TASK, CONVERT_TASK, OnHost, _error
from engine.model.state import VERIFIED_WHOLE
from tests.unit.executor.test_remote import FakeTask, QuietReporter

LINEAGE = "6f1d2c3e-0000-4000-8000-000000000001"  # the state the coordinator's tasks are of

RESULT = SyncResult(0, 0, 0, 0, 0, 1.5, "ab" * 32, VERIFIED_WHOLE)
SOURCE = {"vm_moref": "vm-1", "instance_uuid": "u", "snapshot_moref": "snap-1", "key": 2000,
          "capacity": 4096, "file_name": "a.vmdk", "thin": True, "change_id": "c/1"}  # fmt: skip


class Queues:
    """A stand-in for executor.remote.Remote: records which host each step was sent to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def compare(self, host_name: str, job: SyncJob, _cancel: Any, _say: Any) -> SyncResult:
        self.sent.append(("compare", host_name, job.host_id))
        return RESULT

    def convert(self, host_name: str, job: ConvertJob, _cancel: Any, _say: Any) -> ConvertResult:
        self.sent.append(("convert", host_name, job.host_id))
        return ConvertResult(2.0, "/agent/logs/web01.log")


def test_compares_and_conversions_go_to_the_placed_hosts_agent_and_stay_here_without_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    here: list[str] = []
    monkeypatch.setattr(remote.host, "compare", lambda job, _h, _c: here.append(job.volume_id))
    monkeypatch.setattr(
        remote.host, "convert", lambda job, _h, log_dir, _c, _s: here.append(str(log_dir))
    )
    volume = compare_job("vol-1", "id-b", SOURCE, None)
    converting = ConvertJob("id-b", ["vol-1"], "web01", {"disks": []}, "web01")
    queues = Queues()
    sent = OnHost(None, queues)  # type: ignore[arg-type]
    stop = threading.Event()
    assert sent.compare("conv-b", volume, stop, print) == RESULT
    assert sent.convert("conv-b", converting, tmp_path, stop, print).seconds == 2.0
    assert queues.sent == [("compare", "conv-b", "id-b"), ("convert", "conv-b", "id-b")]
    assert here == []
    sent.compare("", compare_job(str(tmp_path / "disk-2000.raw"), "", SOURCE, None), stop, print)
    assert here == [str(tmp_path / "disk-2000.raw")]  # image mode's file: compared here
    alone = OnHost(None, None)  # type: ignore[arg-type]
    alone.compare("conv-a", volume, stop, print)
    alone.convert("conv-a", converting, tmp_path, stop, print)
    assert here[1:] == ["vol-1", str(tmp_path)] and len(queues.sent) == 2


def test_the_jobs_are_plain_json_both_ways() -> None:
    volume = compare_job("vol-1", "id-b", SOURCE, [(0, 4096)])
    assert volume.verify == VERIFIED_WHOLE
    assert SyncJob.from_json(json.loads(json.dumps(volume.to_json()))) == volume
    job = ConvertJob("id-b", ["vol-1", "vol-2"], "web01", {"disks": [{"key": 2000}]}, "web01")
    assert ConvertJob.from_json(json.loads(json.dumps(job.to_json()))) == job


def test_an_agent_runs_a_compare_and_a_conversion_for_its_server_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The agent runs host.compare / host.convert (its logs in its own directory) and answers
    with their plain result; a ConversionError comes back as its class; a job for another
    server is refused without running anything."""
    ran: list[tuple[str, str]] = []

    def convert(job: ConvertJob, _h: Any, log_dir: Path, _c: Any, started: Any) -> ConvertResult:
        ran.append(("convert", str(log_dir)))
        started(f"converting with virt-v2v-in-place (log {log_dir / 'web01.log'})")
        if job.name == "broken":
            raise remote.errors.ConversionError("virt-v2v-in-place failed for broken (exit 1)")
        return ConvertResult(2.0, str(log_dir / "web01.log"))

    monkeypatch.setattr(
        remote.host, "compare", lambda job, _h, _c: ran.append(("compare", "")) or RESULT
    )
    monkeypatch.setattr(remote.host, "convert", convert)
    monkeypatch.setattr(agent_module, "_sender_gone", lambda _task, _name: "")
    monkeypatch.setattr(agent_module, "_Reporter", QuietReporter)
    agent = Agent("conv-b", "id-b", "a" * 64, host=None, checkpoints=tmp_path)  # type: ignore[arg-type]

    class Task(FakeTask):
        class request(FakeTask.request):  # noqa: N801 - Celery's attribute name
            id = "task-steps"

    volume = compare_job("vol-1", "id-b", SOURCE, None).to_json()
    assert run_task(Task(), agent, volume, "a" * 64, lineage=LINEAGE, step=COMPARE_TASK) == {
        "result": RESULT.to_json()
    }
    job = ConvertJob("id-b", ["vol-1"], "web01", {"disks": []}, "web01").to_json()
    done = run_task(Task(), agent, job, "a" * 64, lineage=LINEAGE, step=CONVERT_TASK)
    assert done == {"result": {"seconds": 2.0, "log": str(tmp_path / "logs" / "web01.log")}}
    assert QuietReporter.notes[-1].startswith("converting with virt-v2v-in-place (log ")
    broken = {**job, "name": "broken"}
    failed = run_task(Task(), agent, broken, "a" * 64, lineage=LINEAGE, step=CONVERT_TASK)
    error = _error(failed["error"], "conv-b")
    assert type(error).__name__ == "ConversionError" and "exit 1" in str(error)
    logs = str(tmp_path / "logs")
    assert ran == [("compare", ""), ("convert", logs), ("convert", logs)]
    elsewhere = {**job, "host_id": "id-c"}
    refused = run_task(Task(), agent, elsewhere, "a" * 64, lineage=LINEAGE, step=CONVERT_TASK)
    assert "refused a conversion for server id-c" in refused["error"]["message"]
    assert len(ran) == 3
