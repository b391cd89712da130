"""What exists at the source, as refresh observed it (pure data).

`None` always means "absent" or "not reported by the source", never a default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


def epoch(change_id: str | None) -> str | None:
    """The CBT epoch (uuid part) of a vSphere changeId '<uuid>/<sequence>'; None without one.
    Two changeIds of different epochs cannot be compared (CBT was reset in between)."""
    return change_id.rsplit("/", 1)[0] if change_id and "/" in change_id else None


@dataclass(frozen=True)
class SourceDisk:
    key: int
    label: str
    capacity: int  # bytes
    datastore: str | None
    file: str  # "[datastore] path/disk.vmdk"
    thin: bool
    mode: str  # persistent, independent_persistent, ...
    sharing: str | None  # sharingNone / sharingMultiWriter
    rdm: str | None  # compatibility mode of a raw device mapping; None for a virtual disk
    controller_key: int
    unit_number: int | None
    change_id: str | None
    encrypted: bool = False
    allocated: int | None = None  # bytes on the datastore (layoutEx); None: unknown
    backing: str | None = None  # flat, sparse, se_sparse, rdm, ... (backing_format); None: unknown
    controller: str | None = None  # its controller type, e.g. ParaVirtualSCSIController
    deltas: int = 0  # delta disks its backing runs on (backing.parent links); 0: the base disk
    datastore_type: str | None = None  # its datastore's summary.type: VMFS, NFS, vsan, VVOL...


def consolidation_needed(deltas: int, snapshots: int) -> bool:
    """vSphere's "consolidation needed": a disk runs on more delta disks (`deltas`, the links of
    its backing's parent chain) than the VM has snapshots (`snapshots`; each snapshot adds one
    delta to the disks it freezes), so a delta no snapshot owns sits between the base disk and
    the VM's current state (a failed backup's or snapshot removal's leftover). A reader of the
    base extent (https, datastore_path) would then read an older disk or a delta file as the
    disk (break-it 15 F2, 15b N2). The plan checks the live disks against the VM's snapshots,
    the apply the disks ferry's snapshot froze against the snapshots it was taken on top of."""
    return deltas > snapshots


CONSOLIDATE = (
    "consolidate the VM's disks (vSphere client: Snapshots > Consolidate), or read this VM "
    "with source.reader: vddk (a linked clone's disks run on another VM's base disk, which no "
    "consolidation removes: vddk, or make it a full clone)"
)  # break-it 15c F-C: vCloud fast-provisioned, Horizon and vRA linked clones


@dataclass(frozen=True)
class SourceNic:
    key: int
    label: str
    mac: str | None
    adapter: str  # VirtualVmxnet3, VirtualE1000, ...
    portgroup: str | None  # name; None when the backing names none
    portgroup_key: str | None  # distributed portgroup key (dvportgroup-N)
    distributed: bool
    connected: bool


# What ferry names and describes the vCenter snapshots it takes (a sync's, the CBT activation
# cycle's): a snapshot is ferry's only with both, so a user's `ferry-backup` is never removed.
# The description ends with the lineage of the state that took it (snapshot_description): a
# state removes as leftovers only its own (and those of an older ferry, which wrote none),
# never another state's a running apply may be reading (break-it 16b F5).
FERRY_SNAPSHOT_PREFIX = "ferry-"
SYNC_SNAPSHOT_DESCRIPTION = "taken by ferry for a sync; removed when it ends"
CBT_SNAPSHOT_DESCRIPTION = "CBT activation cycle (ferry)"
_LINEAGE = re.compile(r"^(?P<kind>.*) \(ferry state (?P<lineage>[^\s()]+)\)$")


def snapshot_description(kind: str, lineage: str) -> str:
    """The description ferry gives a snapshot it takes: `kind` (SYNC_SNAPSHOT_DESCRIPTION or
    CBT_SNAPSHOT_DESCRIPTION) and the lineage (a UUID) of the state whose apply takes it."""
    return f"{kind} (ferry state {lineage})"


