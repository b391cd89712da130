"""The embedded lab: `ferry lab up | down | status | env | write`.

All lab data lives in one directory (default ./state/lab, or FERRY_LAB_DIR, or --dir)::

    lab.json      what is running: each process's PID and start time, format_version
    vcenter/      URL, password (0600), TLS certificate and log of the lab vCenter
    disks/        live disks, change journals and frozen snapshots (engine/lab/disks.py)

`up` refuses when the lab is already up; `down` stops only the processes lab.json records, by
PID, and refuses when nothing is up. `status` checks every service through its real API.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vim

from engine.dataplane.nbdkit import FileDiskSource
from engine.errors import FerryError, LabError, UserError
from engine.lab import agents as lab_agents
from engine.lab import disks as lab_disks
from engine.lab import faults as lab_faults
from engine.lab import openstack as lab_openstack
from engine.lab import vcenter
from engine.lab.estate import ESTATE, LabVM, find_vm
from engine.lab.openstack import health as openstack_health
from engine.lab.openstack.services import free_port
from engine.lab.postgres import LabPostgres
from engine.lab.processes import (
    ProcessRecord,
    group_members,
    is_running,
    resident_bytes,
    stop_all,
)
from engine.lab.status import ServiceStatus
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.session import VCenterTarget, session
from engine.providers.vsphere.snapshots import layout_extent

FORMAT_VERSION = 1


CHECKOUT_LAB = Path(__file__).resolve().parents[2] / "state" / "lab"


def default_dir() -> Path:
    """$FERRY_LAB_DIR; else ./state/lab; else, when ./state/lab holds no lab but the checkout
    ferry runs from does (`scripts/demo` starts it there), that one — so `ferry lab env` and
    `lab status` find the lab from any directory instead of calling it down."""
    if os.environ.get("FERRY_LAB_DIR"):
        return Path(os.environ["FERRY_LAB_DIR"])
    here = Path.cwd() / "state" / "lab"
    if not (here / "lab.json").exists() and (CHECKOUT_LAB / "lab.json").exists():
        return CHECKOUT_LAB
    return here


def vcsim_binary() -> Path:
    return Path(os.environ.get("FERRY_VCSIM") or Path(sys.prefix) / "bin" / "ferry-vcsim")


@dataclass(frozen=True)
class Lab:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def openstack_root(self) -> Path:
        return self.root / "openstack"

    @property
    def postgres(self) -> LabPostgres:
        return LabPostgres(self.root)

    @property
    def vcenter_files(self) -> vcenter.VCenterFiles:
        return vcenter.VCenterFiles(self.root / "vcenter")

    # -- recorded state -------------------------------------------------------------------------

    def processes(self) -> list[ProcessRecord]:
        """The processes lab.json records; empty when the lab was never started or is down."""
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return []
        except (OSError, json.JSONDecodeError) as exc:
            raise LabError(f"{self.state_file} is unreadable: {exc}") from exc
        return [ProcessRecord.from_json(p) for p in data.get("processes", [])]

    def _record(self, processes: list[ProcessRecord]) -> None:
        data = {
            "format_version": FORMAT_VERSION,
            "started_at": time.time(),
            "processes": [p.to_json() for p in processes],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.state_file)

    def running(self) -> list[ProcessRecord]:
        return [p for p in self.processes() if is_running(p)]

    # -- commands -------------------------------------------------------------------------------

    def up(self, progress: Callable[[str], None] = lambda _: None, hosts: int = 1) -> float:
        """Start every lab service and create the estate with `hosts` conversion-host servers
        (ferry-conversion-01..NN); returns the seconds it took. `progress` gets a line per
        service started and per phase done (with seconds since the start)."""
        began = time.monotonic()
        alive = self.running()
        if alive:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in alive)
            raise UserError(
                f"the lab in {self.root} is already up: {names}; run `ferry lab down` first"
            )
        self._clear_stale()
        self.root.mkdir(parents=True, exist_ok=True)
        started: list[ProcessRecord] = []

        def say(line: str) -> None:
            progress(f"{time.monotonic() - began:5.0f} s  {line}")

        def record(process: ProcessRecord) -> None:
            started.append(process)
            self._record(started)
            say(f"{process.name} started (pid {process.pid})")

        try:
            record(vcenter.start(vcsim_binary(), self.vcenter_files, self.disks))
            self.postgres.start(free_port(), record)
            with session(self.vcenter_target()) as si:
                vcenter.populate(si, self.disks, self.vcenter_target())
            say("vCenter estate created (VMs, disks, networks)")
            lab_openstack.up(self.openstack_root, record, hosts, say)
            made = "conversion host" if hosts == 1 else f"{hosts} conversion hosts"
            say(f"OpenStack project, networks, flavors and {made} created")
        except BaseException:
            stop_all(started)
            self.state_file.unlink(missing_ok=True)
            raise
        return time.monotonic() - began

    def _clear_stale(self) -> None:
        self.postgres.remove()
        shutil.rmtree(self.postgres.home, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.disks, ignore_errors=True)
        shutil.rmtree(self.openstack_root, ignore_errors=True)

    def disk_usage(self) -> int:
        """Bytes the lab directory occupies on disk (sparse files count what they hold)."""
        total = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    continue
        return total

    def purge(self) -> None:
        """Remove the lab directory (refused while the lab is up)."""
        alive = self.running()
        if alive:
            raise UserError(
                f"the lab in {self.root} is up: `ferry lab down --purge` stops it first"
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def down(self) -> list[ProcessRecord]:
        """Stop what lab.json records (by PID); returns what was stopped."""
        records = self.processes()
        if not records:
            raise UserError(f"the lab in {self.root} is not up")
        records = lab_agents.stop(self.root) + records  # `lab agents`' first: they use the rest
        stop_all(records)
        self.postgres.remove()
        self.state_file.unlink()
        return records

    def outage(self, name: str) -> ProcessRecord:
        """A fault drill: stop one service (by its recorded PID); `recover` starts it again."""
        if name not in lab_openstack.RESTARTABLE:
            raise UserError(
                f"{name!r} is not a service a drill can stop "
                f"(one of: {', '.join(lab_openstack.RESTARTABLE)})"
            )
        record = next((p for p in self.processes() if p.name == name), None)
        if record is None or not is_running(record):
            raise UserError(f"{name} is not running in the lab in {self.root}")
        stop_all([record])
        return record

    def recover(self, name: str) -> ProcessRecord:
        """Start a service `outage` stopped, on its ports, and record its new PID."""
        records = self.processes()
        old = next((p for p in records if p.name == name), None)
        if old is not None and is_running(old):
            raise UserError(f"{name} is running (pid {old.pid})")
        started = lab_openstack.restart(self.openstack_root, name)
        self._record([started if p.name == name else p for p in records])
        return started

    def broker_consumer_timeout(self, milliseconds: int | None) -> None:
        """The lab RabbitMQ's consumer_timeout for channels opened from now on (None: the
        default, 30 min); see engine.lab.openstack.broker_consumer_timeout."""
        lab_openstack.broker_consumer_timeout(self.openstack_root, milliseconds)

    def vcenter_target(self) -> VCenterTarget:
        return vcenter.target(self.vcenter_files)

    def status(self) -> list[ServiceStatus]:
        """Each service checked through its real API."""
        records = {p.name: p for p in self.processes()}
        statuses = [
            self._vcenter_status(records.get("vcsim")),
            self._postgres_status(records.get("postgres")),
        ]
        if not records:
            return [*statuses, ServiceStatus("openstack", False, "not running")]
        return statuses + openstack_health.check(
            self.openstack_root, records, lambda: self.openstack("ferry-lab-admin")
        )

    def memory(self) -> tuple[int, int]:
        """(resident bytes, process count) of everything the lab runs, workers included."""
        members = group_members(self.processes())
        return resident_bytes(members), len(members)

    def snapshot_disk(self, vm_name: str, snapshot_moref: str, key: int) -> FileDiskSource:
        """The lab side of the disk-access seam: a (VM, snapshot, disk) as nbdkit serves it.

        Production serves the same triple with nbdkit's vddk plugin (VddkDiskSource)."""
        return FileDiskSource(
            lab_disks.snapshot_path(self.disks, self.vm(vm_name), snapshot_moref, key)
        )

    def openstack(self, cloud: str = "ferry-lab") -> Any:
        """An openstacksdk connection to the lab cloud."""
        return lab_openstack.connect(self.openstack_root, cloud)

    def _vcenter_status(self, record: ProcessRecord | None) -> ServiceStatus:
        if record is None or not is_running(record):
            return ServiceStatus("vcenter", False, "not running")
        try:
            target = self.vcenter_target()
            with session(target) as si:
                vms = retrieve(si, vim.VirtualMachine, ["name"])
        except FerryError as exc:
            return ServiceStatus("vcenter", False, str(exc))
        return ServiceStatus(
            "vcenter", True, f"https://{target.host}:{target.port}/sdk, {len(vms)} VMs"
        )

    def _postgres_status(self, record: ProcessRecord | None) -> ServiceStatus:
        if record is None or not is_running(record):
            return ServiceStatus("postgres", False, "not running")
        try:
            return ServiceStatus("postgres", True, self.postgres.check())
        except LabError as exc:
            return ServiceStatus("postgres", False, str(exc))

    def env(self) -> dict[str, str]:
        """Environment variables that point a shell (or a spec) at the lab."""
        target = self.vcenter_target()
        broker_url, broker_password = lab_openstack.broker(self.openstack_root)
        return {
            "FERRY_LAB_DIR": str(self.root),
            # the agents' broker, for a spec's execution block (the password stays in its file)
            "FERRY_LAB_BROKER": broker_url,
            "FERRY_BROKER_PASSWORD_FILE": str(broker_password),
            "FERRY_VCENTER_HOST": target.host,
            "FERRY_VCENTER_PORT": str(target.port),
            "FERRY_VCENTER_USER": target.user,
            "FERRY_VCENTER_PASSWORD_FILE": str(self.vcenter_files.password),
            "FERRY_VCENTER_CAFILE": str(self.vcenter_files.cert),
            "OS_CLIENT_CONFIG_FILE": str(lab_openstack.clouds_file(self.openstack_root)),
            "OS_CLOUD": "ferry-lab",
            # shared state for `ferry --state env:FERRY_LAB_STATE_DSN` (no secret: a passfile)
            "FERRY_LAB_STATE_DSN": self.postgres.dsn(),
            # /dev/kvm here cannot boot the libguestfs appliance: virt-v2v runs under TCG
            "LIBGUESTFS_BACKEND": "direct",
            "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
        }

    def write(
        self, vm_name: str, key: int, offset: int, length: int, seed: int | None = None
    ) -> lab_disks.WriteResult:
        """A guest write to a lab VM's live disk."""
        if not self.running():
            raise UserError(f"the lab in {self.root} is not up: run `ferry lab up`")
        return lab_disks.guest_write(self.disks, self.vm(vm_name), key, offset, length, seed=seed)

    def _disk_owner(self, vm_name: str, key: int) -> str:
        """The instance UUID of the lab VM that has disk `key` (fault drills are keyed by it).
        Raises UserError when the lab is not up (no faults file to write: was a traceback)."""
        if not self.running():
            raise UserError(f"the lab in {self.root} is not up: run `ferry lab up`")
        vm = self.vm(vm_name)
        if vm.disk(key) is None:
            raise UserError(f"VM {vm_name!r} has no disk {key}")
        return vm.instance_uuid

    def expire_sessions(self) -> int:
        """A fault drill: the lab vCenter ends every session (a timeout, an administrator);
        returns how many it ended."""
        if not self.running():
            raise UserError(f"the lab in {self.root} is not up: run `ferry lab up`")
        return vcenter.expire_sessions(self.vcenter_files)

    def read_errors(self, vm_name: str, key: int, rate: str | None) -> None:
        """A fault drill: fail `rate` of a disk's reads with EIO (None: heal it)."""
        lab_faults.set_read_errors(self.root, self._disk_owner(vm_name, key), key, rate)

    def read_delay(self, vm_name: str, key: int, milliseconds: int) -> None:
        """A fault drill: every read of a disk waits `milliseconds` (a slow source host)."""
        lab_faults.set_read_delay(self.root, self._disk_owner(vm_name, key), key, milliseconds)

    def read_rate(self, vm_name: str, key: int, mib: float) -> None:
        """A lab disk's reads go at most `mib` MiB/s (an NFC stream; `read_errors(..., None)`
        clears it). Raises UserError for a rate out of range, an unknown disk, a lab not up."""
        lab_faults.check_read_rate(mib)  # the input first, then the lab
        lab_faults.set_read_rate(self.root, self._disk_owner(vm_name, key), key, mib)

    def device_full(self, vm_name: str, key: int) -> None:
        """A fault drill: writes to this disk's volume fail with ENOSPC (`read_errors(..., None)`
        clears it)."""
        lab_faults.set_device_full(self.root, self._disk_owner(vm_name, key), key)

    def device_lossy(self, vm_name: str, key: int) -> None:
        """A fault drill: writes to this disk's volume are acknowledged and lost
        (`read_errors(..., None)` clears it)."""
        lab_faults.set_device_lossy(self.root, self._disk_owner(vm_name, key), key)

    def export_datastores(self, mount: Path) -> Path:
        """The lab's datastores as an NFS mount shows them to a cold migration
        (`source.vcenter.datastore_path`): <mount>/<datastore>/<dir>/<extent> at the path the
        VM's layoutEx lists (usually <disk>-flat.vmdk), each a link to the lab disk's live file
        (so only a powered-off VM reads consistent bytes)."""
        with session(self.vcenter_target()) as si:
            found = retrieve(si, vim.VirtualMachine, ["name", "config.hardware.device", "layoutEx"])
        for obj in found:
            vm = find_vm(str(obj.props["name"]))
            if vm is None:
                continue
            for dev in obj.props.get("config.hardware.device") or []:
                if not isinstance(dev, vim.vm.device.VirtualDisk):
                    continue
                extent = layout_extent(
                    obj.props.get("layoutEx"), str(getattr(dev.backing, "fileName", ""))
                )
                datastore, rest = extent[1:].split("]", 1)
                link = mount / datastore / rest.strip()
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(lab_disks.live_path(self.disks, vm, int(dev.key)))
        return mount

    def install_guest(self, vm_name: str, key: int, image: Path) -> int:
        """Put a real guest's raw image on a lab VM's disk (journaled as guest writes)."""
        if not self.running():
            raise UserError(f"the lab in {self.root} is not up: run `ferry lab up`")
        return lab_disks.install_image(self.disks, self.vm(vm_name), key, image)

    def vm(self, name: str) -> LabVM:
        vm = find_vm(name)
        if vm is None:
            known = ", ".join(repr(v.name) for v in ESTATE)
            raise UserError(f"no lab VM named {name!r} (lab VMs: {known})")
        return vm


def status_json(statuses: list[ServiceStatus], memory: tuple[int, int]) -> dict[str, Any]:
    return {
        "up": all(s.up for s in statuses),
        "resident_bytes": memory[0],
        "processes": memory[1],
        "services": [{"name": s.name, "up": s.up, "detail": s.detail} for s in statuses],
    }
