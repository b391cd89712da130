"""Plan concerns for guests not converted (issue 16): the boot controller or first NIC they keep
may have no KVM/QEMU equivalent (NVMe, vmxnet2), or a combination may not boot (BusLogic: no
QEMU emulation; IDE under UEFI: q35 has no IDE bus), and vmxnet3/pcnet are emulated with limits.
A converted guest (virtio drivers) gets none; a server libvirt would refuse is an error in the
modes that boot it, a warning while replicating."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from engine.model.desired import ConcernLevel
from engine.model.observed import SourceDisk, SourceNic, SourceVM
from engine.planner.desired import vm_concerns
from engine.planner.image_properties import unconverted_concerns


def _vm(controller: str | None, adapter: str = "VirtualE1000e", **kw: Any) -> SourceVM:
    disk = SourceDisk(2000, "Hard disk 1", 2**30, "ds1", "[ds1] a.vmdk", True, "persistent",
                      None, None, 1000, 0, None, controller=controller)  # fmt: skip
    nic = SourceNic(4000, "Network adapter 1", None, adapter, "VM Network", None, False, True)
    base = SourceVM("vm-1", "a", "u", None, None, None, "rhel9_64Guest", None, "bios", 2, 4096,
                    "poweredOff", None, True, False, (disk,), (nic,), ())  # fmt: skip
    return replace(base, **kw)


def _codes(vm: SourceVM, mode: str = "cutover") -> list[tuple[str, str]]:
    return [(c.level.value, c.code) for c in unconverted_concerns(vm, converted=False, mode=mode)]


@pytest.mark.parametrize(
    ("vm", "expected"),
    [
        (_vm("VirtualNVMEController"), [("warning", "nvme-boot-disk")]),
        (_vm("VirtualBusLogicController"), [("error", "buslogic-boot-disk")]),
        (_vm("VirtualIDEController", firmware="efi"), [("error", "ide-boot-uefi")]),
        (_vm("VirtualIDEController"), []),  # BIOS: the pc machine type has its IDE bus
        (_vm("VirtualAHCIController", "VirtualVmxnet2"), [("warning", "nic-no-kvm-model")]),
        (_vm("VirtualAHCIController", "VirtualVmxnet"), [("warning", "nic-no-kvm-model")]),
        (_vm("VirtualLsiLogicSASController", "VirtualPCNet32"), [("warning", "pcnet-nic")]),
        (_vm("ParaVirtualSCSIController", "VirtualVmxnet3"), [("info", "vmxnet3-nic")]),
        (_vm("VirtualLsiLogicController", "VirtualE1000"), []),
        (_vm(None), []),  # controller not reported: nothing to say
    ],
)
def test_what_an_unconverted_guest_meets_on_kvm(vm: SourceVM, expected: list[Any]) -> None:
    assert _codes(vm) == expected


def test_a_refused_boot_is_a_warning_while_replicating() -> None:
    assert _codes(_vm("VirtualBusLogicController"), "replicate") == [
        ("warning", "buslogic-boot-disk")
    ]
    assert _codes(_vm("VirtualIDEController", firmware="efi"), "cold") == [
        ("error", "ide-boot-uefi")
    ]


def test_a_converted_guest_gets_virtio_and_no_concern() -> None:
    vm = _vm("VirtualNVMEController", "VirtualVmxnet2")
    assert unconverted_concerns(vm, converted=True, mode="cutover") == []
    assert not {"nvme-boot-disk", "nic-no-kvm-model"} & {
        c.code for c in vm_concerns(vm, {"mode": "cutover"}, "lineage-1")
    }


def test_each_concern_says_what_happens_and_what_to_do() -> None:
    vm = _vm("VirtualBusLogicController", "VirtualVmxnet2")
    found = unconverted_concerns(vm, converted=False, mode="cutover")
    assert [c.level for c in found] == [ConcernLevel.ERROR, ConcernLevel.WARNING]
    for concern in found:
        assert "convert: true" in concern.message
    assert "no BusLogic emulation" in found[0].message
    assert "an LSI Logic SAS or PVSCSI controller in vSphere" in found[0].message
    codes = {c.code for c in vm_concerns(vm, {"mode": "cutover", "convert": False}, "lineage-1")}
    assert {"buslogic-boot-disk", "nic-no-kvm-model"} <= codes
