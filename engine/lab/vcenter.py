"""The lab's vCenter: starting ferry-vcsim and creating the estate in it through the real API.

Everything here goes through pyVmomi against the running simulator, exactly as a user's tooling
would against vCenter: CreateVM_Task with disks and NICs (manual MACs), power on, snapshots.
"""

from __future__ import annotations

import secrets
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim

from engine.errors import LabError
from engine.lab import disks as lab_disks
from engine.lab.estate import DISTRIBUTED_PORTGROUPS, ESTATE, LabVM
from engine.lab.processes import ProcessRecord, is_running, spawn
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.session import VCenterTarget
from engine.providers.vsphere.tags import tag_session
from engine.providers.vsphere.tasks import wait_task

USER = "administrator@vsphere.local"
START_TIMEOUT = 20.0
# QueryChangedDiskAreas answers at most this many areas / bytes of disk per call, so every client
# must loop over windows (a 1 GiB disk takes at least four calls).
CBT_MAX_AREAS = 64
CBT_WINDOW = 256 * 1024 * 1024


@dataclass(frozen=True)
class VCenterFiles:
    """Where the lab keeps its vCenter's URL, credentials and certificate."""

    root: Path

    @property
    def url(self) -> Path:
        return self.root / "url"

    @property
    def password(self) -> Path:
        return self.root / "password"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def log(self) -> Path:
        return self.root / "vcsim.log"


def target(files: VCenterFiles) -> VCenterTarget:
    """How to log in to the running lab vCenter (TLS verified against its certificate)."""
    try:
        parts = urlsplit(files.url.read_text().strip())
        password = files.password.read_text().strip()
    except OSError as exc:
        raise LabError("the lab's vCenter is not up: run `ferry lab up`") from exc
    return VCenterTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 443,
        user=USER,
        password=password,
        cafile=files.cert,
    )


def expire_sessions(files: VCenterFiles) -> int:
    """End every session of the running lab vCenter (POST /ferry/expire-sessions, vcsim's
    ferry_sessions.go), as vCenter does when sessions time out: the old cookies get
    NotAuthenticated and 401 until their clients log in again. Returns how many were ended.
    Raises LabError when the vCenter is not up or its binary lacks the knob (rebuild it)."""
    try:
        base = files.url.read_text().strip()
    except OSError as exc:
        raise LabError("the lab's vCenter is not up: run `ferry lab up`") from exc
    parts = urlsplit(base)
    url = f"https://{parts.netloc}/ferry/expire-sessions"
    context = ssl.create_default_context(cafile=str(files.cert))
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return int(answer.read().decode().strip())
    except urllib.error.HTTPError as exc:
        raise LabError(
            f"the lab vCenter has no session expiry ({exc.code}): rebuild ferry-vcsim "
            "(python -m engine.lab.vcsim_build) and restart the lab"
        ) from exc
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot expire the lab vCenter's sessions: {exc}") from exc


def start(
    binary: Path,
    files: VCenterFiles,
    disks: Path,
    extra: tuple[str, ...] = (),
    timeout: float = START_TIMEOUT,
) -> ProcessRecord:
    """Start ferry-vcsim on loopback with a fresh password; return once it serves.

    `extra` adds simulator flags (e.g. -machines 5000 for scale benchmarks)."""
    if not binary.exists():
        raise LabError(f"{binary} is missing: run scripts/setup")
    files.root.mkdir(parents=True, exist_ok=True)
    files.url.unlink(missing_ok=True)
    files.password.touch(mode=0o600)
    files.password.chmod(0o600)
    files.password.write_text(secrets.token_urlsafe(24) + "\n")
    argv = [
        str(binary),
        "-listen",
        "127.0.0.1:0",
        "-url-file",
        str(files.url),
        "-cert-out",
        str(files.cert),
        "-user",
        USER,
        "-password-file",
        str(files.password),
        "-disks",
        str(disks),
        "-cbt-max-areas",
        str(CBT_MAX_AREAS),
        "-cbt-window",
        str(CBT_WINDOW),
        *extra,
    ]
    record = spawn("vcsim", argv, files.log)
    deadline = time.monotonic() + timeout
    while not files.url.exists():
        if not is_running(record) or time.monotonic() > deadline:
            tail = files.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError("vcsim did not start: " + " | ".join(tail))
        time.sleep(0.02)
    return record


