"""What the spec asks for, resolved against what exists: one DesiredVM per selected source VM.

Pure data. `None` means "not mapped / not chosen" and always comes with a concern explaining it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.model.observed import Flavor, SourceVM


class ConcernLevel(StrEnum):
    ERROR = "error"  # blocks this VM's changes
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Concern:
    level: ConcernLevel
    code: str  # cbt-off, existing-snapshot, unmapped-portgroup, no-flavor, name-collision, ...
    message: str


@dataclass(frozen=True)
class FlavorChoice:
    flavor: Flavor | None  # None: ferry creates one (spec `flavor: create`) or none fits
    create: bool
    reason: str


@dataclass(frozen=True)
class DesiredVolume:
    disk_key: int
    size_gib: int
    capacity: int  # bytes of the source disk
    volume_type: str | None
    bootable: bool
    datastore: str | None
    unzeroed: str | None = None  # why a new volume may not read as zeros; None: it does


@dataclass(frozen=True)
class DesiredPort:
    index: int
    mac: str
    network: str | None
    subnet: str | None
    fixed_ip: str | None
    portgroup: str | None
    network_create: Mapping[str, Any] | None = None  # the network_map's create: block
    nic_key: int | None = None  # the source NIC's device key (4000, ...)
    portgroup_key: str | None = None  # its distributed portgroup's key (dvportgroup-N)


@dataclass(frozen=True)
class ImageOutput:
    """destination.output: image: disks copied into files under `work_dir`, converted there and
    uploaded to Glance as `disk_format` (raw | qcow2); the server boots from volumes made from
    the images (`boot` volume) or from the boot disk's image (`boot` image). The state's
    files go under `<work_dir>/<lineage>/` (the state's lineage: two states sharing a work_dir
    never share a file, break-it 16b F2)."""

    work_dir: str
    disk_format: str = "qcow2"  # holes are not sent (HTTP has none): 53x faster in the lab
    boot: str = "volume"
    lineage: str = ""  # the state's; "": files directly under work_dir (a test's, pure)


@dataclass(frozen=True)
class DesiredVM:
    name: str  # the address name (the source VM's name)
    source: SourceVM
    mode: str  # replicate | cutover | cold
    target_name: str  # sanitized, unique OpenStack name
    flavor: FlavorChoice
    volumes: tuple[DesiredVolume, ...]
    ports: tuple[DesiredPort, ...]
    security_groups: tuple[str, ...] = ()
    key_pair: str | None = None
    verify: str = "off"  # off | full | changed (see spec: verify)
    convert: bool = True
    enable_cbt: bool = False
    max_downtime: int | None = None
    power_off: dict[str, Any] = field(default_factory=dict)  # the spec's power_off block
    firstboot: tuple[str, ...] = ()  # scripts the converted guest runs at first boot
    debug: bool = False  # virt-v2v debug output into the VM's log
    reader: str = "vddk"  # how its disks are read: vddk | https | datastore_path (source.reader)
    availability_zone: str | None = None  # its destination zone; None: any
    conversion_host: str | None = None  # the host the spec pins it to; None: the plan places it
    image: ImageOutput | None = None  # destination.output: image; None: volumes (the default)
    concerns: tuple[Concern, ...] = field(default_factory=tuple)

    @property
    def blocked(self) -> bool:
        return any(c.level is ConcernLevel.ERROR for c in self.concerns)
