"""Re-placement at apply time (issue 14): a VM whose placed conversion host is gone goes, once,
to the host the plan's own rules choose among those whose agent answers (least loaded counting
what is placed there, its zone, room for its disks, never against a pin), and the apply says
which VM moved from which host to which and why; when no host can take it, one line and the VM
fails. The choice is placement.replace_vm, a pure function; the applier feeds it the plan, the
cloud and the broker's ping (faked here: Queues.answering, volumes.attached_count)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from engine.cli import apply as apply_cli
from engine.errors import AgentError, UserError
from engine.executor import replacement as placement
from engine.executor.apply import Applier
from engine.executor.events import Events
from engine.executor.remote import agents_of
from engine.executor.walker import Walker
from engine.model.plan import Plan
from engine.planner import planfile
from engine.planner.placement import Candidate, Demand, Host, replace_vm
from tests.unit.executor import test_placement_routing as routing
from tests.unit.executor.test_placement_routing import Queues
from tests.unit.executor.test_placement_routing import _applier as routing_applier

GiB = 1024**3
A, B, C = Host("conv-a", None, 2), Host("conv-b", None, 2), Host("conv-c", None, 4)


def _demand(size: int = 8 * GiB, zone: str | None = None, pin: str | None = None) -> Demand:
    return Demand("web01", size, zone, pin, None)


def _up(host: Host, placed: int, **kw: Any) -> Candidate:
    attached, up, answers = kw.get("attached", 0), kw.get("up", True), kw.get("answers", True)
    return Candidate(host, placed, attached, up, answers)


def test_the_least_loaded_host_counting_what_is_placed_there_takes_it() -> None:
    """conv-a holds 9 GiB on 2 slots, conv-b 3 GiB on 2: conv-b finishes 8 GiB more earliest
    (the first host would have been taken before)."""
    got = replace_vm(_demand(), 1, "conv-c", [_up(A, 9 * GiB), _up(B, 3 * GiB)])
    assert got.host == "conv-b"
    assert got.why == (
        "conv-c, where the plan placed it, is gone (no server of that name in the cloud); "
        "conv-b finishes it earliest of the hosts that can take it (3.0 GiB placed there on 2 "
        "slots; conv-a: 9.0 GiB on 2)"
    )


def test_slots_weigh_the_load_and_ties_go_in_spec_order() -> None:
    wide = Host("conv-w", None, 8)
    assert replace_vm(_demand(), 1, "conv-c", [_up(A, 0), _up(wide, 8 * GiB)]).host == "conv-w"
    assert replace_vm(_demand(), 1, "conv-c", [_up(A, GiB), _up(B, GiB)]).host == "conv-a"


def test_a_host_whose_agent_does_not_answer_is_not_a_target() -> None:
    got = replace_vm(_demand(), 1, "conv-c", [_up(A, 0, answers=False), _up(B, 9 * GiB)])
    assert got.host == "conv-b"
    assert got.why.endswith("on 2 slots; not conv-a: its agent does not answer)"), got.why


def test_zone_attached_volumes_and_a_missing_server_exclude_a_host() -> None:
    z1, z2 = Host("conv-1", "az1", 2), Host("conv-2", "az2", 2)
    assert replace_vm(_demand(zone="az2"), 1, "conv-c", [_up(z1, 0), _up(z2, 5 * GiB)]).host == (
        "conv-2"
    )
    full = replace_vm(_demand(), 3, "conv-c", [_up(A, 0, attached=23), _up(B, 0, up=False)])
    assert full.host is None
    assert full.why == (
        "conv-c, where the plan placed it, is gone (no server of that name in the cloud), and no "
        "conversion host can take it (conv-a: 23 volumes attached: 3 more would exceed 25 (a "
        "conversion attaches all of a VM's disks); conv-b: no server of that name in the cloud)"
    )
    assert replace_vm(_demand(), 2, "conv-c", [_up(A, 0, attached=23)]).host == "conv-a"


def test_a_pinned_vm_is_not_moved_and_none_answering_is_said() -> None:
    pinned = replace_vm(_demand(pin="conv-c"), 1, "conv-c", [_up(A, 0)])
    assert pinned.host is None and pinned.why.endswith(
        "and it is pinned there (vms[].conversion_host)"
    )
    alone = replace_vm(_demand(), 1, "conv-c", [_up(C, 0)])  # the gone host itself: no target
    assert alone.host is None and alone.why.endswith("no conversion host can take it (none)")


def test_the_agents_answering_are_read_from_celerys_ping_replies() -> None:
    replies = [
        {"ferry-agent-conv-a@machine-1": {"ok": "pong"}},
        {"ferry-agent-conv@b@machine-2": {"ok": "pong"}},
        {"celery@other": {"ok": "pong"}},
    ]
    assert agents_of(replies) == {"conv-a", "conv@b"}


class Asking(Queues):
    """Queues whose agents answer the broker's ping for `alive` only."""

    def __init__(self, alive: set[str]) -> None:
        super().__init__()
        self.alive = alive
        self.asked = 0

    def answering(self) -> set[str]:
        self.asked += 1
        return self.alive


