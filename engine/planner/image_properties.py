"""The image properties Nova boots a migrated guest by, derived from the source VM (pure).

Nova's libvirt driver reads them from the boot image (destination.output: image) or from the boot
volume's image metadata (volumes): the firmware (`hw_firmware_type`; UEFI on the q35 machine
type, which Secure Boot requires: `os_secure_boot=required` when vSphere's efiSecureBootEnabled
is on), the disk bus and SCSI model (`hw_disk_bus`, `hw_scsi_model`), the NIC model
(`hw_vif_model`) and `os_type` (windows: a localtime clock and Hyper-V enlightenments).

A converted guest (virt-v2v installs virtio-blk and virtio-net drivers) gets virtio; a guest not
converted (`convert: false`) keeps only the drivers it had on vSphere, so its bus and NIC model
follow the source's boot-disk controller and first NIC, as far as QEMU emulates them.
`unconverted_concerns` says where that is not far enough (plan concerns).

What KVM/QEMU take, from Glance's "Useful image properties"
(https://docs.openstack.org/glance/latest/admin/useful-image-properties.html) and Nova's libvirt
driver: hw_disk_bus for qemu and kvm is one of scsi, virtio, ide, usb (and fdc, and sata, which
Nova accepts since 2017: nova/virt/libvirt/blockinfo.py SUPPORTED_DEVICE_BUSES): there is no
NVMe bus. hw_scsi_model goes to libvirt's SCSI controller model, which QEMU emulates as lsi
(lsilogic), mptsas1068 (lsisas1068), megasas (lsisas1078), pvscsi (vmpvscsi) or virtio-scsi;
libvirt refuses buslogic ("Unsupported controller model": QEMU has no BusLogic emulation).
hw_vif_model for KVM and QEMU is one of e1000, e1000e, ne2k_pci, pcnet, rtl8139, virtio, vmxnet3
(e1000e and vmxnet3 accepted since Nova Victoria, 2020; igb since 2024): vSphere's vmxnet and
vmxnet2 have no QEMU model. The q35 machine type (UEFI here, and Secure Boot needs it) has no
IDE bus: libvirt refuses an IDE disk on it ("IDE controllers are unsupported for this QEMU
binary or machine type").
"""

from __future__ import annotations

from engine.model.desired import Concern, ConcernLevel
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


# controllers and NICs an unconverted guest keeps, which KVM cannot give it or gives partly
NVME = "VirtualNVMEController"
BUSLOGIC = "VirtualBusLogicController"
IDE = "VirtualIDEController"
REFUSED_MODES = ("cutover", "cold")  # the modes whose apply boots the server


def unconverted_concerns(vm: SourceVM, *, converted: bool, mode: str) -> list[Concern]:
    """What a guest not converted (`converted` False; else []) meets on KVM with the boot disk's
    controller and the first NIC it keeps (image_properties): an NVMe boot disk (no NVMe bus:
    virtio, which it has no driver for), BusLogic (no QEMU emulation: libvirt refuses the
    server), IDE under UEFI (q35 has no IDE bus: refused), a vmxnet3 or pcnet NIC (emulated, with
    limits) or one QEMU has no model for (virtio). A server libvirt refuses is an error in the
    modes that boot it (`mode` cutover or cold: the source would be powered off for a boot that
    fails), a warning while replicating; the rest are warnings. Each says what to do."""
    if converted:
        return []
    disk = boot_disk(vm)
    out = _boot_disk_concerns(vm, disk, mode) if disk else []
    if vm.nics:
        out += _nic_concerns(vm.nics[0].adapter, vm.nics[0].label)
    return out


def _refused(mode: str) -> ConcernLevel:
    return ConcernLevel.ERROR if mode in REFUSED_MODES else ConcernLevel.WARNING


def _boot_disk_concerns(vm: SourceVM, disk: SourceDisk, mode: str) -> list[Concern]:
    fix = (
        "set convert: true (virt-v2v installs the virtio drivers), or move the boot disk to "
        "{to} in vSphere (with the guest's driver for it) before the cutover"
    )
    where = f"boot disk {disk.key} ({disk.label})"
    if disk.controller == NVME:
        return [
            Concern(
                ConcernLevel.WARNING,
                "nvme-boot-disk",
                f"{where} is on an NVMe controller and convert: false: Nova has no NVMe disk "
                "bus (hw_disk_bus for KVM: virtio, scsi, sata, ide, usb), so it gets "
                "hw_disk_bus=virtio, which a guest not converted has no driver for unless one "
                "was installed: it will not find its boot disk; "
                + fix.format(to="a SATA, LSI Logic SAS or PVSCSI controller"),
            )
        ]
    if disk.controller == BUSLOGIC:
        return [
            Concern(
                _refused(mode),
                "buslogic-boot-disk",
                f"{where} is on a BusLogic controller and convert: false: QEMU has no BusLogic "
                "emulation, so Nova's libvirt driver cannot start a server with "
                "hw_scsi_model=buslogic (the boot would fail after the source's power-off); "
                + fix.format(to="an LSI Logic SAS or PVSCSI controller"),
            )
        ]
    if disk.controller == IDE and vm.firmware == "efi":
        return [
            Concern(
                _refused(mode),
                "ide-boot-uefi",
                f"{where} is on an IDE controller, the firmware is UEFI and convert: false: "
                "UEFI boots on the q35 machine type (hw_machine_type=q35), which has no IDE bus, "
                "so libvirt refuses hw_disk_bus=ide there (the boot would fail after the "
                "source's power-off); " + fix.format(to="a SATA controller"),
            )
        ]
    return []


def _nic_concerns(adapter: str, label: str) -> list[Concern]:
    fix = "set convert: true (virt-v2v installs virtio-net), or give the VM an E1000e NIC"
    if adapter == "VirtualVmxnet3":
        return [
            Concern(  # info: the most common VMware NIC, which current Nova and QEMU serve
                ConcernLevel.INFO,
                "vmxnet3-nic",
                f"{label} is a vmxnet3 NIC and convert: false: the server gets "
                "hw_vif_model=vmxnet3, which QEMU emulates and Nova accepts since Victoria "
                "(2020); an older Nova, or a QEMU built without it (CONFIG_VMXNET3_PCI), refuses "
                "the server, and an emulated vmxnet3 is slower than virtio-net; " + fix,
            )
        ]
    if adapter == "VirtualPCNet32":
        return [
            Concern(
                ConcernLevel.WARNING,
                "pcnet-nic",
                f"{label} is a PCnet32 (Flexible) NIC and convert: false: the server gets "
                "hw_vif_model=pcnet, QEMU's emulated AMD PCnet-PCI II, a legacy 10/100 Mbit/s "
                "model, which a QEMU built without it (CONFIG_PCNET_PCI) refuses; " + fix,
            )
        ]
    if adapter not in NIC_MODEL:
        return [
            Concern(
                ConcernLevel.WARNING,
                "nic-no-kvm-model",
                f"{label} is a {adapter} NIC and convert: false: QEMU has no such model "
                "(hw_vif_model for KVM: virtio, e1000, e1000e, rtl8139, ne2k_pci, pcnet, "
                "vmxnet3), so it gets hw_vif_model=virtio, which a guest not converted has no "
                "driver for unless one was installed: it comes up without network; " + fix,
            )
        ]
    return []


def describe(properties: dict[str, str]) -> str:
    """'k=v, k=v' in the properties' order, for a plan line."""
    return ", ".join(f"{k}={v}" for k, v in properties.items())