def _by_name(si: Any, kind: Any) -> dict[str, Any]:
    return {str(o.props["name"]): o.ref for o in retrieve(si, kind, ["name"])}


def _disk_spec(vm: LabVM, index: int) -> Any:
    disk = vm.disks[index]
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[{disk.datastore}] {vm.name}/{vm.name}_{index}.vmdk",
        diskMode="persistent",
        thinProvisioned=disk.thin,
        eagerlyScrub=not disk.thin,
    )
    device = vim.vm.device.VirtualDisk(
        key=disk.key,
        controllerKey=1000,
        unitNumber=index,
        backing=backing,
        capacityInKB=disk.capacity // 1024,
        capacityInBytes=disk.capacity,
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=device)


def _nic_spec(nic_key: int, mac: str, backing: Any) -> Any:
    device = vim.vm.device.VirtualVmxnet3(
        key=nic_key,
        addressType="manual",
        macAddress=mac,
        backing=backing,
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True),
    )
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=device)


def _nic_backing(portgroup: str, networks: dict[str, Any]) -> Any:
    net = networks[portgroup]
    if portgroup in DISTRIBUTED_PORTGROUPS:
        port = vim.dvs.PortConnection(
            switchUuid=net.config.distributedVirtualSwitch.uuid, portgroupKey=net.key
        )
        return vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    return vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=portgroup, network=net)


def _config_spec(vm: LabVM, networks: dict[str, Any]) -> Any:
    controller = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        device=vim.vm.device.ParaVirtualSCSIController(
            key=1000, busNumber=0, sharedBus="noSharing"
        ),
    )
    devices = [controller] + [_disk_spec(vm, i) for i in range(len(vm.disks))]
    devices += [_nic_spec(n.key, n.mac, _nic_backing(n.portgroup, networks)) for n in vm.nics]
    return vim.vm.ConfigSpec(
        name=vm.name,
        guestId=vm.guest_id,
        numCPUs=vm.cpus,
        memoryMB=vm.memory_mb,
        instanceUuid=vm.instance_uuid,
        uuid=vm.bios_uuid,
        firmware=vm.firmware,
        changeTrackingEnabled=vm.cbt,
        files=vim.vm.FileInfo(vmPathName=f"[{vm.datastore}]"),
        deviceChange=devices,
        extraConfig=[vim.option.OptionValue(key="ferry.lab.tools", value=str(vm.tools).lower())],
    )


def populate(si: Any, disks: Path, target: VCenterTarget) -> None:
    """Create the estate's disks (bytes) and VMs (through the API), then tag them (through the
    vSphere Automation REST API)."""
    content = si.RetrieveContent()
    datacenter = content.rootFolder.childEntity[0]
    hosts = _by_name(si, vim.HostSystem)
    networks = _by_name(si, vim.Network)
    created: dict[str, str] = {}
    for vm in ESTATE:
        for disk in vm.disks:
            lab_disks.create_disk(disks, vm, disk)
        for datastore in {d.datastore for d in vm.disks} - {vm.datastore}:
            content.fileManager.MakeDirectory(
                name=f"[{datastore}] {vm.name}", datacenter=datacenter, createParentDirectories=True
            )
        host = hosts[vm.host]
        ref = wait_task(
            si,
            datacenter.vmFolder.CreateVM_Task(
                config=_config_spec(vm, networks), pool=host.parent.resourcePool, host=host
            ),
            f"creating lab VM {vm.name!r}",
        )
        if vm.powered_on:
            wait_task(si, ref.PowerOnVM_Task(), f"powering on {vm.name!r}")
        if vm.existing_snapshot:
            wait_task(
                si,
                ref.CreateSnapshot_Task(
                    name=vm.existing_snapshot, description="", memory=False, quiesce=False
                ),
                f"snapshotting {vm.name!r}",
            )
        created[vm.name] = ref._moId
    _tag(target, created)


def _tag(target: VCenterTarget, morefs: dict[str, str]) -> None:
    with tag_session(target) as client:
        for vm in ESTATE:
            for tag in vm.tags:
                category, name = tag.split(":", 1)
                client.attach(client.create_tag(category, name), morefs[vm.name])