def _applier(
    tmp_path: Path, alive: set[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Applier, list[dict[str, Any]]]:
    """The placement-three-hosts case (conv-a 9 GiB: web02, app03; conv-b 9 GiB: db01, app02;
    conv-c: web01 8 GiB, db02 5 GiB, app01 4 GiB) with conv-c's server gone."""
    monkeypatch.setattr(placement.volumes, "attached_count", lambda _conn, _server: 1)
    applier = routing_applier(tmp_path, Asking(alive), {"conv-a": "id-a", "conv-b": "id-b"})
    seen: list[dict[str, Any]] = []
    applier.ctx.events = Events(None, (seen.append,))
    return applier, seen


def test_each_vm_of_a_gone_host_goes_to_the_least_loaded_answering_host_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """web01 goes to conv-a (9 GiB each: spec order), then db02 to conv-b (conv-a now holds
    web01's 8 GiB too), then app01 to conv-b (14 + 4 < 17 + 4); the old rule put all three on
    the first host. Each move is said once, in the VM's log, the console and an event."""
    applier, seen = _applier(tmp_path, {"conv-a", "conv-b"}, monkeypatch)
    said: list[str] = []
    applier.ctx.progress = said.append
    assert applier.host_for("web01") == ("conv-a", "id-a")
    assert applier.host_for("web01") == ("conv-a", "id-a")
    assert [applier.host_for(vm)[0] for vm in ("db02", "app01")] == ["conv-b", "conv-b"]
    assert applier.slot_pool("db02") == "conversion:conv-b"
    assert applier.host_of(applier.changes["vm.app01.disk[2000]"]) == "conv-b"
    moved = [e for e in seen if e["event"] == "replaced"]
    assert [(e["vm"], e["placed"], e["host"]) for e in moved] == [
        ("web01", "conv-c", "conv-a"),
        ("db02", "conv-c", "conv-b"),
        ("app01", "conv-c", "conv-b"),
    ]
    log = (tmp_path / "db02.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in log] == [
        "vm.db02: re-placed from conversion host conv-c to conv-b: conv-c, where the plan placed "
        "it, is gone (no server of that name in the cloud); conv-b finishes it earliest of the "
        "hosts that can take it (9.0 GiB placed there on 2 slots; conv-a: 17.0 GiB on 2)"
    ]
    assert len(said) == 3 and said[1] == log[0].split(" ", 1)[1]
    assert applier.host_for("db01") == ("conv-b", "id-b")  # its host is up: not moved
    assert not (tmp_path / "db01.log").exists()
    assert applier.ctx.remote.asked == 1  # type: ignore[union-attr]  # one ping for the three


def test_a_host_whose_agent_is_silent_is_skipped_and_no_host_fails_only_that_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conv-a's agent does not answer: web01 goes to conv-b (the old rule: conv-a, where its
    copy would have waited for an agent). With no agent answering, web01 fails with one line
    (said once; its steps that need a host raise it, the walker's pool stays conv-c's) and
    db01, whose host is up, goes on."""
    applier, _ = _applier(tmp_path, {"conv-b"}, monkeypatch)
    assert applier.host_for("web01") == ("conv-b", "id-b")
    assert "not conv-a: its agent does not answer" in (tmp_path / "web01.log").read_text()

    lost, seen = _applier(tmp_path / "none", set(), monkeypatch)
    for _ in range(2):
        with pytest.raises(AgentError) as failed:
            lost.host_for("web01")
    assert str(failed.value) == (
        "vm.web01: not re-placed: conv-c, where the plan placed it, is gone (no server of that "
        "name in the cloud), and no conversion host can take it (conv-a: its agent does not "
        "answer; conv-b: its agent does not answer)"
    )
    assert lost.slot_pool("web01") == "conversion:conv-c"
    assert lost.host_of(lost.changes["vm.web01.disk[2000]"]) == ""
    assert lost.host_for("db01") == ("conv-b", "id-b")
    assert [e["host"] for e in seen if e["event"] == "replaced"] == [None]
    assert len((tmp_path / "none" / "web01.log").read_text().splitlines()) == 1
    assert lost.ctx.remote.asked == 1  # type: ignore[union-attr]


def test_a_pings_answer_stands_for_answers_kept_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer older than ANSWERS_KEPT is asked again: web01 goes to conv-b (conv-a's agent
    silent), then conv-b's agent stops answering and conv-a's answers again: db02 goes to
    conv-a (on the old answer: to conv-b)."""
    monkeypatch.setattr(placement, "ANSWERS_KEPT", 0.0)
    applier, _ = _applier(tmp_path, {"conv-b"}, monkeypatch)
    assert applier.host_for("web01")[0] == "conv-b"
    applier.ctx.remote.alive = {"conv-a"}  # type: ignore[union-attr]
    assert applier.host_for("db02")[0] == "conv-a"
    assert applier.ctx.remote.asked == 2  # type: ignore[union-attr]


