"""The executor's check that a cut-over VM's NICs are those its ports were planned from (a saved
cutover plan applied after a NIC was added, removed, given a new MAC or moved to another
portgroup): the VM stops with one line before its first port is made and before the snapshot
that powers it off. A replica's NICs do not matter (no server boots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.errors import SourceChangedError
from engine.executor import source_steps
from engine.executor.apply import Applier
from engine.executor.source import PlannedNic, nic_differences
from engine.model.observed import SourceNic
from engine.model.plan import Action, Change
from tests.unit.executor.fakes import one_vm_applier

MAC0, MAC1, MAC2 = "00:50:56:8f:01:00", "00:50:56:8f:01:01", "00:50:56:8f:01:02"


def port(
    index: int, mac: str, portgroup: str = "VM Network", action: Action = Action.CREATE
) -> Change:
    after = {"name": f"web01-nic{index}", "mac": mac, "network": "net-a", "nic_key": 4000 + index,
             "portgroup": portgroup, "portgroup_key": None}  # fmt: skip
    return Change(f"vm.web01.port[{index}]", "port", action, "port", None, after)


SERVER = Change("vm.web01.server", "server", Action.CREATE, "boot", None, {"ports": 2})


def nic(key: int, mac: str, portgroup: str = "VM Network") -> SourceNic:
    return SourceNic(key, f"Network adapter {key - 3999}", mac, "VirtualVmxnet3", portgroup,
                     None, False, True)  # fmt: skip


def dvs_nic(key: int, mac: str, portgroup_key: str) -> SourceNic:
    return SourceNic(key, "Network adapter", mac, "VirtualVmxnet3", None, portgroup_key, True, True)


def applier(tmp_path: Path, changes: tuple[Change, ...]) -> Applier:
    return one_vm_applier(tmp_path, "web01", "cutover", changes)


CUTOVER = (port(0, MAC0), port(1, MAC1), SERVER)


def test_the_nics_the_ports_were_planned_from_pass(tmp_path: Path) -> None:
    applier(tmp_path, CUTOVER)._check_nics("web01", [nic(4000, MAC0), nic(4001, MAC1.upper())])


@pytest.mark.parametrize(
    ("found", "said"),
    [
        ([nic(4000, MAC0), nic(4001, MAC1), nic(4002, MAC2)], f"NIC {MAC2} was added"),
        ([nic(4000, MAC0)], f"NIC {MAC1} was removed"),
        ([nic(4000, MAC0), nic(4001, MAC2)], f"NIC {MAC1}: its MAC is now {MAC2}"),
        (
            [nic(4000, MAC0), nic(4001, MAC1, "DC0_DVPG0")],
            f"NIC {MAC1} is on portgroup 'DC0_DVPG0', the plan's port was planned from 'VM Net",
        ),
        (
            [nic(4000, MAC0), dvs_nic(4001, MAC1, "dvportgroup-15")],
            f"NIC {MAC1} is on portgroup 'dvportgroup-15'",
        ),
    ],
)
def test_a_changed_nic_stops_the_cutover(tmp_path: Path, found: list[SourceNic], said: str) -> None:
    with pytest.raises(SourceChangedError, match=said) as raised:
        applier(tmp_path, CUTOVER)._check_nics("web01", found)
    assert str(raised.value).endswith("run `ferry plan` again")


def test_already_made_ports_are_checked_when_a_server_boots(tmp_path: Path) -> None:
    """An interrupted cutover made the ports (no-op now); the server still boots with them."""
    made = (port(0, MAC0, action=Action.NOOP), SERVER)
    with pytest.raises(SourceChangedError, match=f"NIC {MAC1} was added"):
        applier(tmp_path, made)._check_nics("web01", [nic(4000, MAC0), nic(4001, MAC1)])


def test_a_replica_does_not_check_nics(tmp_path: Path) -> None:
    applier(tmp_path, ())._check_nics("web01", [nic(4000, MAC0), nic(4001, MAC2)])


def test_a_plan_that_does_not_say_the_portgroup_compares_macs_only() -> None:
    old = PlannedNic(MAC0, None, None, None, knows_portgroup=False)
    assert nic_differences([old], [nic(4000, MAC0, "elsewhere")]) == []
    assert nic_differences([old], [nic(4000, MAC1)]) == [
        f"NIC {MAC0} was removed",
        f"NIC {MAC1} was added",
    ]


def devices(*nics: tuple[int, str, str]) -> list[Any]:
    backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo
    return [
        vim.vm.device.VirtualVmxnet3(key=key, macAddress=mac, backing=backing(deviceName=pg))
        for key, mac, pg in nics
    ]


def test_the_first_port_is_not_made_for_a_changed_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ports come before the snapshot that powers the source off: the check runs before the
    first port step of the VM (read from vCenter once per apply), and stops the others too."""
    a = applier(tmp_path, CUTOVER)
    a.ctx.vm_refs["web01"] = object()
    reads: list[str] = []

    def fetch(_si: Any, _obj: Any, path: str) -> Any:
        reads.append(path)
        return devices(
            (4000, MAC0, "VM Network"), (4001, MAC1, "VM Network"), (4002, MAC2, "VM Network")
        )

    made: list[str] = []
    monkeypatch.setattr(source_steps, "fetch_property", fetch)
    monkeypatch.setattr(a.cutover, "port", lambda change: made.append(change.address))
    with pytest.raises(SourceChangedError, match=f"NIC {MAC2} was added"):
        a.run("vm.web01.port[0]")
    assert made == [] and reads == ["config.hardware.device"]
    with pytest.raises(SourceChangedError, match=f"NIC {MAC2} was added"):
        a.run("vm.web01.port[1]")  # read once per VM and apply; every step of it stops
    assert made == [] and len(reads) == 1