def _split_description(description: str) -> tuple[str, str | None]:
    """`description` → (ferry's kind of snapshot, the state lineage; None: none written)."""
    found = _LINEAGE.match(description)
    return (found["kind"], found["lineage"]) if found else (description, None)


@dataclass(frozen=True)
class SourceSnapshot:
    moref: str
    name: str
    created: str | None  # ISO 8601
    parent: str | None
    description: str = ""

    @property
    def ferry_made(self) -> bool:
        """Taken by ferry (its name prefix and the mark in its description), by any state."""
        return ferry_made(self.name, self.description)

    @property
    def lineage(self) -> str | None:
        """The lineage of the ferry state that took it; None: not ferry's, or an older
        ferry's (no lineage in its description)."""
        return snapshot_lineage(self.name, self.description)

    def left_by(self, lineage: str) -> bool:
        """A snapshot the state of `lineage` may remove as its interrupted apply's leftover
        (`own_leftover`)."""
        return own_leftover(self.name, self.description, lineage)


def ferry_made(name: str, description: str) -> bool:
    """Whether a vCenter snapshot named `name`, described `description`, is one ferry took
    (any state's, with or without its lineage)."""
    return name.startswith(FERRY_SNAPSHOT_PREFIX) and _split_description(description)[0] in (
        SYNC_SNAPSHOT_DESCRIPTION,
        CBT_SNAPSHOT_DESCRIPTION,
    )


def snapshot_lineage(name: str, description: str) -> str | None:
    """The lineage of the ferry state that took the snapshot; None when ferry did not take
    it or an older ferry did (it wrote no lineage)."""
    return _split_description(description)[1] if ferry_made(name, description) else None


def others_advice(names: list[str]) -> str:
    """What a refusal adds about `names`, snapshots another ferry state took (a base-extent
    reader refuses them as it does a backup's): not the user's to delete while that state's
    apply may be reading them; "" when there are none."""
    if not names:
        return ""
    return (
        f" ({', '.join(names)}: another ferry state's, removed when its apply ends; plan "
        "again then, do not delete it under a running apply)"
    )


def own_leftover(name: str, description: str, lineage: str) -> bool:
    """Whether the state of `lineage` may remove this snapshot as its interrupted apply's
    leftover: ferry's, and taken by that state or by an older ferry (no lineage written).
    Another state's (a rehearsal's, a second state's running copy) is never removed."""
    return ferry_made(name, description) and snapshot_lineage(name, description) in (
        None,
        lineage,
    )


@dataclass(frozen=True)
class SourceVM:
    moref: str
    name: str
    instance_uuid: str | None
    bios_uuid: str | None
    folder: str | None  # inventory path, e.g. /DC0/vm/prod
    host: str | None
    guest_id: str | None
    guest_name: str | None
    firmware: str | None
    cpus: int | None
    memory_mb: int | None
    power_state: str | None
    tools: str | None  # guest.toolsRunningStatus
    cbt: bool
    template: bool
    disks: tuple[SourceDisk, ...]
    nics: tuple[SourceNic, ...]
    snapshots: tuple[SourceSnapshot, ...]
    secure_boot: bool | None = None  # config.bootOptions.efiSecureBootEnabled; None: not reported
    # epoch seconds of each power-on/resume vCenter logged since ferry powered the VM off for
    # its cutover (engine.planner.refresh.power_on_events); () when none or not read
    powered_on_at: tuple[float, ...] = ()
    guest_state: str | None = None  # guest.guestState (running, shuttingDown, ...); None: not read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Inventory:
    vms: tuple[SourceVM, ...]
    datastores: tuple[str, ...]
    portgroups: tuple[str, ...]
    hosts: tuple[str, ...]
    tags: Mapping[str, frozenset[str]] = field(default_factory=dict)  # 'category:tag' → morefs
    datacenters: tuple[str, ...] = ()  # inventory paths, e.g. /DC0, /Region-A/DC1


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    ram_mb: int
    id: str = ""  # "" for one ferry would create
    disk: int = 0  # GiB of root disk on the hypervisor (Nova's `disk`): boot: image needs it


