"""The vCenter inventory in one PropertyCollector pass (`fetch_inventory`) and its pure parse.

One RetrievePropertiesEx over a ContainerView, with property specs for VMs, hosts, datastores,
networks, folders and datacenters at once (paged by the server, continued by the client): the
cost is a handful of round trips for any number of VMs, where per-VM property access costs
several per VM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from pyVmomi import vim, vmodl

from engine.errors import VSphereError
from engine.model.observed import Inventory, SourceDisk, SourceNic, SourceSnapshot, SourceVM
from engine.providers.vsphere.read import ObjectProps, collect, collect_in_view

VM_PATHS = (
    "name",
    "parent",
    "parentVApp",  # a VM in a vApp has no `parent` (break-it 15b N3)
    "config.instanceUuid",
    "config.uuid",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.bootOptions",
    "config.changeTrackingEnabled",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "layoutEx.disk",
    "layoutEx.file",
    "runtime.powerState",
    "runtime.host",
    "guest.toolsRunningStatus",
    "guest.guestState",
    "snapshot",
    "datastore",
)
PATHS: dict[Any, tuple[str, ...]] = {
    vim.VirtualMachine: VM_PATHS,
    vim.HostSystem: ("name",),
    vim.Datastore: ("name", "summary.type"),
    vim.VirtualApp: ("name", "parentFolder", "parentVApp"),
    vim.Network: ("name",),
    vim.dvs.DistributedVirtualPortgroup: ("name", "key"),
    vim.Folder: ("name", "parent"),
    vim.Datacenter: ("name", "parent"),
}


DEVICES = "config.hardware.device"
# What only the VMs a spec selects need (most of the bytes): devices, and the disk files' layout.
DETAIL = (DEVICES, "layoutEx.disk", "layoutEx.file")
Chooser = Callable[[list[ObjectProps]], Iterable[Any]]


def fetch_inventory(
    si: Any, page_size: int = 1000, *, devices_for: Chooser | None = None
) -> list[ObjectProps]:
    """Every object ferry needs, in one RetrievePropertiesEx (plus continuation pages).

    Device lists are most of the bytes (and of pyVmomi's parsing time). With `devices_for`, the
    first pass leaves them out, `devices_for` picks among the VMs read so (e.g. those a spec
    selects) and a second single call reads their devices.
    """
    pc = vmodl.query.PropertyCollector
    paths = {
        t: tuple(x for x in p if devices_for is None or x not in DETAIL) for t, p in PATHS.items()
    }
    propset = [pc.PropertySpec(type=t, pathSet=list(p)) for t, p in paths.items()]
    try:
        objects = collect_in_view(si, list(PATHS), propset, page_size)
        if devices_for is not None:
            _add_devices(si, objects, list(devices_for(objects)), page_size)
        return objects
    except vmodl.MethodFault as exc:
        raise VSphereError(f"inventory read failed: {getattr(exc, 'msg', '') or exc}") from exc


def _add_devices(si: Any, objects: list[ObjectProps], chosen: list[Any], page_size: int) -> None:
    if not chosen:
        return
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=ref) for ref in chosen],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(DETAIL))],
    )
    found = {_moid(o.ref): o.props for o in collect(si, [spec], page_size)}
    for obj in objects:
        if _moid(obj.ref) in found:
            obj.props.update(found[_moid(obj.ref)])


# -- pure parsing ---------------------------------------------------------------------------------


def _moid(ref: Any) -> str:
    return str(ref._moId)


def parse_inventory(objects: Iterable[ObjectProps]) -> Inventory:
    """Pure: fetched objects → Inventory (VMs sorted by name, then moref)."""
    by_kind: dict[str, list[ObjectProps]] = {}
    names: dict[str, str] = {}
    parents: dict[str, str | None] = {}
    dvpg_names: dict[str, str] = {}
    ds_types: dict[str, str] = {}
    for obj in objects:
        kind = type(obj.ref).__name__.rsplit(".", 1)[-1]
        by_kind.setdefault(kind, []).append(obj)
        names[_moid(obj.ref)] = str(obj.props.get("name", ""))
        parent = container(obj.props)
        parents[_moid(obj.ref)] = _moid(parent) if parent is not None else None
        if "key" in obj.props:
            dvpg_names[str(obj.props["key"])] = str(obj.props.get("name", ""))
        if "summary.type" in obj.props:
            ds_types[_moid(obj.ref)] = str(obj.props["summary.type"])
    vms = [
        parse_vm(o, names, parents, dvpg_names, ds_types) for o in by_kind.get("VirtualMachine", [])
    ]
    networks = by_kind.get("Network", []) + by_kind.get("DistributedVirtualPortgroup", [])
    return Inventory(
        vms=tuple(sorted(vms, key=lambda v: (v.name, v.moref))),
        datastores=tuple(sorted(names[_moid(o.ref)] for o in by_kind.get("Datastore", []))),
        portgroups=tuple(sorted({names[_moid(o.ref)] for o in networks})),
        hosts=tuple(sorted(names[_moid(o.ref)] for o in by_kind.get("HostSystem", []))),
        datacenters=tuple(
            sorted(
                path
                for o in by_kind.get("Datacenter", [])
                if (path := folder_path(_moid(o.ref), names, parents)) is not None
            )
        ),
    )


def container(props: dict[str, Any]) -> Any | None:
    """The folder (or vApp) an inventory object sits in: its `parent`; for a VM in a vApp, which
    vSphere leaves without one, its `parentVApp`; for a vApp, its `parentFolder` (its `parent`
    is a resource pool), or its `parentVApp` when nested (break-it 15b N3; community.vmware
    issue #777). None for the root folder."""
    for path in ("parent", "parentFolder", "parentVApp"):
        if props.get(path) is not None:
            return props[path]
    return None


def folder_path(
    moid: str | None, names: dict[str, str], parents: dict[str, str | None]
) -> str | None:
    """/DC0/vm/prod for a folder moref (/Region-A/DC0 for a datacenter in a folder); None when
    the chain is unknown."""
    parts: list[str] = []
    seen: set[str] = set()
    while moid is not None and moid in names and moid not in seen:
        seen.add(moid)
        if parents.get(moid) is None:  # the root folder ("Datacenters") is not shown
            break
        parts.append(names[moid])
        moid = parents.get(moid)
    return "/" + "/".join(reversed(parts)) if parts else None


def parse_vm(
    obj: ObjectProps,
    names: dict[str, str],
    parents: dict[str, str | None],
    dvpg_names: dict[str, str],
    ds_types: dict[str, str] | None = None,
) -> SourceVM:
    """Pure: one VM's fetched properties → SourceVM; `ds_types` (datastore moref → summary.type)
    gives its disks' datastore types (None: unknown)."""
    p = obj.props
    devices = list(p.get("config.hardware.device") or [])
    allocated = disk_allocation(p.get("layoutEx.disk"), p.get("layoutEx.file"))
    controllers = controller_types(devices)
    host = p.get("runtime.host")
    parent = container(p)
    return SourceVM(
        moref=_moid(obj.ref),
        name=str(p.get("name", "")),
        instance_uuid=p.get("config.instanceUuid"),
        bios_uuid=p.get("config.uuid"),
        folder=folder_path(_moid(parent), names, parents) if parent is not None else None,
        host=names.get(_moid(host)) if host is not None else None,
        guest_id=p.get("config.guestId"),
        guest_name=p.get("config.guestFullName"),
        firmware=p.get("config.firmware"),
        secure_boot=secure_boot(p.get("config.bootOptions")),
        cpus=p.get("config.hardware.numCPU"),
        memory_mb=p.get("config.hardware.memoryMB"),
        power_state=str(p["runtime.powerState"]) if "runtime.powerState" in p else None,
        tools=str(p["guest.toolsRunningStatus"]) if "guest.toolsRunningStatus" in p else None,
        guest_state=str(p["guest.guestState"]) if "guest.guestState" in p else None,
        cbt=bool(p.get("config.changeTrackingEnabled")),
        template=bool(p.get("config.template")),
        disks=tuple(
            replace(
                parse_disk(d, names),
                allocated=allocated.get(int(d.key)),
                controller=controllers.get(int(d.controllerKey or 0)),
                datastore_type=datastore_type(d, ds_types or {}),
            )
            for d in devices
            if isinstance(d, vim.vm.device.VirtualDisk)
        ),
        nics=tuple(
            parse_nic(d, names, dvpg_names)
            for d in devices
            if isinstance(d, vim.vm.device.VirtualEthernetCard)
        ),
        snapshots=tuple(parse_snapshots(p.get("snapshot"))),
    )


def secure_boot(options: Any) -> bool | None:
    """config.bootOptions.efiSecureBootEnabled (a UEFI VM's Secure Boot); None when vCenter
    does not report it."""
    value = getattr(options, "efiSecureBootEnabled", None) if options is not None else None
    return None if value is None else bool(value)


def controller_types(devices: list[Any]) -> dict[int, str]:
    """Device key → type name of each disk controller among `devices` (ParaVirtualSCSIController,
    VirtualLsiLogicController, VirtualAHCIController, VirtualIDEController, VirtualNVMEController
    ...): the bus the guest's drivers know its disks by."""
    return {
        int(d.key): type(d).__name__.rsplit(".", 1)[-1]
        for d in devices
        if isinstance(d, vim.vm.device.VirtualController)
    }


def disk_allocation(disks: Any, files: Any) -> dict[int, int]:
    """Bytes each disk occupies on its datastores: the extents of every unit of its chain (its
    base and its snapshots' deltas; an upper bound of what a full copy reads)."""
    sizes = {int(f.key): int(f.size or 0) for f in files or [] if str(f.type) == "diskExtent"}
    return {
        int(d.key): sum(sizes.get(int(k), 0) for unit in d.chain or [] for k in unit.fileKey or [])
        for d in disks or []
        if any(int(k) in sizes for unit in d.chain or [] for k in unit.fileKey or [])
    }


BACKING_FORMATS = {
    "FlatVer1BackingInfo": "flat",
    "FlatVer2BackingInfo": "flat",
    "SparseVer1BackingInfo": "sparse",
    "SparseVer2BackingInfo": "sparse",
    "SeSparseBackingInfo": "se_sparse",
    "RawDiskMappingVer1BackingInfo": "rdm",
    "RawDiskVer2BackingInfo": "raw_disk",
    "PartitionedRawDiskVer2BackingInfo": "raw_disk",
    "LocalPMemBackingInfo": "pmem",
}


def backing_format(backing: Any) -> str:
    """The format of a VirtualDisk backing: "flat" (one -flat.vmdk extent), "flat_delta" (a
    flat backing with a `parent`: the disk runs on a delta link of a snapshot chain, e.g.
    db-000001.vmdk over db.vmdk; its extent is a -delta.vmdk in sparse format, not the disk),
    "sparse", "se_sparse", "rdm", "raw_disk", "pmem", else the backing class's own name."""
    name = type(backing).__name__.rsplit(".", 1)[-1]
    found = BACKING_FORMATS.get(name, name)
    if found == "flat" and getattr(backing, "parent", None) is not None:
        return "flat_delta"
    return found


def delta_files(backing: Any) -> tuple[str, ...]:
    """The files below a disk backing in its snapshot chain (its `parent`, then that one's, down
    to the base disk): () for a base disk. vSphere gives each delta disk's backing its parent's."""
    files: list[str] = []
    parent = getattr(backing, "parent", None)
    while parent is not None and len(files) < MAX_CHAIN:
        files.append(str(getattr(parent, "fileName", "") or ""))
        parent = getattr(parent, "parent", None)
    return tuple(files)


MAX_CHAIN = 256  # links followed at most (vSphere allows 32 snapshots in a chain)


def datastore_type(dev: Any, ds_types: dict[str, str]) -> str | None:
    """The summary.type of the datastore a VirtualDisk's backing is on (VMFS, NFS, vsan, VVOL,
    ...); None when unknown."""
    datastore = getattr(dev.backing, "datastore", None)
    return ds_types.get(_moid(datastore)) if datastore is not None else None


def parse_disk(dev: Any, names: dict[str, str]) -> SourceDisk:
    backing = dev.backing
    datastore = getattr(backing, "datastore", None)
    file_name = str(getattr(backing, "fileName", "") or "")
    ds_name = names.get(_moid(datastore)) if datastore is not None else None
    if ds_name is None and file_name.startswith("["):
        ds_name = file_name[1 : file_name.index("]")]
    rdm = isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
    label = dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}"
    return SourceDisk(
        key=int(dev.key),
        label=str(label),
        capacity=int(dev.capacityInBytes or 0) or int(dev.capacityInKB or 0) * 1024,
        datastore=ds_name,
        file=file_name,
        thin=bool(getattr(backing, "thinProvisioned", False)),
        mode=str(getattr(backing, "diskMode", "") or "persistent"),
        sharing=getattr(backing, "sharing", None),
        rdm=str(getattr(backing, "compatibilityMode", "")) if rdm else None,
        controller_key=int(dev.controllerKey or 0),
        unit_number=dev.unitNumber,
        change_id=getattr(backing, "changeId", None) or None,
        encrypted=getattr(backing, "keyId", None) is not None,
        backing=backing_format(backing),
        deltas=len(delta_files(backing)),
    )


def parse_nic(dev: Any, names: dict[str, str], dvpg_names: dict[str, str]) -> SourceNic:
    backing = dev.backing
    distributed = isinstance(
        backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo
    )
    key = str(backing.port.portgroupKey) if distributed and backing.port else None
    if distributed:
        portgroup = dvpg_names.get(key or "")
    else:
        network = getattr(backing, "network", None)
        portgroup = getattr(backing, "deviceName", None) or (
            names.get(_moid(network)) if network is not None else None
        )
    connectable = dev.connectable
    return SourceNic(
        key=int(dev.key),
        label=str(dev.deviceInfo.label if dev.deviceInfo else f"nic {dev.key}"),
        mac=dev.macAddress.lower() if dev.macAddress else None,
        adapter=type(dev).__name__.rsplit(".", 1)[-1],
        portgroup=portgroup,
        portgroup_key=key,
        distributed=distributed,
        connected=bool(connectable.connected) if connectable else False,
    )


def parse_snapshots(info: Any) -> list[SourceSnapshot]:
    out: list[SourceSnapshot] = []

    def walk(trees: Any, parent: str | None) -> None:
        for tree in trees or []:
            moref = _moid(tree.snapshot)
            created = tree.createTime.isoformat() if tree.createTime else None
            out.append(
                SourceSnapshot(moref, str(tree.name), created, parent, str(tree.description or ""))
            )
            walk(tree.childSnapshotList, moref)

    if info is not None:
        walk(info.rootSnapshotList, None)
    return out
