"""The image properties Nova boots a migrated guest by, derived from the source VM (pure).

Nova's libvirt driver reads them from the boot image (destination.output: image) or from the boot
volume's image metadata (volumes): the firmware (`hw_firmware_type`; UEFI on the q35 machine
type, which Secure Boot requires: `os_secure_boot=required` when vSphere's efiSecureBootEnabled
is on), the disk bus and SCSI model (`hw_disk_bus`, `hw_scsi_model`), the NIC model
(`hw_vif_model`) and `os_type` (windows: a localtime clock and Hyper-V enlightenments).

A converted guest (virt-v2v installs virtio-blk and virtio-net drivers) gets virtio; a guest not
converted (`convert: false`) keeps only the drivers it had on vSphere, so its bus and NIC model
follow the source's boot-disk controller and first NIC, as far as QEMU emulates them.
"""

from __future__ import annotations

from engine.model.observed import SourceDisk, SourceVM

# vSphere controller type → (hw_disk_bus, hw_scsi_model or None); Nova's DiskBus / SCSIModel
CONTROLLER_BUS: dict[str, tuple[str, str | None]] = {
    "ParaVirtualSCSIController": ("scsi", "vmpvscsi"),
    "VirtualLsiLogicController": ("scsi", "lsilogic"),
    "VirtualLsiLogicSASController": ("scsi", "lsisas1068"),
    "VirtualBusLogicController": ("scsi", "buslogic"),
    "VirtualAHCIController": ("sata", None),
    "VirtualIDEController": ("ide", None),
}
# vSphere NIC type → hw_vif_model (models Nova's libvirt driver allows for KVM)
NIC_MODEL = {
    "VirtualVmxnet3": "vmxnet3",
    "VirtualE1000": "e1000",
    "VirtualE1000e": "e1000e",
    "VirtualPCNet32": "pcnet",
}
# what Nova assumes for a volume without image metadata (a volume's metadata leaves them out)
NOVA_DEFAULTS = {
    "hw_firmware_type": "bios",
    "hw_disk_bus": "virtio",
    "hw_vif_model": "virtio",
    "os_type": "linux",
}


def boot_disk(vm: SourceVM) -> SourceDisk | None:
    """The disk the guest boots from: the first by controller, unit number and key (the order
    its volumes are made in); None for a VM without disks."""
    disks = sorted(vm.disks, key=lambda d: (d.controller_key, d.unit_number or 0, d.key))
    return disks[0] if disks else None


def image_properties(vm: SourceVM, *, converted: bool) -> dict[str, str]:
    """Nova's image properties for `vm`'s guest ({name: value}, every value a string):
    hw_firmware_type (bios | uefi; uefi adds hw_machine_type=q35 and, with Secure Boot on,
    os_secure_boot=required), hw_disk_bus (+ hw_scsi_model for SCSI), hw_vif_model, os_type.
    `converted`: virt-v2v converts the guest (virtio); else the source's controller and NIC
    types decide, virtio where QEMU has no equivalent or vSphere did not report one."""
    out: dict[str, str] = {}
    if vm.firmware == "efi":
        out |= {"hw_firmware_type": "uefi", "hw_machine_type": "q35"}
        if vm.secure_boot:
            out["os_secure_boot"] = "required"
    else:
        out["hw_firmware_type"] = "bios"
    bus, model, nic = "virtio", None, "virtio"
    if not converted:
        disk = boot_disk(vm)
        bus, model = CONTROLLER_BUS.get((disk.controller if disk else None) or "", ("virtio", None))
        nic = NIC_MODEL.get(vm.nics[0].adapter, "virtio") if vm.nics else "virtio"
    out["hw_disk_bus"] = bus
    if model:
        out["hw_scsi_model"] = model
    out["hw_vif_model"] = nic
    out["os_type"] = "windows" if (vm.guest_id or "").startswith("windows") else "linux"
    return out


def volume_image_metadata(vm: SourceVM, *, converted: bool) -> dict[str, str]:
    """The image properties a boot volume ferry made (not from an image) needs set as its
    volume image metadata: those that differ from what Nova assumes without any ({} for a
    converted BIOS Linux guest)."""
    return {
        k: v
        for k, v in image_properties(vm, converted=converted).items()
        if NOVA_DEFAULTS.get(k) != v
    }


def describe(properties: dict[str, str]) -> str:
    """'k=v, k=v' in the properties' order, for a plan line."""
    return ", ".join(f"{k}={v}" for k, v in properties.items())