@dataclass(frozen=True)
class ObservedAttachment:
    """A Cinder attachment of a volume (attachments API): its id, status (`attached`, or one
    a complete never followed: `reserved`, `attaching`, `detaching`, `error_*`), the server it
    is for (`instance`; "" when none) and that server's name ("" when not in the project)."""

    id: str
    status: str
    server_id: str = ""
    server_name: str = ""


@dataclass(frozen=True)
class ObservedVolume:
    """A Cinder volume carrying ferry's metadata (or os-migrate's, for adoption).

    `volume_type`: its Cinder volume type's name (None: not read, or the cloud's default);
    `lineage`: the lineage of the ferry state that created, adopted or last synced it (its
    `ferry_state` metadata; None: made by a ferry that did not record it, or by os-migrate);
    `attachments`: as the attachments API lists them (None: not read); `image_metadata`: its
    volume image metadata (Nova boots a server from the volume by it; None: not read);
    `protected_by`: a protection snapshot ferry took of it before a conversion (its
    `ferry_protects` metadata), still in Cinder: a cutover may have written the volume since
    its changeId; `updated_at`: Cinder's, None when not read."""

    id: str
    name: str
    status: str
    size_gib: int
    vm_uuid: str
    disk_key: int
    change_id: str | None
    converted: bool
    origin: str = "ferry"  # ferry | os-migrate
    volume_type: str | None = None
    lineage: str | None = None
    attachments: tuple[ObservedAttachment, ...] | None = None
    image_metadata: Mapping[str, str] | None = None
    protected_by: str | None = None  # a ferry protection snapshot of it in Cinder (its id)
    updated_at: str | None = None  # Cinder's (ISO 8601): model.state.changed_outside reads it
    # its `ferry_updated_at` metadata (model.state.STAMP_KEY; None: none, or cleared), kept by
    # the planner only for a volume of this state's lineage
    stamp: str | None = None


@dataclass(frozen=True)
class ObservedPort:
    """A Neutron port on a network the spec maps, or one ferry tagged (anywhere).

    `vm_uuid` is the source VM ferry made it for (its `ferry_vm` tag or description); None: ferry
    did not make it; `nic` the VM's NIC index it was made for. `network` is the network's id;
    `ips` its fixed IP addresses."""

    id: str
    name: str
    mac: str
    network: str | None
    vm_uuid: str | None
    ips: tuple[str, ...] = ()
    owner: str = ""  # device_owner: compute:nova, network:dhcp, ...; "" when unbound
    nic: int | None = None  # the source NIC ferry made it for (its description); None: unknown
    device: str = ""  # device_id: the server it is bound to; "" when unbound
    # the ferry state that manages it (its description's ferry_state); None: none said (made by
    # an older ferry, or not ferry's)
    lineage: str | None = None


@dataclass(frozen=True)
class ObservedSubnet:
    id: str
    name: str
    network: str  # the network's id
    cidr: str
    pools: tuple[tuple[str, str], ...] = ()  # allocation pools: (first, last) address


@dataclass(frozen=True)
class ObservedServer:
    """A server carrying ferry's metadata (`ferry_vm`: the source VM's instance UUID).

    `image_id`: the Glance image it boots from (Nova's `image.id`; None: booted from a volume,
    or not read)."""

    id: str
    name: str
    status: str
    vm_uuid: str | None
    image_id: str | None = None


@dataclass(frozen=True)
class ObservedImageVolume:
    """A Cinder volume ferry made from one of its Glance images (destination.output: image),
    found by its metadata `ferry_image_vm` (the source VM's instance UUID) and `ferry_image_disk`
    (the disk's device key): what a lost state adopts for a server still running on it.

    `image_id`: the image Cinder made it from (its volume image metadata; None: not said);
    `server_ids`: the servers it is attached to (its `attachments`; () when none); `lineage`:
    the lineage of the ferry state that made or adopted it (its `ferry_state` metadata, as every
    volume ferry makes carries; None: made by a ferry that did not record it)."""

    id: str
    vm_uuid: str
    disk_key: int
    status: str
    size_gib: int
    image_id: str | None = None
    server_ids: tuple[str, ...] = ()
    lineage: str | None = None


