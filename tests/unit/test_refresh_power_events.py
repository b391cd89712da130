"""The refresh reads vCenter's power-on events for the VMs whose changeIds cannot tell that they
ran (break-it 12f F4): off now, a disk without a changeId, and a conversion record saying when
ferry took charge of it (`vcenter_off_at`). Every other VM costs no query. vCenter's event
query is recorded (a pure unit test: refresh's other reads are not involved)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from engine.model.observed import Inventory, SourceDisk, SourceVM
from engine.model.state import INSTANCE_UUID, VCENTER_OFF_AT, ResourceRecord, State, Status
from engine.planner import refresh
from engine.providers.vsphere.read import ObjectProps

OFF_AT = datetime(2026, 11, 30, 17, 11, 40, tzinfo=UTC)
ON_AT = datetime(2026, 11, 30, 17, 13, 20, tzinfo=UTC)


def disk(change_id: str | None) -> SourceDisk:
    return SourceDisk(2000, "Hard disk 1", 2**30, "ds1", "[ds1] a/a.vmdk", True, "persistent",
                      None, None, 1000, 0, change_id)  # fmt: skip


def vm(name: str, uuid: str, power: str, change_id: str | None) -> SourceVM:
    cbt = change_id is not None
    return SourceVM(f"vm-{name}", name, uuid, None, None, None, None, None, "bios", 2, 4096,
                    power, None, cbt, False, (disk(change_id),), (), ())  # fmt: skip


def conversion(name: str, uuid: str) -> tuple[str, ResourceRecord]:
    address = f"vm.{name}.conversion"
    attrs = {INSTANCE_UUID: uuid, VCENTER_OFF_AT: OFF_AT.isoformat(), "powered_off_at": 1.0}
    return address, ResourceRecord(address, "conversion", Status.READY, attrs)


def test_only_off_cbt_off_vms_ferry_took_charge_of_are_queried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vms = (
        vm("blind", "U-1", "poweredOff", None),  # queried: off, CBT off, recorded
        vm("cbt", "u-2", "poweredOff", "52 aa/1"),  # its changeId tells
        vm("running", "u-3", "poweredOn", None),  # running: known without events
        vm("unrecorded", "u-4", "poweredOff", None),  # ferry never powered it off
    )
    asked: list[tuple[str, datetime]] = []

    def powered_on_since(_si: Any, ref: Any, since: datetime) -> list[datetime]:
        asked.append((ref._moId, since))
        return [ON_AT]

    monkeypatch.setattr(refresh, "powered_on_since", powered_on_since)
    objects = [ObjectProps(SimpleNamespace(_moId=v.moref), {}) for v in vms]
    state = State(1, "l", 1, dict(conversion(v.name, v.instance_uuid or "") for v in vms[:3]))
    got = refresh.power_on_events(None, Inventory(vms, (), (), ()), objects, state)
    assert asked == [("vm-blind", OFF_AT)]  # its record's UUID matched case-insensitively
    assert got.vms[0] == replace(vms[0], powered_on_at=(ON_AT.timestamp(),))
    assert got.vms[1:] == vms[1:]
