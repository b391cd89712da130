"""The state an apply's steps share: the Context of one apply and ApplierBase, the Applier's
plan, its VMs' names, placement and state writes (engine.executor.apply assembles the Applier
from its parts: replacement, volume_steps, source_steps)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyVmomi import vim

from engine.addresses import Address
from engine.dataplane.copy import CopyStats
from engine.errors import (
    SourceChangedError,
    StateError,
    UserError,
)
from engine.executor.events import Events
from engine.executor.remote import Remote
from engine.executor.seams import Devices, Sources
from engine.model.plan import Plan
from engine.model.state import (
    INSTANCE_UUID,
    ResourceRecord,
)
from engine.providers.vsphere.read import retrieve
from engine.providers.vsphere.snapshots import DiskInfo
from engine.statestore import StateStore

if TYPE_CHECKING:
    from engine.executor.cutover import Cutover
    from engine.executor.image import DiskFiles, ImageCutover

SNAPSHOT_PREFIX = "ferry-"


class Stop(threading.Event):
    """The apply's stop (Ctrl-C, SIGTERM, a state lost for good): set, every step checkpoints
    and ends. Each VM has a stop of its own (`of`), set with this one or alone: a cutover that
    failed with its source off ends the VM's other steps at once, so that its source goes back
    on then, not after the whole walk (break-it 16e H1: 105 s, or a replica's hours)."""

    def __init__(self) -> None:
        super().__init__()
        self._vms: dict[str, threading.Event] = {}
        self._guard = threading.Lock()

    def of(self, vm: str) -> threading.Event:
        """VM `vm`'s stop: set when this one is, or by `stop_vm`."""
        with self._guard:
            event = self._vms.setdefault(vm, threading.Event())
            if self.is_set():
                event.set()
            return event

    def stop_vm(self, vm: str) -> None:
        """Stop VM `vm`'s steps only."""
        self.of(vm).set()

    def set(self) -> None:
        super().set()
        with self._guard:
            for event in self._vms.values():
                event.set()


@dataclass
class Context:
    """Everything the nodes share during one apply."""

    si: Any
    conn: Any
    store: StateStore
    sources: Sources
    devices: Devices
    conversion_host_id: str
    verify: bool = False  # every VM's copies verified (`apply --verify`); else as each VM's plan
    log_dir: Path = Path("state/logs")
    progress: Callable[[str], None] = lambda _: None
    events: Events | None = None
    log_names: dict[str, str] = field(default_factory=dict)  # VM name → its log file's name
    vm_refs: dict[str, Any] = field(default_factory=dict)  # VM name → vim.VirtualMachine
    snapshots: dict[str, tuple[Any, dict[int, DiskInfo]]] = field(default_factory=dict)
    copied: dict[str, CopyStats] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)  # data bytes each running copy read so far
    snapshot_power: dict[str, str] = field(default_factory=dict)  # VM → power state at snapshot
    # volume address → (sha256, what it covers: VERIFIED_WHOLE or VERIFIED_AREAS)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Stop = field(default_factory=Stop)  # set: copies checkpoint, end; per VM: Stop.of
    moved: bool = False  # the plan's moves are done (all in one write)
    remote: Remote | None = None  # set (execution.broker): syncs run on the host's agent
    # VM name → its source checked against the plan: None (as planned) or the difference found
    source_checked: dict[str, SourceChangedError | None] = field(default_factory=dict)
    conversion_host_name: str = ""  # the spec's conversion host (its agent's queue)
    host_ids: dict[str, str] = field(default_factory=dict)  # host name → server id (agents')
    # a step's slots given back before it ends (Walker.release: a copy whose bytes are written)
    release: Callable[[str], None] = lambda _address: None

    def say(self, vm: str, line: str) -> None:
        """Report a step: on the console and in the VM's log file (never a secret in either)."""
        self.progress(line)
        if self.events is not None:
            self.events.emit("step", vm=vm, message=line)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.lock:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / f"{self.log_names.get(vm, vm)}.log").open("a") as log:
                log.write(f"{stamp} {line}\n")


class ApplierBase:
    """The plan, its VMs and the state writes every part of the Applier uses; no step of its
    own. `cutover`, `files` and `images` are set by the Applier."""

    cutover: Cutover
    files: DiskFiles
    images: ImageCutover

    def __init__(self, plan: Plan, ctx: Context) -> None:
        self.plan = plan
        self.ctx = ctx
        self.changes = {c.address: c for c in plan.changes}
        self.uuids = {v.name: v.instance_uuid for v in plan.vms}
        self.targets = {v.name: v.target_name for v in plan.vms}
        self.verify = {v.name: v.verify for v in plan.vms}
        self.modes = {v.name: v.mode for v in plan.vms}
        self.placement = {v.name: v.conversion_host for v in plan.vms}  # the plan's hosts
        self.plan_vm = {v.name: v for v in plan.vms}
        self.placing = threading.Lock()  # one re-placement at a time: each counts the others
        self.moved_to: dict[str, str] = {}  # VM → the host it was re-placed on (its host gone)
        self.unplaced: dict[str, str] = {}  # VM → why no host can take it (its host gone)
        self.answered: tuple[float, set[str]] | None = None  # (monotonic s, agents): last ping
        self.ctx.log_names.update(self.targets)
        self.unwritten: list[str] = []  # addresses whose record the state did not take

    @functools.cached_property
    def lineage(self) -> str:
        """The state's lineage, stamped on every volume ferry creates, adopts or syncs
        (metadata ferry_state): a plan of another state finds the volume is not its own."""
        return self.ctx.store.read().lineage

    def _vm(self, name: str) -> Any:
        if not self.ctx.vm_refs:
            uuids = {u: n for n, u in self.uuids.items() if u}
            for obj in retrieve(self.ctx.si, vim.VirtualMachine, ["config.instanceUuid"]):
                uuid = obj.props.get("config.instanceUuid")
                if uuid in uuids:
                    self.ctx.vm_refs[uuids[uuid]] = obj.ref
        if name not in self.ctx.vm_refs:
            raise UserError(f"VM {name!r} ({self.uuids.get(name)}) is no longer in vCenter")
        return self.ctx.vm_refs[name]

    def _write(self, puts: list[ResourceRecord], deletes: list[str]) -> None:
        """Record in the state; what a lost state did not take is kept (`unwritten`: the
        addresses, in order) for the apply's last lines. Raises StateError."""
        try:
            self.ctx.store.write([self._owned(r) for r in puts], deletes)
        except StateError:
            for address in [r.address for r in puts] + deletes:  # (GIL: list appends are safe)
                if address not in self.unwritten:
                    self.unwritten.append(address)
            raise

    def _owned(self, record: ResourceRecord) -> ResourceRecord:
        """A VM's record carries the VM's instance UUID: state follows the VM, not its name."""
        parsed = Address.parse(record.address)
        uuid = self.uuids.get(parsed.name) if parsed.kind == "vm" else None
        if not uuid or record.attributes.get(INSTANCE_UUID) == uuid:
            return record
        return replace(record, attributes={**record.attributes, INSTANCE_UUID: uuid})
