"""Selecting the spec's VMs: overlapping entries and per-VM overrides keyed by what the VM has
(issue 13 item 3). The planner cases select-exact-twice, select-overlap and override-unmatched
cover the plan; these pin the rules' edges."""

from __future__ import annotations

from typing import Any

import yaml

from engine.diagnostics import Severity
from engine.model.observed import Destination, Inventory, SourceNic, SourceVM
from engine.planner.desired import ports_for
from engine.planner.make import make_plan
from engine.planner.selection import select
from engine.spec.validate import validate_text
from tests.unit.test_planner_cases import CASES, hydrate


def _vm(name: str, n: int, macs: tuple[str, ...] = ()) -> SourceVM:
    nics = tuple(
        SourceNic(
            key=4000 + i,
            label=f"Network adapter {i + 1}",
            mac=mac,
            adapter="VirtualVmxnet3",
            portgroup="VM Network",
            portgroup_key=None,
            distributed=False,
            connected=True,
        )
        for i, mac in enumerate(macs)
    )
    return SourceVM(
        moref=f"vm-{n}",
        name=name,
        instance_uuid=f"4215aaaa-0000-4000-8000-{n:012d}",
        bios_uuid=None,
        folder="/DC0/vm",
        host=None,
        guest_id="rhel9_64Guest",
        guest_name=None,
        firmware="bios",
        cpus=1,
        memory_mb=1024,
        power_state="poweredOn",
        tools=None,
        cbt=True,
        template=False,
        disks=(),
        nics=nics,
        snapshots=(),
    )


def _inventory(*vms: SourceVM) -> Inventory:
    return Inventory(vms=vms, datastores=(), portgroups=(), hosts=())


def _errors(spec: dict[str, Any], inventory: Inventory) -> list[str]:
    return [d.summary for d in select(spec, inventory).diagnostics if d.severity is Severity.ERROR]


def test_three_exact_entries_on_one_vm_name_every_other_entry() -> None:
    web = _vm("web01", 1)
    spec = {"vms": [{"name": "web01"}, {"moref": "vm-1"}, {"instance_uuid": web.instance_uuid}]}
    errors = _errors(spec, _inventory(web))
    assert len(errors) == 2
    assert "vms[0] (name 'web01') and vms[1] (moref 'vm-1')" in errors[0]
    assert "vms[0] (name 'web01') and vms[2] (instance_uuid" in errors[1]
    assert [vm.name for vm, _ in select(spec, _inventory(web)).vms] == ["web01"]


def test_exact_entry_wins_over_an_earlier_pattern_quietly_when_settings_agree() -> None:
    spec = {
        "vms": [{"pattern": {"name": "web*"}, "mode": "cold"}, {"name": "web01", "mode": "cold"}]
    }
    chosen = select(spec, _inventory(_vm("web01", 1), _vm("web02", 2)))
    assert chosen.diagnostics == []
    assert [(vm.name, entry.get("name")) for vm, entry in chosen.vms] == [
        ("web02", None),
        ("web01", "web01"),
    ]


def test_overlapping_patterns_warn_once_per_pair_of_entries() -> None:
    spec = {"vms": [{"pattern": {"name": "web*"}}, {"pattern": {"folder": "/DC0/vm"}}]}
    chosen = select(spec, _inventory(_vm("web01", 1), _vm("web02", 2), _vm("db01", 3)))
    assert [(d.severity, d.path) for d in chosen.diagnostics] == [(Severity.WARNING, ("vms", 1))]
    assert (
        "both select VMs web01, web02: the first, vms[0], applies" in chosen.diagnostics[0].summary
    )
    assert sorted(vm.name for vm, _ in chosen.vms) == ["db01", "web01", "web02"]


def test_a_pattern_mac_override_may_fit_any_one_of_its_vms() -> None:
    spec = {
        "vms": [
            {"pattern": {"name": "web*"}, "nics": [{"mac": "00:50:56:00:02:00", "network": "b"}]}
        ]
    }
    inventory = _inventory(
        _vm("web01", 1, ("00:50:56:00:01:00",)), _vm("web02", 2, ("00:50:56:00:02:00",))
    )
    assert _errors(spec, inventory) == []


def test_a_mac_override_matches_whatever_the_case_of_either_side() -> None:
    vm = _vm("web01", 1, ("00:50:56:00:01:AB",))
    settings = {
        "network_map": {"VM Network": {"network": "net-a"}},
        "nics": [{"mac": "00:50:56:00:01:ab", "network": "net-b"}],
    }
    assert _errors({"vms": [{"name": "web01", **settings}]}, _inventory(vm)) == []
    ports, _ = ports_for(vm, settings, Destination(networks=frozenset({"net-a", "net-b"})))
    assert [p.network for p in ports] == ["net-b"]


def test_each_message_is_one_line_at_its_place_in_the_spec_file() -> None:
    """A plan over the override-unmatched and select-exact-twice cases: every diagnostic renders
    as one line, file:line:column of the entry or key it is about first."""
    for name, first in (("override-unmatched", "spec.yaml:19:"), ("select-exact-twice", None)):
        case = yaml.safe_load((CASES / name / "case.yaml").read_text())
        loaded = validate_text(yaml.safe_dump(case["spec"], sort_keys=False), "spec.yaml", {})
        inventory, destination, state = hydrate(case)
        plan = make_plan(loaded.data, inventory, destination, state, locate=loaded.where)
        lines = [d.render() for d in plan.diagnostics]
        assert lines and all("\n" not in line and line.startswith("spec.yaml:") for line in lines)
        assert first is None or lines[0].startswith(first), lines
