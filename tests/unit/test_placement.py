"""Placement in the plan (issue 14): shown on each VM's line and per host only when the spec lists
several conversion hosts (one host: the plan reads as before), sealed in a saved plan, and the
assignment deterministic. The planner cases tests/cases/placement-* hold the rules' examples."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from engine.cli.plan import render
from engine.cli.show import markdown
from engine.errors import UserError
from engine.model.plan import Action, Change, Plan
from engine.planner import planfile
from engine.planner.desired import desired
from engine.planner.make import make_plan
from engine.planner.placement import DELTA_SHARE, Demand, Host, _unknown_weight, assign
from engine.spec.validate import validate_text
from tests.unit.test_planner_cases import hydrate

CASES = Path(__file__).parents[1] / "cases"
GiB = 1024**3


def _plan(case: str) -> Plan:
    data = json.loads((CASES / case / "expected.json").read_text())
    data.pop("exit_code")
    return planfile.from_json(
        data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64}
    )


def _text(plan: Plan) -> str:
    out = io.StringIO()
    render(plan, Console(file=out, width=300, color_system=None))
    return out.getvalue()


def test_several_hosts_show_each_vms_host_and_each_hosts_share() -> None:
    plan = _plan("placement-three-hosts")
    text = _text(plan)
    header = next(line for line in text.splitlines() if line.startswith("vm.web01 "))
    assert header.endswith("; conversion host conv-c)"), header
    assert "Conversion hosts" in text
    assert "conv-a: 2 VM(s), 9.0 GiB to copy, ~46.1 s at 2 copies at once" in text, text
    assert "conv-c: 3 VM(s), 17.0 GiB to copy, ~43.5 s at 4 copies at once" in text, text
    heading = "`vm.web01` → web01 (replicate, flavor m1.medium, disks read via https, conversion"
    assert f"{heading} host conv-c)" in markdown(plan)


def test_one_host_reads_as_before() -> None:
    """conversion-host-create lists one host: its VM is placed (JSON) but no line changes."""
    plan = _plan("conversion-host-create")
    assert [v.conversion_host for v in plan.vms] == ["conv-02"] and plan.hosts == ()
    headers = [line for line in _text(plan).splitlines() if line.startswith("vm.")]
    assert headers and not any("conversion host" in line for line in headers), headers
    assert "Conversion hosts" not in markdown(plan)


def test_a_saved_plan_carries_its_placement_under_the_seal(tmp_path: Path) -> None:
    plan = _plan("placement-pinned")
    spec = tmp_path / "spec.yaml"
    spec.write_text("version: 1\n")
    path = tmp_path / "wave.plan"
    planfile.save(plan, path, spec, {})
    assert planfile.load(path, {}).plan == plan
    text = path.read_text()
    path.write_text(text.replace('"conversion_host": "conv-b"', '"conversion_host": "conv-a"', 1))
    with pytest.raises(UserError, match="was changed after it was saved"):
        planfile.load(path, {})


def test_assignment_is_deterministic_and_balanced() -> None:
    hosts = [Host("conv-a", None, 2), Host("conv-b", None, 2), Host("conv-c", None, 4)]
    demands = [Demand(f"vm{n}", n * GiB, None, None, None) for n in range(1, 41)]
    placed = assign(demands, hosts)
    assert assign(list(reversed(demands)), hosts) == placed  # input order does not matter
    finish = {
        h.name: sum(d.bytes for d in demands if placed[d.name] == h.name) / h.slots for h in hosts
    }
    assert max(finish.values()) - min(finish.values()) <= 40 * GiB / 2  # within one VM's time
    assert max(finish.values()) <= 1.05 * sum(d.bytes for d in demands) / 8  # near the ideal


def test_zones_pins_and_a_host_in_progress_bound_the_choice() -> None:
    hosts = [Host("conv-a", "az1", 2), Host("conv-b", "az2", 2), Host("conv-c", "az1", 2)]
    demands = [
        Demand("big", 100 * GiB, "az1", None, None),
        Demand("pinned", GiB, None, "conv-b", "conv-a"),  # the pin wins over the record
        Demand("resumed", GiB, None, None, "conv-a"),  # stays on its listed host
        Demand("gone", 50 * GiB, None, None, "conv-old"),  # its host left the spec
        Demand("nowhere", GiB, "az9", None, None),  # no host: left out (an error concern)
        Demand("az2", 2 * GiB, "az2", None, None),
    ]
    placed = assign(demands, hosts)
    assert placed["big"] in {"conv-a", "conv-c"}
    assert (placed["pinned"], placed["resumed"]) == ("conv-b", "conv-a")
    assert placed["gone"] != "conv-old" and "nowhere" not in placed
    assert placed["az2"] == "conv-b"
    assert assign([Demand("any", GiB, "az9", None, None)], [Host("c", None, 1)]) == {"any": "c"}


def test_equal_weights_spread_by_the_vms_and_volumes_placed() -> None:
    """Break-it 14 F2: deltas of unknown size weighed 0 B and every tie went to the first host;
    N of them over M hosts now spread N/M each, fewer volumes first on a tie of VMs."""
    hosts = [Host("conv-a", None, 2), Host("conv-b", None, 2), Host("conv-c", None, 2)]
    demands = [Demand(f"vm{n:02}", 0, None, None, None) for n in range(9)]
    placed = assign(demands, hosts)
    assert sorted(Counter(placed.values()).values()) == [3, 3, 3], placed
    wide = [Demand("wide", 0, None, None, None, volumes=4)]
    narrow = [Demand(f"n{n}", 0, None, None, None) for n in range(3)]
    spread = assign(wide + narrow, hosts)
    assert spread["wide"] == "conv-a" and spread["n2"] != "conv-a", spread


def test_a_replan_keeps_every_host_and_stays_balanced() -> None:
    """Stickiness (F2): the VMs of a balanced placement, each last synced where it was placed,
    keep their hosts on the next plan, even when the new weights alone would move some."""
    hosts = [Host("conv-a", None, 2), Host("conv-b", None, 2), Host("conv-c", None, 4)]
    first = assign([Demand(f"vm{n}", n * GiB, None, None, None) for n in range(1, 41)], hosts)
    again = [Demand(f"vm{n}", (n * 37 % 23 + 1) * GiB, None, None, None, last=first[f"vm{n}"])
             for n in range(1, 41)]  # fmt: skip
    assert assign(again, hosts) == first
    assert assign([replace(d, last=None) for d in again], hosts) != first  # weights alone move
    finish = [sum(d.bytes for d in again if first[d.name] == h.name) / h.slots for h in hosts]
    assert max(finish) - min(finish) <= 40 * GiB / 2  # still within one VM's time


def test_a_sticky_vm_moves_for_its_pin_its_zone_or_its_hosts_share() -> None:
    hosts = [Host("conv-a", "az1", 2), Host("conv-b", "az2", 2), Host("conv-c", None, 2)]
    placed = assign(
        [
            Demand("pinned", GiB, None, "conv-c", None, last="conv-a"),
            Demand("zoned", GiB, "az2", None, None, last="conv-a"),
            Demand("huge", 10 * GiB, None, None, None, last="conv-c"),
            Demand("more", 10 * GiB, None, None, None, last="conv-c"),
        ],
        hosts,
    )
    # conv-c's share: 22 GiB x 2/6 + 10 GiB (the largest) = 17.3 GiB: one of the two only
    assert placed == {"pinned": "conv-c", "zoned": "conv-b", "huge": "conv-c", "more": "conv-a"}


def test_a_delta_of_unknown_size_weighs_a_share_of_its_disk_or_the_vms_last_deltas() -> None:
    """The plan shows such a delta without a size; placement weighs it: the mean of the VM's
    other disks' last deltas (first-delta: web01's disk 2001 moved 50 MiB), else DELTA_SHARE
    of its allocated bytes, else 0 (the counts decide)."""
    case = yaml.safe_load((CASES / "first-delta" / "case.yaml").read_text())
    inventory, destination, state = hydrate(case)
    spec = validate_text(yaml.safe_dump(case["spec"]), "first-delta", {}).data
    vm = desired(spec, inventory, destination, "lineage-1")[0][0]
    change = Change("vm.web01.disk[2000]", "volume", Action.UPDATE, "delta", bytes=None)
    mine = {a: r for a, r in state.resources.items() if a.startswith("vm.web01.")}
    assert _unknown_weight(vm, change, mine) == 50 * 2**20
    disk = replace(vm.source.disks[0], allocated=2 * GiB)
    alone = replace(vm, source=replace(vm.source, disks=(disk, *vm.source.disks[1:])))
    assert _unknown_weight(alone, change, {}) == int(2 * GiB * DELTA_SHARE)
    assert _unknown_weight(vm, change, {}) == 0


def test_the_host_lines_count_the_deltas_of_unknown_size_apart() -> None:
    text = _text(_plan("placement-unknown-deltas"))
    assert "conv-a: 2 VM(s), 0 B to copy and 2 delta sync(s) of unknown size, ~0.0 s at 2" in text


def _gone_plan(broker: bool, servers: list[str]) -> Plan:
    case = yaml.safe_load((CASES / "placement-host-gone" / "case.yaml").read_text())
    if not broker:
        del case["spec"]["execution"]
    case["destination"]["other_servers"] = servers
    spec = validate_text(yaml.safe_dump(case["spec"]), "placement-host-gone", {}).data
    inventory, destination, state = hydrate(case)
    return make_plan(spec, inventory, destination, state)


def test_a_gone_host_is_an_error_only_where_it_would_write() -> None:
    """Break-it 14 F3: a host gone from the cloud blocked every fresh plan. Without a broker the
    first host writes every volume: its absence stays the error; another host's is a warning
    (nothing placed there). With agents the first host is like any other."""
    lines = [
        (d.severity.value, d.summary) for d in _gone_plan(False, ["conv-a", "conv-b"]).diagnostics
    ]
    assert lines == [
        (
            "warning",
            "conversion host 'conv-c' is not a server in the destination project: its VMs are "
            "placed on the hosts left (db01 → conv-b, web01 → conv-a)",
        ),
        (  # break-it 14 F8: the placement is shown, and the plan says nothing follows it
            "warning",
            "the spec lists 3 conversion hosts and sets no execution.broker: apply runs every "
            "copy and conversion in-process on the first, conv-a (the placement shown is what "
            "the hosts' agents would follow); set execution.broker and run an agent on each "
            "host to use them all",
        ),
    ]
    first = _gone_plan(False, ["conv-b", "conv-c"])
    assert [(d.severity.value, d.path) for d in first.diagnostics] == [
        ("error", ("conversion_hosts", 0, "name"))
    ]
    assert "(without execution.broker it writes every volume)" in first.diagnostics[0].summary
    agents = _gone_plan(True, ["conv-b", "conv-c"])
    assert [d.severity.value for d in agents.diagnostics] == ["warning"]
    assert {v.conversion_host for v in agents.vms} == {"conv-b", "conv-c"}
    assert "conv-a" not in {h.name for h in agents.hosts}


def test_vms_with_nothing_to_run_stay_and_count_in_no_share() -> None:
    """VMs cut over or in sync (no copy, no conversion) stay where they last ran and weigh
    nothing: six of them on conv-a neither push three deltas off it nor take its share."""
    hosts = [Host("conv-a", None, 2), Host("conv-b", None, 2), Host("conv-c", None, 2)]
    idle = [Demand(f"done{n}", 0, None, None, None, volumes=0, last="conv-a") for n in range(6)]
    busy = [Demand(f"vm{n}", 0, None, None, None, last="conv-a") for n in range(3)]
    placed = assign(idle + busy, hosts)
    assert all(placed[d.name] == "conv-a" for d in idle)
    assert sorted(placed[d.name] for d in busy) == ["conv-a", "conv-b", "conv-c"], placed


def test_each_hosts_share_counts_the_plans_own_copy_estimates_not_capacities() -> None:
    """Break-it 14c F5 (db01's disk 2000 shown at 1.0 GiB in its host's share, 20.5 MiB read):
    a host's bytes are the sum of its VMs' copy estimates as the plan shows them: a thin
    disk's allocated bytes, not its capacity; a thick disk's allocated bytes are its capacity
    on the datastore, and its estimate with them (the lab freezes a thick disk's snapshot as a
    sparse file: only there are its holes skipped)."""
    case = yaml.safe_load((CASES / "placement-three-hosts" / "case.yaml").read_text())
    for vm in case["inventory"]:
        disk = vm["disks"][0]
        if vm["name"] == "db01":  # thick: allocated on the datastore as a whole
            disk |= {"thin": False, "allocated_mib": disk["gib"] * 1024}
        else:  # thin: 20.5 MiB of data each
            disk["allocated_mib"] = 20.5
    spec = validate_text(yaml.safe_dump(case["spec"]), "placement-three-hosts", {}).data
    plan = make_plan(spec, *hydrate(case))
    placed = {vm.name: vm.conversion_host for vm in plan.vms}
    estimates = {
        c.address.split(".")[1]: int(c.bytes or 0)
        for c in plan.changes
        if c.kind == "volume" and c.action is Action.CREATE
    }
    assert estimates["db01"] == 6 * GiB and estimates["web01"] == int(20.5 * 2**20)
    shares = {h.name: h.bytes for h in plan.hosts}
    assert shares == {
        host: sum(b for vm, b in estimates.items() if placed[vm] == host) for host in shares
    }
    assert sum(shares.values()) == 6 * GiB + 6 * int(20.5 * 2**20)
    line = next(line for line in _text(plan).splitlines() if "vm.web01.disk[2000]" in line)
    assert "create ~20.5 MiB" in line, line


def test_a_copy_re_placed_from_a_listed_host_whose_server_is_gone_says_so() -> None:
    """Break-it 12n L1: a copy in progress on a host the spec still lists but whose server was
    deleted was said to be on a host "which the spec no longer lists"."""
    from engine.planner.placement import _moved  # noqa: PLC0415 (the one helper under test)

    hosts = [Host("conv-b", None, 2)]
    (gone,) = _moved("conv-a", "conv-b", hosts, frozenset({"conv-a"}))
    assert "on conv-a, which is not a server in the destination project;" in gone.message
    (dropped,) = _moved("conv-a", "conv-b", hosts)
    assert "on conv-a, which the spec no longer lists;" in dropped.message
    assert "detached there if still attached" in dropped.message
