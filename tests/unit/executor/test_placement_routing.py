"""Apply follows the plan's placement (issue 14): with a broker, each VM's disk syncs go to its
placed host's queue, attach to that host's server and take its copy slots; without one (or for a
host whose server is unknown) they stay on the host this apply writes on, as before."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.executor import replacement as placement
from engine.executor.applier_base import Context
from engine.executor.apply import Applier
from engine.executor.host import Callbacks, SyncJob, SyncResult
from engine.model.plan import Plan
from engine.model.state import RECORDED_HOST
from engine.planner import planfile
from engine.statestore.sqlite import SqliteStateStore

CASES = Path(__file__).parents[2] / "cases"


class Queues:
    """A stand-in for executor.remote.Remote: records the host each job was sent to."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def sync(self, host_name: str, job: SyncJob, calls: Callbacks, say: Any) -> SyncResult:
        self.sent.append((host_name, job.host_id))
        return SyncResult(0, 0, 0, 0, 0, 0.0)

    def answering(self) -> set[str]:
        """Every host's agent answers the broker's ping."""
        return {"conv-a", "conv-b", "conv-c"}

    def of_state(self, lineage: str) -> Queues:
        self.lineage = lineage  # what the tasks carry: the apply's state's
        return self


def _plan() -> Plan:
    data = json.loads((CASES / "placement-three-hosts" / "expected.json").read_text())
    data.pop("exit_code")
    return planfile.from_json(
        data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64}
    )


def _applier(
    tmp_path: Path, remote: Queues | None, ids: dict[str, str], store: Any = None
) -> Applier:
    ctx = Context(None, None, store, None, None, "id-a", log_dir=tmp_path, host_ids=ids)  # type: ignore[arg-type]
    ctx.remote = remote  # type: ignore[assignment]
    ctx.conversion_host_name = "conv-a"
    return Applier(_plan(), ctx)


def _job(host_id: str) -> SyncJob:
    return SyncJob(volume_id="vol-1", host_id=host_id, source={})


def test_with_a_broker_each_vm_goes_to_its_placed_hosts_queue_and_server(
    tmp_path: Path, store: SqliteStateStore
) -> None:
    queues = Queues()
    ids = {"conv-a": "id-a", "conv-b": "id-b", "conv-c": "id-c"}
    applier = _applier(tmp_path, queues, ids, store)
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
    assert queues.lineage == store.read().lineage  # the agent serves one state (F5)


def test_without_a_broker_or_a_known_server_the_first_host_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a broker the first host writes; with one, a VM whose host's server is unknown is
    re-placed on a host whose server is (conv-b's is not either: conv-a)."""
    alone = _applier(tmp_path, None, {"conv-c": "id-c"})
    assert (
        alone.host_for("web01") == ("conv-a", "id-a") and alone.slot_pool("web01") == "conversion"
    )
    monkeypatch.setattr(placement.volumes, "attached_count", lambda _conn, _server: 0)
    unbooted = _applier(tmp_path, Queues(), {"conv-a": "id-a"})  # conv-c not found (yet)
    assert unbooted.host_for("web01") == ("conv-a", "id-a")


def test_a_re_placed_copy_is_detached_from_its_old_hosts_server_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """web01's copy was in progress on conv-old (its record), left attached there by a killed
    agent; placed on conv-c now: detached from conv-old's server, not from another server."""
    servers = {"conv-old": SimpleNamespace(id="id-old")}
    attached = {"vol-1": ["id-old", "id-other"]}
    detached: list[tuple[str, str]] = []
    monkeypatch.setattr(placement.volumes, "attached_servers", lambda _c, v: attached[v])
    monkeypatch.setattr(placement.volumes, "detach", lambda _c, s, v: detached.append((s, v)))
    applier = _applier(tmp_path, Queues(), {"conv-c": "id-c"})
    applier.ctx.conn = SimpleNamespace(
        compute=SimpleNamespace(find_server=lambda name, ignore_missing: servers.get(name))
    )
    before = {"volume_id": "vol-1", RECORDED_HOST: "conv-old"}
    applier._release_elsewhere("vm.web01.disk[2000]", before, "vol-1", "conv-c")
    assert detached == [("id-old", "vol-1")]
    log = (tmp_path / "web01.log").read_text()
    assert "volume vol-1 detached from conversion host conv-old" in log
    for record in ({}, {RECORDED_HOST: "conv-c"}, {RECORDED_HOST: "conv-gone"}):
        applier._release_elsewhere("vm.web01.disk[2000]", record, "vol-1", "conv-c")
    assert detached == [("id-old", "vol-1")]  # same host, no record, or no such server: left
