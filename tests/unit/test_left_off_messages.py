"""Every message about a VM whose records say ferry left its source powered off (a cutover
killed after the power-off, no server yet) says so (break-it 12d item 7a: a renamed VM's errors
did not): the selection's and the kept records' errors (planner case renamed-left-off-by-name),
a name taken by another VM, two record groups of one VM, and the deletes of a VM the spec
dropped (deleting its conversion record powers the source back on)."""

from __future__ import annotations

from typing import Any

import yaml

from engine.addresses import Address
from engine.model.plan import Plan
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.departed import destroy_changes
from engine.planner.make import make_plan
from engine.spec.validate import validate_text
from tests.unit.test_planner_cases import CASES, hydrate

OFF = "source powered off by ferry at 2026-11-18 11:06:40 UTC, no server yet"
CONVERSION = {
    "kind": "conversion",
    "status": "in_progress",
    "attributes": {"powered_off": "graceful", "powered_off_at": 1795000000.0},
}


def _plan(case: dict[str, Any]) -> Plan:
    loaded = validate_text(yaml.safe_dump(case["spec"]), "case.yaml", {})
    return make_plan(loaded.data, *hydrate(case))


def _case(name: str) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load((CASES / name / "case.yaml").read_text())
    return case


def test_a_name_taken_by_another_vm_says_the_old_vms_source_is_off() -> None:
    case = _case("renamed-name-taken")
    case["state"]["resources"]["vm.db01.conversion"] = CONVERSION
    case["state"]["resources"]["vm.db01.disk[2000]"]["attributes"]["instance_uuid"] = (
        "4215aaaa-0000-4000-8000-000000000002"
    )
    (vm,) = _plan(case).vms
    (error,) = [c for c in vm.concerns if c.code == "recorded-elsewhere"]
    assert error.message.endswith(f"; {OFF}"), error.message


def test_two_record_groups_of_one_vm_say_its_source_is_off() -> None:
    case = _case("renamed-left-off-by-name")
    case["spec"]["vms"] = [{"name": "db01-renamed", "mode": "cutover"}]
    uuid = "4215aaaa-0000-4000-8000-000000000002"
    resources = case["state"]["resources"]
    resources["vm.db01.conversion"]["attributes"]["instance_uuid"] = uuid
    resources["vm.db01.disk[2000]"]["attributes"]["instance_uuid"] = uuid
    resources["vm.db01-renamed.disk[2000]"] = {
        "kind": "volume",
        "status": "ready",
        "attributes": {"volume_id": "vol-x", "change_id": "52 cc-dd/7", "instance_uuid": uuid},
    }
    (vm,) = _plan(case).vms
    (error,) = [c for c in vm.concerns if c.code == "recorded-elsewhere"]
    assert "both are left untouched" in error.message and error.message.endswith(f"; {OFF}")


def test_the_deletes_of_a_dropped_vm_say_its_source_is_powered_back_on() -> None:
    records = {
        "vm.db01.disk[2000]": ResourceRecord(
            "vm.db01.disk[2000]", "volume", Status.READY, {"volume_id": "v"}
        ),
        "vm.db01.conversion": ResourceRecord(
            "vm.db01.conversion", "conversion", Status.IN_PROGRESS, CONVERSION["attributes"]
        ),
    }
    changes = {c.address: c.reason for c in destroy_changes("db01", records, "gone", False)}
    assert changes == {
        "vm.db01.disk[2000]": "gone",
        "vm.db01.conversion": f"gone; {OFF}: it is powered back on",
    }
    records[str(Address("vm", "db01", "server"))] = ResourceRecord(
        "vm.db01.server", "server", Status.READY, {"server_id": "s"}
    )
    booted = destroy_changes("db01", records, "gone", False)
    assert all(c.reason == "gone" for c in booted)  # a server was booted: not left off