@dataclass(frozen=True)
class ObservedImage:
    """A Glance image tagged `ferry` (destination.output: image), as Glance lists it now.

    `vm_uuid`, `disk_key`: its ferry_vm_uuid / ferry_disk_key properties (None: not set);
    `properties`: every property Glance holds for it ({name: value as a string}: Nova's keys such
    as hw_disk_bus and anyone's own, ferry's included); `lineage`: the lineage of the ferry state
    that uploaded or adopted it (its `ferry_state` property; None: uploaded by a ferry that did
    not record it)."""

    id: str
    status: str
    vm_uuid: str | None = None
    disk_key: int | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    lineage: str | None = None


@dataclass(frozen=True)
class Quota:
    """A project quota: its limit (-1: unlimited) and what is in use."""

    limit: int
    used: int


@dataclass(frozen=True)
class Destination:
    """What refresh found in the destination cloud."""

    flavors: tuple[Flavor, ...] = ()
    networks: frozenset[str] = frozenset()
    volume_types: frozenset[str] = frozenset()
    encrypted_volume_types: frozenset[str] = frozenset()  # those with an encryption spec
    volume_type_ids: Mapping[str, str] = field(default_factory=dict)  # a type's id → its name
    # the project's default volume type's name (GET /types/default): what Cinder gives a volume
    # created without one, whose per-type quotas count it; None: the cloud did not say
    default_volume_type: str | None = None
    security_groups: frozenset[str] = frozenset()  # names and ids
    volumes: tuple[ObservedVolume, ...] = ()
    ports: tuple[ObservedPort, ...] = ()
    servers: tuple[ObservedServer, ...] = ()
    quotas: Mapping[str, Quota] = field(default_factory=dict)  # volumes, gigabytes, ports, ...
    server_names: frozenset[str] = frozenset()  # every server of the project, by name
    server_ids: frozenset[str] = frozenset()  # every server of the project, by id
    network_names: Mapping[str, str] = field(default_factory=dict)  # network id → name
    subnets: tuple[ObservedSubnet, ...] = ()
    key_pairs: frozenset[str] | None = None  # the user's nova key pairs; None: not readable
    roles: frozenset[str] | None = None  # the cloud user's roles in the project; None: unknown
    work_dir_free: int | None = None  # free bytes of destination.work_dir (output: image)
    # the disk files present in work_dir (`<work_dir>/<uuid>/disk-<key>.raw`); None: not read
    work_dir_files: frozenset[str] | None = None
    # ferry's Glance images (tag `ferry`) by id; None: Glance not read (output: volume, or the
    # listing failed): recorded images are then compared with the state only
    images: Mapping[str, ObservedImage] | None = None
    # the image metadata of the volumes ferry made from its images (metadata ferry_image_vm), by
    # volume id; None: not read
    image_volumes: Mapping[str, Mapping[str, str]] | None = None
    # the volumes ferry made from its images (metadata ferry_image_vm and ferry_image_disk);
    # None: not read
    volumes_from_images: tuple[ObservedImageVolume, ...] | None = None
    # every volume of the project by id, whatever its metadata (a recorded one missing is gone:
    # deleted outside ferry); None: not read
    volume_ids: frozenset[str] | None = None
    # every Cinder snapshot of the project by id (a protection snapshot the state records and
    # this lacks is gone: deleted outside ferry); None: not read
    snapshot_ids: frozenset[str] | None = None
    # each Cinder snapshot's id -> the ids of its volume's snapshots taken after it (by
    # created_at; Cinder reverts a volume only to its newest snapshot); None: not read
    newer_snapshots: Mapping[str, tuple[str, ...]] | None = None
    # volume id -> its Cinder snapshots that are not ferry's protection snapshot of it, each
    # "id (name)": Cinder deletes no volume with snapshots; None: not read
    foreign_snapshots: Mapping[str, tuple[str, ...]] | None = None