def test_a_saved_plan_carries_each_vms_zone_and_pin() -> None:
    """What re-placement needs is in the plan file and read back: the VM's zone, its pin."""
    zones = planfile.from_json(_case("placement-zones"))
    pinned = planfile.from_json(_case("placement-pinned"))
    assert [(v.name, v.availability_zone) for v in zones.vms][:2] == [
        ("web01", "az1"),
        ("db01", "az2"),
    ]
    assert sorted(v.name for v in pinned.vms if v.pinned) == ["app02", "web01"]
    again = planfile.from_json(json.loads(json.dumps(planfile.to_json(pinned))))
    assert again.vms == pinned.vms


def _case(name: str) -> dict[str, Any]:
    data = json.loads((Path(__file__).parents[2] / "cases" / name / "expected.json").read_text())
    data.pop("exit_code")
    return dict(data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64})


def test_a_gone_first_host_re_places_its_vms_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conv-a, the spec's first host, is gone: web02 (7 GiB, placed there) goes to conv-c,
    which finishes it earliest ((17 + 7) / 4 slots against (9 + 7) / 2 on conv-b); the old
    rule kept it on the first host, whose server is gone."""
    monkeypatch.setattr(placement.volumes, "attached_count", lambda _conn, _server: 0)
    applier = routing_applier(
        tmp_path, Asking({"conv-b", "conv-c"}), {"conv-b": "id-b", "conv-c": "id-c"}
    )
    applier.ctx.conversion_host_id = ""  # the apply found no server by its name
    assert applier.host_for("web02") == ("conv-c", "id-c")
    assert applier.slot_pool("web02") == "conversion:conv-c"
    assert "re-placed from conversion host conv-a to conv-c" in (tmp_path / "web02.log").read_text()


def test_an_apply_with_agents_goes_on_when_its_first_host_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a broker and other hosts, a first host without a server is not an error (its VMs
    are re-placed); without a broker (it writes every volume) or alone, it still is."""
    servers = {"conv-b": SimpleNamespace(id="id-b")}
    conn = SimpleNamespace(
        compute=SimpleNamespace(find_server=lambda name, ignore_missing: servers.get(name))
    )
    monkeypatch.setattr(apply_cli, "host_seams", lambda *_a: (None, None))
    monkeypatch.setattr(apply_cli, "connect_destination", lambda _d: conn)
    location = SimpleNamespace(open=lambda: None, log_dir=tmp_path)
    spec: dict[str, Any] = {
        "destination": {},
        "conversion_hosts": [{"name": "conv-a"}, {"name": "conv-b"}],
    }
    monkeypatch.setattr(apply_cli, "_remote", lambda _spec: Asking(set()))
    ctx = apply_cli._context(spec, None, location, Events(None))  # type: ignore[arg-type]
    assert ctx.conversion_host_id == "" and ctx.host_ids == {"conv-b": "id-b"}
    monkeypatch.setattr(apply_cli, "_remote", lambda _spec: None)
    with pytest.raises(UserError, match="conversion host 'conv-a' is not a server in the cloud"):
        apply_cli._context(spec, None, location, Events(None))  # type: ignore[arg-type]
    monkeypatch.setattr(apply_cli, "_remote", lambda _spec: Asking(set()))
    alone = {**spec, "conversion_hosts": [{"name": "conv-a"}]}
    with pytest.raises(UserError, match="conversion host 'conv-a' is not a server"):
        apply_cli._context(alone, None, location, Events(None))  # type: ignore[arg-type]


