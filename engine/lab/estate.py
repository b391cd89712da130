"""The lab's estate: the VMs `ferry lab up` creates, as plain data (no I/O).

Shaped like a small real estate: two ESXi hosts, two datastores, standard and distributed
portgroups, thin and thick disks of real capacities, distinct MACs, mixed guests, one VM with CBT
off, one with an existing snapshot, one powered off, one whose name needs sanitizing. VMware Tools
run in web01 and db01 only (a graceful shutdown of the others faults, as on vSphere).
Everything is deterministic: instance UUIDs and disk contents derive from names and seeds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

GiB = 1024**3
MiB = 1024**2

HOSTS = ("DC0_C0_H0", "DC0_C0_H1")
DATASTORES = ("LocalDS_0", "LocalDS_1")
STANDARD_PORTGROUP = "VM Network"
DISTRIBUTED_PORTGROUPS = ("DC0_DVPG0", "DC0_DVPG1")
_NAMESPACE = uuid.UUID("6f1d5c1e-8c55-4f7e-9f0e-3c2b4a0f6e11")


@dataclass(frozen=True)
class LabDisk:
    key: int
    capacity: int
    datastore: str
    thin: bool = True
    fill: float = 0.02  # share of the capacity that holds data at lab up


@dataclass(frozen=True)
class LabNic:
    key: int
    portgroup: str
    mac: str


@dataclass(frozen=True)
class LabVM:
    name: str
    guest_id: str
    cpus: int
    memory_mb: int
    host: str
    disks: tuple[LabDisk, ...]
    nics: tuple[LabNic, ...]
    cbt: bool = True
    powered_on: bool = True
    tools: bool = False  # VMware Tools run while it is on (a graceful shutdown can work)
    firmware: str = "bios"
    existing_snapshot: str | None = None
    tags: tuple[str, ...] = ()  # vSphere tags, "category:name"

    @property
    def instance_uuid(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, "instance/" + self.name))

    @property
    def bios_uuid(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, "bios/" + self.name))

    @property
    def datastore(self) -> str:
        return self.disks[0].datastore

    def disk(self, key: int) -> LabDisk | None:
        """The disk with device key `key`; None when the VM has no such disk."""
        return next((d for d in self.disks if d.key == key), None)


def _mac(vm_index: int, nic_index: int) -> str:
    return f"00:50:56:8f:{vm_index:02x}:{nic_index:02x}"


def _nics(vm_index: int, *portgroups: str) -> tuple[LabNic, ...]:
    return tuple(LabNic(4000 + i, pg, _mac(vm_index, i)) for i, pg in enumerate(portgroups))


ESTATE: tuple[LabVM, ...] = (
    LabVM(
        name="web01",
        guest_id="rhel9_64Guest",
        cpus=2,
        memory_mb=4096,
        host=HOSTS[0],
        firmware="efi",
        tools=True,
        tags=("wave:1", "tier:web"),
        disks=(LabDisk(2000, 2 * GiB, DATASTORES[0]), LabDisk(2001, 1 * GiB, DATASTORES[1])),
        nics=_nics(1, STANDARD_PORTGROUP, DISTRIBUTED_PORTGROUPS[0]),
    ),
    LabVM(
        name="db01",
        guest_id="ubuntu64Guest",
        cpus=4,
        memory_mb=8192,
        host=HOSTS[1],
        tools=True,
        tags=("wave:1", "tier:db"),
        disks=(
            LabDisk(2000, 1 * GiB, DATASTORES[1], thin=False),
            LabDisk(2001, 4 * GiB, DATASTORES[1]),
            LabDisk(2002, 1 * GiB, DATASTORES[0]),
        ),
        nics=_nics(2, DISTRIBUTED_PORTGROUPS[0], DISTRIBUTED_PORTGROUPS[1], STANDARD_PORTGROUP),
    ),
    LabVM(
        name="win-app01",
        guest_id="windows2019srv_64Guest",
        cpus=2,
        memory_mb=4096,
        host=HOSTS[0],
        cbt=False,
        firmware="efi",
        disks=(LabDisk(2000, 3 * GiB, DATASTORES[0]),),
        nics=_nics(3, DISTRIBUTED_PORTGROUPS[1]),
    ),
    LabVM(
        name="Reporting Ünit 1",
        guest_id="centos8_64Guest",
        cpus=1,
        memory_mb=2048,
        host=HOSTS[1],
        existing_snapshot="nightly-backup",
        tags=("wave:2",),
        disks=(LabDisk(2000, 1 * GiB, DATASTORES[0]),),
        nics=_nics(4, STANDARD_PORTGROUP),
    ),
    LabVM(
        name="build-old",
        guest_id="debian11_64Guest",
        cpus=1,
        memory_mb=1024,
        host=HOSTS[0],
        powered_on=False,
        disks=(LabDisk(2000, 2 * GiB, DATASTORES[1]),),
        nics=_nics(5, DISTRIBUTED_PORTGROUPS[0], STANDARD_PORTGROUP),
    ),
)


def find_vm(name: str) -> LabVM | None:
    """The estate VM named `name`; None when there is none."""
    return next((vm for vm in ESTATE if vm.name == name), None)
