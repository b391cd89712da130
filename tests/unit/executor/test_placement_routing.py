"""Apply follows the plan's placement (issue 14): with a broker, each VM's disk syncs go to its
placed host's queue, attach to that host's server and take its copy slots; without one (or for a
host whose server is unknown) they stay on the host this apply writes on, as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.executor.apply import Applier, Context
from engine.executor.host import Callbacks, SyncJob, SyncResult
from engine.model.plan import Plan
from engine.planner import planfile

CASES = Path(__file__).parents[2] / "cases"


class Queues:
    """A stand-in for executor.remote.Remote: records the host each job was sent to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def sync(self, host_name: str, job: SyncJob, calls: Callbacks, say: Any) -> SyncResult:
        self.sent.append((host_name, job.host_id))
        return SyncResult(0, 0, 0, 0, 0, 0.0)


def _plan() -> Plan:
    data = json.loads((CASES / "placement-three-hosts" / "expected.json").read_text())
    data.pop("exit_code")
    return planfile.from_json(
        data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64}
    )


def _applier(tmp_path: Path, remote: Queues | None, ids: dict[str, str]) -> Applier:
    ctx = Context(None, None, None, None, None, "id-a", log_dir=tmp_path, host_ids=ids)  # type: ignore[arg-type]
    ctx.remote = remote  # type: ignore[assignment]
    ctx.conversion_host_name = "conv-a"
    return Applier(_plan(), ctx)


def _job(host_id: str) -> SyncJob:
    return SyncJob(volume_id="vol-1", host_id=host_id, source={})


def test_with_a_broker_each_vm_goes_to_its_placed_hosts_queue_and_server(tmp_path: Path) -> None:
    queues = Queues()
    applier = _applier(tmp_path, queues, {"conv-a": "id-a", "conv-b": "id-b", "conv-c": "id-c"})
    assert applier.host_for("web01") == ("conv-c", "id-c")
    assert applier.host_for("db01") == ("conv-b", "id-b")
    assert applier.host_for("web02") == ("conv-a", "id-a")
    assert [applier.slot_pool(vm) for vm in ("web01", "db01", "web02")] == [
        "conversion:conv-c",
        "conversion:conv-b",
        "conversion",
    ]
    name, host_id = applier.host_for("web01")
    applier._run_sync(_job(host_id), "vm.web01.disk[2000]", Callbacks(), name)
    assert queues.sent == [("conv-c", "id-c")]


def test_without_a_broker_or_a_known_server_the_first_host_writes(tmp_path: Path) -> None:
    alone = _applier(tmp_path, None, {"conv-c": "id-c"})
    assert (
        alone.host_for("web01") == ("conv-a", "id-a") and alone.slot_pool("web01") == "conversion"
    )
    unbooted = _applier(tmp_path, Queues(), {"conv-a": "id-a"})  # conv-c not found (yet)
    assert unbooted.host_for("web01") == ("conv-a", "id-a")