class SlowPing(Asking):
    """Asking whose agents answer the ping only once `go` is set (at most 5 s)."""

    def __init__(self, alive: set[str], go: threading.Event) -> None:
        super().__init__(alive)
        self.go, self.asking = go, threading.Event()
        self.released: list[bool] = []  # per ping: answered because `go` was set

    def answering(self) -> set[str]:
        self.asking.set()
        self.released.append(self.go.wait(5))
        return super().answering()


SPEC: dict[str, Any] = {
    "conversion_hosts": [{"name": h} for h in ("conv-a", "conv-b", "conv-c")],
    "source": {"vcenter": {}},
}


def test_a_slow_ping_does_not_hold_up_other_vms_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conv-c is gone: re-placing web01, db02 and app01 asks the agents (a broker ping,
    seconds). The apply's walk goes on meanwhile, even with one step at a time: db01's snapshot
    and disk (on conv-b, up) run while the first ping is unanswered (the old walk asked in its
    scheduling thread, a snapshot step asking would hold the only slot: nothing ran until the
    answer, here 5 s); each re-placed VM's steps run once its host is chosen, on that host."""
    monkeypatch.setattr(placement.volumes, "attached_count", lambda _conn, _server: 1)
    go = threading.Event()
    ping = SlowPing({"conv-a", "conv-b"}, go)
    applier = routing_applier(tmp_path, ping, {"conv-a": "id-a", "conv-b": "id-b"})
    monkeypatch.setattr(applier, "hosts", dict)  # no ESXi read pools (vCenter)
    ran: list[tuple[str, str]] = []

    def run(node: Any) -> None:
        vm = str(node).split(".")[1]
        if node == "vm.db01.snapshot":
            ping.asking.wait(5)
        ran.append((str(node), applier.host_for(vm)[0]))  # the snapshot step asks first too
        if node == "vm.db01.disk[2000]":
            go.set()

    walker = apply_cli._walker(applier.plan, SPEC, applier, 1)
    walker.run = run
    assert walker.walk().ok
    assert ping.released == [True]  # one ping re-placed the three
    assert ran.index(("vm.db01.disk[2000]", "conv-b")) < ran.index(
        ("vm.web01.snapshot", applier.moved_to["web01"])
    )
    assert {host for node, host in ran if node.startswith("vm.web01.")} == {
        applier.moved_to["web01"]
    }


