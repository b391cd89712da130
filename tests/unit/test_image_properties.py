"""Nova's image properties from the source VM (issue 16): a UEFI guest boots on q35 (Secure
Boot: os_secure_boot=required), a guest not converted keeps the bus and NIC model its drivers
know; refresh reads Secure Boot and each disk's controller type; the boot volume gets the
plan's metadata (a plan saved before ferry planned it: UEFI's, as before)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from pyVmomi import vim

from engine.executor.cutover import boot_volume_metadata
from engine.model.observed import SourceDisk, SourceNic, SourceVM
from engine.planner.image_properties import image_properties, volume_image_metadata
from engine.providers.openstack.compute import set_image_metadata
from engine.providers.vsphere.inventory import parse_vm
from engine.providers.vsphere.read import ObjectProps

Device = vim.vm.device


def _vm(**kw: Any) -> SourceVM:
    disk = SourceDisk(2000, "Hard disk 1", 2**30, "ds1", "[ds1] a.vmdk", True, "persistent",
                      None, None, 1000, 0, None)  # fmt: skip
    nic = SourceNic(4000, "Network adapter 1", None, "VirtualVmxnet3", "VM Network", None, False,
                    True)  # fmt: skip
    base = SourceVM("vm-1", "a", "u", None, None, None, "rhel9_64Guest", None, "bios", 2, 4096,
                    "poweredOff", None, True, False, (disk,), (nic,), ())  # fmt: skip
    return replace(base, **kw)


def test_a_uefi_guest_boots_on_q35_with_secure_boot_as_the_source() -> None:
    on = image_properties(_vm(firmware="efi", secure_boot=True), converted=True)
    assert on == {
        "hw_firmware_type": "uefi",
        "hw_machine_type": "q35",
        "os_secure_boot": "required",
        "hw_disk_bus": "virtio",
        "hw_vif_model": "virtio",
        "os_type": "linux",
    }
    off = image_properties(_vm(firmware="efi", secure_boot=False), converted=True)
    assert off["hw_machine_type"] == "q35" and "os_secure_boot" not in off
    assert "hw_machine_type" not in image_properties(_vm(), converted=True)


@pytest.mark.parametrize(
    ("controller", "adapter", "expected"),
    [
        ("ParaVirtualSCSIController", "VirtualVmxnet3", ("scsi", "vmpvscsi", "vmxnet3")),
        ("VirtualLsiLogicController", "VirtualE1000", ("scsi", "lsilogic", "e1000")),
        ("VirtualLsiLogicSASController", "VirtualE1000e", ("scsi", "lsisas1068", "e1000e")),
        ("VirtualAHCIController", "VirtualPCNet32", ("sata", None, "pcnet")),
        ("VirtualIDEController", "VirtualVmxnet2", ("ide", None, "virtio")),
        ("VirtualNVMEController", "VirtualVmxnet3", ("virtio", None, "vmxnet3")),  # no NVMe bus
        (None, "VirtualVmxnet3", ("virtio", None, "vmxnet3")),  # not reported
    ],
)
def test_a_guest_not_converted_keeps_its_source_bus_and_nic_model(
    controller: str | None, adapter: str, expected: tuple[str, str | None, str]
) -> None:
    vm = _vm()
    vm = replace(
        vm,
        disks=(replace(vm.disks[0], controller=controller),),
        nics=(replace(vm.nics[0], adapter=adapter),),
    )
    props = image_properties(vm, converted=False)
    assert (props["hw_disk_bus"], props.get("hw_scsi_model"), props["hw_vif_model"]) == expected
    converted = image_properties(vm, converted=True)  # virt-v2v installs virtio drivers
    assert (converted["hw_disk_bus"], converted["hw_vif_model"]) == ("virtio", "virtio")
    assert "hw_scsi_model" not in converted


def test_the_boot_disk_decides_the_bus() -> None:
    vm = _vm()
    data = replace(vm.disks[0], key=2001, controller_key=1000, unit_number=1,
                   controller="VirtualLsiLogicController")  # fmt: skip
    boot = replace(vm.disks[0], key=2002, controller_key=200, unit_number=0,
                   controller="VirtualIDEController")  # fmt: skip
    props = image_properties(replace(vm, disks=(data, boot)), converted=False)
    assert props["hw_disk_bus"] == "ide"


def test_a_volume_gets_only_what_differs_from_novas_defaults() -> None:
    assert volume_image_metadata(_vm(), converted=True) == {}
    assert volume_image_metadata(_vm(guest_id="windows2019srv_64Guest"), converted=True) == {
        "os_type": "windows"
    }
    assert volume_image_metadata(_vm(firmware="efi", secure_boot=True), converted=True) == {
        "hw_firmware_type": "uefi",
        "hw_machine_type": "q35",
        "os_secure_boot": "required",
    }


def test_the_boot_volume_gets_the_plans_metadata_or_uefis_for_an_older_plan() -> None:
    planned = {"image_metadata": {"hw_disk_bus": "sata"}}
    assert boot_volume_metadata(planned, {"firmware": "efi"}) == {"hw_disk_bus": "sata"}
    assert boot_volume_metadata({"image_metadata": {}}, {"firmware": "efi"}) == {}
    assert boot_volume_metadata({}, {"firmware": "efi"}) == {
        "hw_firmware_type": "uefi",
        "hw_machine_type": "q35",
    }
    assert boot_volume_metadata({}, {"firmware": "bios"}) == {}


def test_set_image_metadata_sets_every_property() -> None:
    calls: list[tuple[str, dict[str, str]]] = []
    storage = SimpleNamespace(set_volume_image_metadata=lambda v, **kw: calls.append((v, kw)))
    metadata = {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "required"}
    set_image_metadata(SimpleNamespace(block_storage=storage), "vol-1", metadata)
    assert calls == [("vol-1", metadata)]


def test_refresh_reads_secure_boot_and_each_disks_controller() -> None:
    disk = Device.VirtualDisk(
        key=2000,
        capacityInBytes=2**30,
        controllerKey=15000,
        unitNumber=0,
        backing=Device.VirtualDisk.FlatVer2BackingInfo(fileName="[ds1] a/a.vmdk"),
    )
    devices = [Device.VirtualAHCIController(key=15000, busNumber=0), disk]
    props = {
        "name": "a",
        "config.firmware": "efi",
        "config.bootOptions": vim.vm.BootOptions(efiSecureBootEnabled=True),
        "config.hardware.device": devices,
    }
    vm = parse_vm(ObjectProps(vim.VirtualMachine("vm-1"), props), {}, {}, {})
    assert vm.secure_boot is True
    assert vm.disks[0].controller == "VirtualAHCIController"
    props.pop("config.bootOptions")
    assert parse_vm(ObjectProps(vim.VirtualMachine("vm-1"), props), {}, {}, {}).secure_boot is None