def _two_disks(plan: Plan) -> Plan:
    """`plan` (placement-three-hosts) with a second disk for web01."""
    disk = next(c for c in plan.changes if c.address == "vm.web01.disk[2000]")
    second = replace(disk, address="vm.web01.disk[2001]")
    edge = ("vm.web01.snapshot", "vm.web01.disk[2001]")
    return replace(plan, changes=(*plan.changes, second), edges=(*plan.edges, edge))


def test_a_vm_no_host_can_take_fails_once_before_its_source_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No agent answers: web01 (two disks, its host conv-c gone) fails at its snapshot step,
    before vCenter is asked anything (no snapshot, no power-off of a cutover, no volume), with
    the one line naming each host's reason: once on the console's list of what did not run,
    once in its log, in the `replaced` event (host null) and its snapshot's node_end; its
    disks are skipped after it (the old apply took the snapshot, made each disk's volume, then
    failed each disk with the same line)."""
    plan = _two_disks(routing._plan())
    monkeypatch.setattr(routing, "_plan", lambda: plan)
    applier, seen = _applier(tmp_path, set(), monkeypatch)
    touched: list[str] = []
    monkeypatch.setattr(applier, "_vm", touched.append)  # the source VM, read from vCenter
    web01 = [c.address for c in applier.plan.changes if c.address.startswith("vm.web01.")]
    applier.ctx.store = SimpleNamespace(outage=None)  # type: ignore[assignment]
    events = applier.ctx.events
    assert events is not None
    walker = Walker(
        apply_cli._graph(applier.plan).subgraph(web01), apply_cli._observed(applier, events)
    )
    result = walker.walk()
    console = Console(record=True, width=1000)
    apply_cli._say_what_did_not_run(result, events, console)
    line = (
        "vm.web01: not re-placed: conv-c, where the plan placed it, is gone (no server of that "
        "name in the cloud), and no conversion host can take it (conv-a: its agent does not "
        "answer; conv-b: its agent does not answer)"
    )
    assert sorted(console.export_text().splitlines()) == [
        f"failed: vm.web01.snapshot: {line}",
        "skipped: vm.web01.disk[2000] (after vm.web01.snapshot failed)",
        "skipped: vm.web01.disk[2001] (after vm.web01.snapshot failed)",
    ]
    assert touched == []
    log = (tmp_path / "web01.log").read_text().splitlines()
    assert [entry.split(" ", 1)[1] for entry in log] == [line]
    ends = [(e["address"], e.get("error")) for e in seen if e["event"] == "node_end"]
    assert ends == [("vm.web01.snapshot", line)]
    assert [e["host"] for e in seen if e["event"] == "replaced"] == [None]


def test_every_step_of_a_vm_whose_source_is_off_is_urgent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12p F1: a cutover's disks and conversion were urgent once ferry powered its
    source off, but its server boot (and image mode's uploads, volumes from images) waited
    in the queue behind replicas' copies: 6 min of downtime. Every step of such a VM is."""
    applier = routing_applier(tmp_path, Asking({"conv-a", "conv-b"}), {"conv-a": "id-a"})
    monkeypatch.setattr(applier, "hosts", dict)
    walker = apply_cli._walker(applier.plan, SPEC, applier, 1)
    assert not walker.urgent("vm.web01.server") and not walker.urgent("vm.web01.disk[2000]")
    applier.cutover.powered_off["web01"] = 1.0
    assert walker.urgent("vm.web01.server") and walker.urgent("vm.web01.image[2000]")
    assert walker.urgent("vm.web01.disk[2000]") and not walker.urgent("vm.db01.disk[2000]")
