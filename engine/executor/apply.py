"""Applying a plan's replication changes: one snapshot per VM, then each disk copied (full or
CBT delta) into its Cinder volume through the conversion host, state persisted after each step.

Correctness rules kept here (../shared/DESIGN.md §5): all disks of a VM come from one snapshot;
a volume's stored changeId (state and `ferry_change_id` metadata) advances only after its copy
completed and was flushed; a changeId that cannot be trusted means a full copy, never a skip.
Cutover changes (ports, flavor, conversion, server) are applied by executor.cutover.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from pyVmomi import vim

from engine.addresses import Address
from engine.dataplane.cbt import Extent, total_bytes
from engine.dataplane.copy import CopyStats
from engine.errors import (
    AgentError,
    ChangeTrackingError,
    FerryError,
    OpenStackError,
    SourceChangedError,
    StateError,
    StoppedError,
    UserError,
    VerifyError,
    one_line,
)
from engine.executor import host
from engine.executor.cutover import Cutover
from engine.executor.cutover_base import content_epoch
from engine.executor.events import Events
from engine.executor.host import SyncJob, source_of
from engine.executor.image import DiskFiles, ImageCutover
from engine.executor.moved import moved_records
from engine.executor.remote import OnHost, Remote
from engine.executor.seams import Devices, LabSources, Sources
from engine.executor.settle import brief, left_off_line
from engine.executor.source import nic_differences, planned_nics
from engine.model.observed import SYNC_SNAPSHOT_DESCRIPTION, SourceNic, epoch, ferry_made
from engine.model.plan import Action, Change, Plan
from engine.model.state import (
    INSTANCE_UUID,
    RECORDED_HOST,
    VERIFIED_AREAS,
    VERIFIED_WHOLE,
    ResourceRecord,
    Status,
)
from engine.planner.diff.attachments import STALE_KEY, repair_only
from engine.planner.placement import (
    Candidate,
    Demand,
    Host,
    Replacement,
    copied,
    placed_bytes,
    replace_vm,
)
from engine.providers.openstack import volumes
from engine.providers.openstack.read import STATE_KEY
from engine.providers.vsphere.inventory import parse_nic
from engine.providers.vsphere.read import changed_areas, fetch_property, retrieve
from engine.providers.vsphere.snapshots import (
    DiskInfo,
    create_snapshot,
    enable_cbt,
    parse_disks,
    remove_snapshot,
    snapshot_disks,
)
from engine.statestore import StateStore
from engine.units import GiB, duration, exact, human, rate

SUPPORTED = {
    ("moved", Action.MOVE),
    ("source_cbt", Action.CREATE),
    ("source_snapshot", Action.CREATE),
    ("source_snapshot", Action.DELETE),
    *(
        (kind, action)
        for kind in (
            "volume",
            "disk_file",
            "image",
            "image_volume",
            "port",
            "flavor",
            "network",
            "conversion_host",
            "conversion",
            "server",
        )
        for action in Action
        if action is not Action.NOOP
    ),
}
SNAPSHOT_PREFIX = "ferry-"
# a cutover's steps that check the source first (the first one of each VM does): ports come
# before the snapshot that powers the source off, a server boots with the plan's ports
CHECKED_FIRST = ("port", "conversion", "server")
ANSWERS_KEPT = 30.0  # seconds a ping's answer stands for the next re-placements (Applier)


@dataclass(frozen=True)
class ToCopy:
    """What one disk's sync copies: full | delta, the areas (None: the whole disk) from
    `start_at`, whether the volume reads as zeros there, the areas to rewrite first (a resumed
    copy: what changed since the snapshot it began from, changeId `began`), and why, when the
    executor copies other than the plan said (shown in the VM's log)."""

    kind: str
    areas: list[Extent] | None
    start_at: int
    dst_is_zero: bool
    rewrite: list[Extent] = field(default_factory=list)
    began: str | None = None
    why: str = ""
    data: list[Extent] | None = None  # where the disk holds data (a reader without block status)


def unsupported(plan: Plan) -> list[Change]:
    """Changes this executor has no handler for (a plan from a newer ferry)."""
    return [
        c
        for c in plan.changes
        if c.action is not Action.NOOP and (c.kind, c.action) not in SUPPORTED
    ]


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
    snapshot_power: dict[str, str] = field(default_factory=dict)  # VM → power state at snapshot
    # volume address → (sha256, what it covers: VERIFIED_WHOLE or VERIFIED_AREAS)
    digests: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)  # set: copies checkpoint, end
    moved: bool = False  # the plan's moves are done (all in one write)
    remote: Remote | None = None  # set (execution.broker): syncs run on the host's agent
    # VM name → its source checked against the plan: None (as planned) or the difference found
    source_checked: dict[str, SourceChangedError | None] = field(default_factory=dict)
    conversion_host_name: str = ""  # the spec's conversion host (its agent's queue)
    host_ids: dict[str, str] = field(default_factory=dict)  # host name → server id (agents')

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


class Applier:
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
        self.cutover = Cutover(self)
        self.files = DiskFiles(self)
        self.images = ImageCutover(self)

    @functools.cached_property
    def lineage(self) -> str:
        """The state's lineage, stamped on every volume ferry creates, adopts or syncs
        (metadata ferry_state): a plan of another state finds the volume is not its own."""
        return self.ctx.store.read().lineage

    # -- the walker's node function -----------------------------------------------------------

    def run(self, address: Hashable) -> None:
        change = self.changes[str(address)]
        handler = {
            "moved": self._move,
            "source_cbt": self._enable_cbt,
            "source_snapshot": self._snapshot_step,
            "volume": self._volume,
            "disk_file": self.files.sync,
            "image": self.images.image,
            "image_volume": self.images.volume,
            "port": self.cutover.port,
            "flavor": self.cutover.flavor,
            "network": self.cutover.network,
            "conversion_host": self.cutover.conversion_host,
            "conversion": self._conversion,
            "server": self.cutover.server,
        }[change.kind]
        if change.kind in CHECKED_FIRST and change.action not in (Action.DELETE, Action.FORGET):
            self._check_source_once(Address.parse(change.address).name)
        handler(change)

    def _conversion(self, change: Change) -> None:
        """An image VM's files are converted on this machine; volumes on the conversion host."""
        if (change.after or change.before or {}).get("output") == "image":
            self.images.conversion(change)
        else:
            self.cutover.conversion(change)

    def _move(self, change: Change) -> None:
        """Every move of the plan at once, in one state write (the first move node does it)."""
        with self.ctx.lock:
            if self.ctx.moved:
                return
            resources = self.ctx.store.read().resources
            puts, deletes = moved_records(self.plan.changes, resources)
            self.ctx.store.write(puts, deletes)
            self.ctx.moved = True
        for move in (c for c in self.plan.changes if c.action is Action.MOVE):
            name = Address.parse(move.address).name
            self.ctx.say(name, f"{(move.before or {}).get('address')} moved to {move.address}")

    def unsettled(self) -> tuple[list[str], list[str]]:
        """What a kill now would leave as it is, one line each: the sources this apply's
        cutover powered off and has not put back ('vm.web01: source powered off by ferry at
        …, no server yet'), and the snapshots this apply took and has not removed. Read
        without locks: the signal handler calls it."""
        off = [left_off_line(n, since) for n, since in list(self.cutover.powered_off.items())]
        snapshots = [
            f"{Address('vm', n)}: ferry's snapshot {s._moId} left on the source"
            for n, (s, _) in list(self.ctx.snapshots.items())
        ]
        return off, snapshots

    def cleanup(self) -> None:
        """Remove the snapshots this apply took (also after failures) and their records; a
        record the state cannot take now is said (the next apply removes it: the snapshot is
        gone)."""
        for vm_name, (snapshot, _) in list(self.ctx.snapshots.items()):
            remove_snapshot(self.ctx.si, snapshot)
            del self.ctx.snapshots[vm_name]
            try:
                self._write([], [str(Address("vm", vm_name, "snapshot"))])
            except StateError as exc:
                self.ctx.say(
                    vm_name,
                    f"{Address('vm', vm_name)}: snapshot {snapshot._moId} removed; state not "
                    f"written: {brief(exc)}",
                )

    # -- snapshots ----------------------------------------------------------------------------

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

    def hosts(self) -> dict[str, str]:
        """VM name → the ESXi host (moref) it runs on, for per-host read limits."""
        names = {self._vm(name)._moId: name for name in self.uuids if self.uuids[name]}
        return {
            names[o.ref._moId]: o.props["runtime.host"]._moId
            for o in retrieve(self.ctx.si, vim.VirtualMachine, ["runtime.host"])
            if o.ref._moId in names and "runtime.host" in o.props
        }

    def _enable_cbt(self, change: Change) -> None:
        name = Address.parse(change.address).name
        enable_cbt(self.ctx.si, self._vm(name), f"{SNAPSHOT_PREFIX}cbt-{self.targets[name]}")
        self.ctx.say(name, f"{Address('vm', name)}: changed block tracking enabled")

    def _snapshot(self, change: Change) -> None:
        """The VM's snapshot (a cutover's after its source's power-off). First its disks' host:
        a VM whose host is gone and that no host can take fails here, once, with the line
        naming each host's reason, before its source is touched (no snapshot, no power-off,
        no volume); its disks are then skipped after this step, not failed one by one with
        the same line (a wave of 1,000 VMs whose host went shows one line per VM)."""
        name = Address.parse(change.address).name
        self.host_for(name)  # raises AgentError: the VM cannot be re-placed
        vm = self._vm(name)
        self._remove_leftovers(name, vm)
        self._check_own_snapshots(name, vm)
        self._check_source(name, fetch_property(self.ctx.si, vm, "config.hardware.device"))
        with self.ctx.lock:
            self.ctx.source_checked[name] = None
        power = (change.after or {}).get("power_off")
        if power is not None:  # cutover: the source goes off before its final snapshot
            left = "nothing was powered off, the source is left as it was"
            self.cutover.go_ahead(name, "the power-off", left)  # and again right before it
            self.ready_volumes(name)  # nothing after the power-off may wait on a stuck volume
            self.cutover.ready_destination(name)  # nor fail on a port or flavor gone since
            self.cutover.power_off_source(name, vm, power)
        snapshot = create_snapshot(
            self.ctx.si,
            vm,
            f"{SNAPSHOT_PREFIX}{self.targets[name]}",
            SYNC_SNAPSHOT_DESCRIPTION,
        )
        disks = {d.key: d for d in snapshot_disks(self.ctx.si, snapshot)}
        trees = _walk_snapshots(fetch_property(self.ctx.si, vm, "snapshot"))
        taken = next((t for t in trees if t.snapshot._moId == snapshot._moId), None)
        with self.ctx.lock:
            self.ctx.snapshots[name] = (snapshot, disks)
            self.ctx.snapshot_power[name] = str(taken.state) if taken else "unknown"
        self._write(
            [
                ResourceRecord(
                    change.address, "source_snapshot", Status.IN_PROGRESS, {"moref": snapshot._moId}
                )
            ],
            [],
        )
        self.ctx.say(name, f"{Address('vm', name)}: snapshot {snapshot._moId} taken")
        self._check_disks(name, list(disks.values()))  # what changed in between (removed after)

    def _check_own_snapshots(self, name: str, vm: Any) -> None:
        """A reader of the base extent (https; datastore_path on a real datastore) reads the
        VM's disk at ferry's snapshot only when that snapshot is the VM's only one: a snapshot
        someone took since the plan (a backup job, between `plan --out` and apply) freezes the
        base extent older than the disk, and the copy would record ferry's changeId over older
        bytes (break-it 12c item 10: 2 MiB lost, then "No changes"). Checked before the power-
        off and the snapshot. Raises SourceChangedError naming the snapshots."""
        reader = next((v.reader for v in self.plan.vms if v.name == name), "")
        lab_files = isinstance(self.ctx.sources, LabSources)  # each snapshot's own copy
        if reader != "https" and (reader != "datastore_path" or lab_files):
            return
        other = [
            str(t.name)
            for t in _walk_snapshots(fetch_property(self.ctx.si, vm, "snapshot"))
            if not ferry_made(str(t.name), str(t.description or ""))
        ]
        if other:
            raise SourceChangedError(
                f"{Address('vm', name)}: has snapshot(s) {', '.join(other)} now: the {reader} "
                "reader reads the base disk, older than the VM's current state; consolidate "
                "(delete) them, or read this VM with source.reader: vddk, then run `ferry plan` "
                "again"
            )

    def _check_source_once(self, name: str) -> None:
        """The VM's disks and NICs checked against the plan before its first cutover step
        (ports are made before the snapshot that powers the source off: a stale plan must stop
        before them too). Read once per VM and apply (a difference stops each of its later
        steps too); the snapshot step always checks (again).

        Raises SourceChangedError."""
        with self.ctx.lock:
            if name in self.ctx.source_checked:
                found = self.ctx.source_checked[name]
                if found is not None:  # every later step of the VM stops on it too
                    raise found
                return
            vm = self._vm(name)
            try:
                self._check_source(name, fetch_property(self.ctx.si, vm, "config.hardware.device"))
            except SourceChangedError as exc:
                self.ctx.source_checked[name] = exc
                raise
            self.ctx.source_checked[name] = None

    def _check_source(self, name: str, devices: Any) -> None:
        """`devices` (config.hardware.device, re-read now) hold the disks and, when this plan
        cuts the VM over, the NICs the plan was made for.

        Raises SourceChangedError naming each difference."""
        devices = list(devices or [])
        self._check_disks(name, parse_disks(devices))
        self._check_nics(
            name,
            [
                parse_nic(d, {}, {})
                for d in devices
                if isinstance(d, vim.vm.device.VirtualEthernetCard)
            ],
        )

    def _check_nics(self, name: str, nics: list[SourceNic]) -> None:
        """The VM's NICs are those its ports were planned from (a cutover only: same MACs, same
        portgroups). Raises SourceChangedError naming each difference."""
        planned = planned_nics(self.plan, name)
        problems = nic_differences(planned, nics) if planned is not None else []
        if problems:
            raise SourceChangedError(
                f"{Address('vm', name)}: the source VM changed since this plan was made "
                f"({'; '.join(problems)}): run `ferry plan` again"
            )

    def _check_disks(self, name: str, disks: list[DiskInfo]) -> None:
        """The VM's disks are those the plan was made for: the same keys, each of the bytes the
        plan saw (its changes' `capacity`; a plan of an older ferry: none larger than its planned
        volume). A saved plan is applied after the source may have changed: a disk added or
        grown since would be left out or cut short, a cutover booted without it, and a delta
        planned for a disk grown since, even within its volume's GiB, would trust CBT across the
        extend (break-it 12d item 6).

        Raises SourceChangedError naming each difference."""
        planned: dict[int, Any] = {}
        seen: dict[int, Any] = {}  # bytes of each disk when the plan was made
        for c in self.plan.changes:
            parsed = Address.parse(c.address)
            if c.kind not in ("volume", "disk_file") or parsed.name != name or parsed.index is None:
                continue
            if c.action not in (Action.DELETE, Action.FORGET):
                planned[parsed.index] = (c.after or c.before or {}).get("size_gib")
                seen[parsed.index] = (c.after or c.before or {}).get("capacity")
        found = {d.key: d.capacity for d in disks}
        problems = [f"disk {k} was removed" for k in sorted(set(planned) - set(found))]
        targets = [Address.parse(t) for t in self.plan.targets]
        whole = not targets or Address("vm", name) in targets  # a --target of one disk: not all
        for key, capacity in sorted(found.items()):
            size = planned.get(key)
            if key not in planned:
                if whole:
                    problems.append(f"disk {key} was added")
            elif isinstance(seen.get(key), int) and capacity != seen[key]:
                problems.append(  # to the byte: a grow within its volume's GiB is one too
                    f"disk {key} is {exact(capacity)}, {exact(seen[key])} when the plan was made"
                )
            elif isinstance(size, int) and capacity > size * GiB:  # a plan of an older ferry
                problems.append(
                    f"disk {key} is {capacity / GiB:g} GiB, the plan's volume {size} GiB"
                )
        if problems:
            raise SourceChangedError(
                f"{Address('vm', name)}: the source VM changed since this plan was made "
                f"({'; '.join(problems)}): run `ferry plan` again"
            )

    def _remove_leftovers(self, name: str, vm: Any, only: set[str] | None = None) -> int:
        """Remove the snapshots a killed apply left behind: ferry's own (name and description,
        `ferry_made`; never anyone else's), those whose moref is in `only` when given.
        Returns how many were removed."""
        removed = 0
        for tree in _walk_snapshots(fetch_property(self.ctx.si, vm, "snapshot")):
            moref = str(tree.snapshot._moId)
            if not ferry_made(str(tree.name), str(tree.description or "")):
                continue
            if only is not None and moref not in only:
                continue
            remove_snapshot(self.ctx.si, tree.snapshot)
            removed += 1
            self.ctx.say(
                name,
                f"{Address('vm', name)}: removed snapshot {moref} ({tree.name}), "
                "left by an interrupted apply",
            )
        return removed

    def _snapshot_step(self, change: Change) -> None:
        if change.action is Action.DELETE:
            self._remove_left(change)
        else:
            self._snapshot(change)

    def _remove_left(self, change: Change) -> None:
        """`vm.X.snapshot delete`: the planned leftover snapshots (change.before: `snapshots`
        [{moref, name}] seen at plan time and the recorded `moref`) that are still ferry's are
        removed from the VM (found by name, else by its recorded instance UUID; a VM gone from
        vCenter took them with it), then the record."""
        name = Address.parse(change.address).name
        before = change.before or {}
        planned = {str(s["moref"]) for s in before.get("snapshots") or []}
        planned |= {str(before["moref"])} if before.get("moref") else set()
        vm = self._source_vm(name, str(before.get(INSTANCE_UUID) or "") or None)
        removed = self._remove_leftovers(name, vm, planned) if vm is not None else 0
        if not removed:
            where = "the VM is no longer in vCenter" if vm is None else "already gone"
            self.ctx.say(name, f"{change.address}: snapshot(s) {where}: the record goes")
        self._write([], [change.address])

    def _source_vm(self, name: str, uuid: str | None) -> Any | None:
        """The VM of a plan entry (`name`), else the one with instance UUID `uuid` (a VM the
        spec dropped); None when vCenter has neither."""
        if self.uuids.get(name):
            with suppress(UserError):
                return self._vm(name)
            return None
        if not uuid:
            return None
        found = retrieve(self.ctx.si, vim.VirtualMachine, ["config.instanceUuid"])
        return next(
            (
                o.ref
                for o in found
                if str(o.props.get("config.instanceUuid", "")).lower() == uuid.lower()
            ),
            None,
        )

    # -- volumes --------------------------------------------------------------------------------

    def _volume(self, change: Change) -> None:
        address = Address.parse(change.address)
        record = self.ctx.store.read().resources.get(change.address)
        before = dict(record.attributes) if record else dict(change.before or {})
        self._repair_attachments(change)
        if repair_only(change):  # nothing to copy: the record stays as it was
            return
        if change.action is Action.READ:
            self._adopt(change, address)
            return
        if change.action in (Action.DELETE, Action.FORGET):
            if change.action is Action.DELETE and before.get("volume_id"):
                self.check_owned(change.address, str(before["volume_id"]), "deleted")
                self._delete_volume(str(before["volume_id"]))
            self._write([], [change.address])
            return
        if before.get("volume_id"):
            self.check_owned(change.address, str(before["volume_id"]), "written")
        snapshot, disks = self.ctx.snapshots[address.name]
        disk = disks[address.index or 0]
        if change.action is Action.VERIFY:
            self._compare(change, address, before, snapshot, disk)
            return
        self._sync(change, address, before, snapshot, disk)

    def _volume_id(self, change: Change) -> str:
        """The volume a volume change writes: its record's, else the plan's (adopt: found)."""
        record = self.ctx.store.read().resources.get(change.address)
        found = dict(record.attributes) if record else {}
        return str(
            found.get("volume_id")
            or (change.before or {}).get("volume_id")
            or (change.after or {}).get("volume_id")
            or ""
        )

    def check_owned(self, address: str, volume_id: str, doing: str) -> None:
        """Right before a step deletes or writes a volume this state records (`doing`:
        "deleted", "written"): its `ferry_state` must still name this state (or nothing). A
        volume another ferry state took over since the plan was made (--adopt-lineage, or by
        hand) is that state's replica: a saved destroy deleted it, a saved delta wrote it and
        stamped it back (break-it 12e item 3). Raises OpenStackError; nothing is done to it."""
        other = volumes.managed_by(self.ctx.conn, volume_id)
        if other and self.lineage and other != self.lineage:
            raise OpenStackError(
                f"{handed_line(address, volume_id, other, doing)}; plan again (a new plan "
                "never deletes or writes it)"
            )

    def _repair_attachments(self, change: Change) -> None:
        """Delete the stale Cinder attachments of ferry's the plan found on the change's volume
        (a failed attach left them `reserved`: the volume cannot be attached again). Idempotent:
        one gone or completed since is left alone."""
        ids = [str(i) for i in (change.after or {}).get(STALE_KEY) or ()]
        volume_id = self._volume_id(change)
        if not ids or not volume_id:
            return
        name = Address.parse(change.address).name
        for att_id in volumes.delete_attachments(self.ctx.conn, volume_id, ids):
            self.ctx.say(
                name,
                f"{change.address}: attachment {att_id} of volume {volume_id} (left by an "
                "interrupted apply) deleted",
            )

    def ready_volumes(self, name: str) -> None:
        """Before a cutover powers `name`'s source off: the planned repairs of its volumes'
        stale attachments are done, and every volume its final sync writes can be attached to
        the conversion host (volumes.check_attachments), so nothing after the power-off waits
        on a volume that will not move by itself. Raises OpenStackError (the source stays on)."""
        hosts = {self.ctx.conversion_host_id, *self.ctx.host_ids.values()} - {""}
        for change in self.plan.changes:
            parsed = Address.parse(change.address)
            if change.kind != "volume" or parsed.name != name:
                continue
            if change.action in (Action.DELETE, Action.FORGET, Action.NOOP):
                continue
            self._repair_attachments(change)
            volume_id = self._volume_id(change)
            if volume_id and change.action is not Action.READ:
                try:
                    self.check_owned(change.address, volume_id, "written")
                except OpenStackError as exc:
                    raise OpenStackError(f"{exc}; the source was not powered off") from exc
            if volume_id and volumes.exists(self.ctx.conn, volume_id):
                try:
                    volumes.check_attachments(self.ctx.conn, volume_id, hosts)
                except OpenStackError as exc:
                    raise OpenStackError(
                        f"{change.address}: {exc}; the source was not powered off"
                    ) from exc

    def _compare(
        self,
        change: Change,
        address: Address,
        before: dict[str, Any],
        snapshot: Any,
        disk: DiskInfo,
    ) -> None:
        """A verify step (--verify): the volume compared whole with this snapshot, nothing
        copied. A changeId that moved since the plan (the VM was written or ran) means the
        replica is behind that snapshot: its delta is copied first (verified whole, as every copy
        under --verify). A mismatch marks the volume tainted (the next plan replaces it).

        Raises VerifyError (they differ), DataplaneError, StoppedError."""
        stored = before.get("change_id")
        if not stored or disk.change_id != stored:
            self.ctx.say(
                address.name,
                f"{change.address}: changeId {stored} → {disk.change_id} since the plan: its "
                "delta is copied first, then the whole disk compared",
            )
            self._sync(replace(change, action=Action.UPDATE), address, before, snapshot, disk)
            return
        vm = self._vm(address.name)
        host_name, host_id = self.host_for(address.name)  # the host its syncs write on
        source = source_of(vm._moId, self.uuids[address.name] or "", snapshot._moId, disk)
        data = self.data_areas(VERIFIED_WHOLE, vm, snapshot, disk)
        job = host.compare_job(str(before["volume_id"]), host_id, source, data)
        try:
            result = self.on_host().compare(host_name, job, self.ctx.stop, self._say(address))
        except VerifyError as exc:
            self._taint(change.address, before, exc, job.volume_id)
        self.compared(change.address, before, job, result, f"volume {job.volume_id}")

    def compared(
        self,
        address: str,
        before: dict[str, Any],
        job: SyncJob,
        result: host.SyncResult,
        target: str,
    ) -> None:
        """A compare that found the copy equal (a volume, or image mode's file: `target` says
        which, for people): its digest kept for the report, its record READY with
        `last_verify`, the `verified` event and the line."""
        assert result.sha256 is not None
        with self.ctx.lock:
            self.ctx.digests[address] = (result.sha256, VERIFIED_WHOLE)
        checked = host.last_verify(job.source.get("change_id"), result)
        kind = self.changes[address].kind
        record = ResourceRecord(address, kind, Status.READY, {**before, "last_verify": checked})
        self._write([record], [])
        name = Address.parse(address).name
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "verified",
                address=address,
                vm=name,
                sha256=result.sha256,
                volume_id=job.volume_id,
                seconds=round(result.seconds, 3),
            )
        self.ctx.say(name, host.compared_line(address, target, job, result))

    def _taint(
        self, address: str, attrs: dict[str, Any], exc: VerifyError, volume_id: str
    ) -> NoReturn:
        """A copy or compare that failed verification: the volume recorded tainted with why (the
        next plan replaces it: a full copy); the error says so. Its metadata stops naming a
        changeId too: a state rebuilt from the destination would adopt it as in sync."""
        tainted = {**attrs, "tainted": f"verification failed: {exc}"}
        self._write([ResourceRecord(address, "volume", Status.TAINTED, tainted)], [])
        volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_change_id": ""})
        raise VerifyError(f"{exc}; marked tainted: the next plan copies it again") from exc

    def _adopt(self, change: Change, address: Address) -> None:
        """Take over a volume found by metadata (ferry's, or os-migrate's by name): stamp ferry's
        keys on it so it is found by identity from now on; the next sync is a delta from its
        changeId (or a full copy when it has none)."""
        after = dict(change.after or {})
        metadata = {
            "ferry_vm": self.uuids[address.name] or "",
            "ferry_disk": str(address.index),
            "ferry_converted": "false",
            STATE_KEY: self.lineage,
        }
        if after.get("change_id"):
            metadata["ferry_change_id"] = str(after["change_id"])
        volumes.set_metadata(self.ctx.conn, str(after["volume_id"]), metadata)
        self._write([ResourceRecord(change.address, "volume", Status.READY, after)], [])
        self.ctx.say(address.name, f"{change.address}: adopted volume {after['volume_id']}")

    def _delete_volume(self, volume_id: str, status: str = "available") -> None:
        if volumes.exists(self.ctx.conn, volume_id):
            if status == "available":
                volumes.wait_volume(self.ctx.conn, volume_id, "available")
            self.ctx.conn.block_storage.delete_volume(volume_id)

    def _sync(
        self,
        change: Change,
        address: Address,
        before: dict[str, Any],
        snapshot: Any,
        disk: DiskInfo,
    ) -> None:
        began = time.monotonic()  # the step's wall time: volume, attach, copy, verify, detach
        vm = self._vm(address.name)
        volume_id = self._ensure_volume(change, address, before)
        recorded = str(before.get("volume_id") or "")
        replaced = bool(recorded) and volume_id != recorded
        if replaced:  # gone or in error: nothing of it is on the new one
            self.ctx.say(
                address.name,
                f"{change.address}: volume {recorded} was replaced by a new volume {volume_id}: "
                "full copy from 0 (no delta or resume onto it)",
            )
        known = {} if replaced else before  # what the volume holds, as recorded
        what = self._allocated(
            self._what_to_copy(change, known, vm, snapshot, disk), vm, snapshot, disk
        )
        if what.why:
            self.ctx.say(address.name, f"{change.address}: {what.why}")
        self._extend(change, address, volume_id)
        self.cutover.release_protection(address.name, volume_id)
        if what.dst_is_zero and volumes.encrypted(self.ctx.conn, volume_id):
            what = replace(what, dst_is_zero=False)
            self.ctx.say(
                address.name,
                f"{change.address}: volume {volume_id} is encrypted: not assumed to read as "
                "zeros, holes written as zeros",
            )
        attrs = {**before, "volume_id": volume_id, "copy": what.kind, "copied_bytes": what.start_at}
        attrs[RECORDED_HOST] = self.host_for(address.name)[0]  # where a resume finds it attached
        attrs.pop("tainted", None)  # a replace starts afresh: the old failure is not its state
        if what.kind == "full":  # what a resume needs: which snapshot the bytes written are from
            attrs["copy_change_id"] = what.began if what.rewrite else disk.change_id
            attrs["copy_capacity"] = disk.capacity  # a resume after the disk grew starts over
            attrs["dst_is_zero"] = what.dst_is_zero
        self._write([ResourceRecord(change.address, "volume", Status.IN_PROGRESS, attrs)], [])
        if what.kind == "full" and recorded and volume_id == recorded:
            # its old changeId stops being true with the first byte written: a state rebuilt
            # from the destination must not adopt a half-copied volume as in sync at it
            volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_change_id": ""})
        if what.kind == "full" and not what.dst_is_zero:
            self.ctx.say(
                address.name,
                f"{change.address}: volume {volume_id} not assumed to read as zeros: "
                "holes and zero runs written as zeros",
            )
        host_name, host_id = self.host_for(address.name)
        self._release_elsewhere(change.address, before, volume_id, host_name)
        job = SyncJob(
            volume_id=volume_id,
            host_id=host_id,
            source=source_of(vm._moId, self.uuids[address.name] or "", snapshot._moId, disk),
            areas=what.areas,
            start_at=what.start_at,
            dst_is_zero=what.dst_is_zero,
            verify=self._verify_scope(address.name, what.kind),
            rewrite=what.rewrite,
        )
        job = replace(job, data=self.job_data(what, job.verify, (vm, snapshot, disk)))
        try:
            calls = self._callbacks(change.address, attrs, disk)
            result = self._run_sync(job, change.address, calls, host_name)
        except VerifyError as exc:
            self._taint(change.address, attrs, exc, volume_id)
        except StoppedError as exc:
            self.copy_stopped(change.address, attrs, exc)
            raise
        self.ctx.say(address.name, f"{change.address}: read from {result.source}")
        with self.ctx.lock:
            self.ctx.copied[change.address] = result.stats()
            if result.sha256 is not None and result.verified is not None:
                self.ctx.digests[change.address] = (result.sha256, result.verified)
        step = time.monotonic() - began
        self._synced(change, attrs, disk, kind=what.kind, stats=result.stats(), step=step)

    def copy_stopped(self, address: str, attrs: dict[str, Any], error: StoppedError) -> None:
        """A copy stopped (Ctrl-C): what it read and wrote until then counts in the apply's
        totals (summary line, apply_end), as a `copy_stopped` event {address, read, written,
        zeroed, skipped, checkpoint (bytes: where the next apply resumes)} and a line in the
        VM's log; the record keeps its checkpoint (`copied_bytes`)."""
        stats = CopyStats.of_stop(error)
        with self.ctx.lock:
            self.ctx.copied[address] = stats
        mark = int(attrs.get("copied_bytes") or 0)
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "copy_stopped",
                address=address,
                read=stats.bytes_read,
                written=stats.bytes_written,
                zeroed=stats.bytes_zeroed,
                skipped=stats.bytes_skipped,
                checkpoint=mark,
            )
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: stopped: {human(stats.bytes_read)} read, {human(stats.bytes_written)} "
            f"written, {human(stats.bytes_zeroed)} zeroed; checkpoint at {human(mark)}",
        )

    def host_for(self, vm: str) -> tuple[str, str]:
        """(name, server id) of the conversion host that writes `vm`'s volumes: the plan's
        placement when syncs run on the hosts' agents (execution.broker) and that host's server
        is known; else (no broker, or no placement) the host this apply writes on (the spec's
        first). A placed host whose server is gone, the first one too (deleted since the plan;
        any host the plan boots is up before the VM's steps), re-places the VM once by the
        plan's rules among the hosts whose agent answers (`re_place`). Raises AgentError when
        no host can take it."""
        name = self.placement.get(vm, "")
        if self.ctx.remote is not None and name in self.ctx.host_ids:
            return name, self.ctx.host_ids[name]
        first = self.ctx.conversion_host_name
        if self.ctx.remote is None or not name:
            return first, self.ctx.conversion_host_id
        moved = self.re_place(vm, name)
        if moved is None:
            raise AgentError(self.unplaced[vm])
        return moved, self.ctx.host_ids[moved]

    def to_place(self, vm: str) -> Callable[[], object] | None:
        """The re-placement `vm`'s host-bound steps wait on before their host (their slot pool)
        is known, or None when it is known without asking (as placed, decided already, or no
        broker). It asks the agents (a broker ping: remote.ASK_TIMEOUT seconds), so the walker
        runs it off its scheduling thread (Walker's `prepare`): other VMs' steps go on. Read
        without `placing`: a stale answer asks for a re-placement decided since, which returns
        the decision."""
        name = self.placement.get(vm, "")
        if self.ctx.remote is None or not name or name in self.ctx.host_ids:
            return None
        if vm in self.unplaced:
            return None
        return lambda: self.re_place(vm, name)

    def re_place(self, vm: str, gone: str) -> str | None:
        """The host `vm` goes to instead of `gone` (its server gone), decided once per apply:
        placement.replace_vm over the plan's hosts (zones, slots, the bytes placed on each, this
        apply's earlier moves counted), the volumes attached to each server now and the agents
        answering the broker's ping. Said once: in the VM's log, on the console and as a
        `replaced` event. None: no host can take it (the line in `unplaced`)."""
        with self.placing:
            if vm in self.moved_to or vm in self.unplaced:
                return self.moved_to.get(vm)
            placed = self.plan_vm[vm]
            demand = Demand(
                vm,
                copied(vm, self.plan.changes),
                placed.availability_zone or None,
                gone if placed.pinned else None,
                None,
            )
            disks = sum(
                1
                for c in self.plan.changes
                if c.kind == "volume" and Address.parse(c.address).name == vm
            )
            try:
                chosen = replace_vm(demand, disks, gone, self._candidates(gone))
            except FerryError as exc:
                why = f"{gone}, where the plan placed it, is gone, and the hosts could not be asked"
                chosen = Replacement(None, f"{why}: {one_line(str(exc))}")
            if chosen.host is None:
                line = f"{Address('vm', vm)}: not re-placed: {chosen.why}"
                self.unplaced[vm] = line
            else:
                self.moved_to[vm] = chosen.host
                self.placement[vm] = chosen.host
                line = (
                    f"{Address('vm', vm)}: re-placed from conversion host {gone} to "
                    f"{chosen.host}: {chosen.why}"
                )
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "replaced", vm=vm, placed=gone, host=chosen.host, reason=chosen.why
            )
        self.ctx.say(vm, line)
        return chosen.host

    def _candidates(self, gone: str) -> list[Candidate]:
        """The plan's conversion hosts as re-placement sees them now: bytes placed on each (the
        plan's placement, moves included), volumes attached to each server, agents answering
        (`_answering`). Raises AgentError (broker) or OpenStackError (cloud) when they cannot
        be asked."""
        answering = self._answering()
        load = placed_bytes(self.placement, self.plan.changes)
        out = []
        for h in self.plan.hosts:
            if h.name == gone:
                continue
            server = self.ctx.host_ids.get(h.name, "")
            answers = h.name in answering
            attached = volumes.attached_count(self.ctx.conn, server) if server and answers else 0
            host = Host(h.name, h.availability_zone, h.slots)
            out.append(Candidate(host, load.get(h.name, 0), attached, bool(server), answers))
        return out

    def _answering(self) -> set[str]:
        """The hosts whose agent answers the broker's ping, asked again only ANSWERS_KEPT
        seconds after the last answer: the many VMs of a gone host are re-placed on one ping,
        not on one each (seconds apiece, one at a time). Called under `placing`."""
        assert self.ctx.remote is not None
        now = time.monotonic()
        if self.answered is None or now - self.answered[0] > ANSWERS_KEPT:
            self.answered = (now, self.ctx.remote.answering())
        return self.answered[1]

    def host_of(self, change: Change) -> str:
        """The conversion host a change runs on: a copy's, compare's (volume) or conversion's
        its VM's ("" when no host can take it: its step fails); "" for the coordinator's
        steps."""
        if change.kind in ("volume", "conversion"):
            try:
                return self.host_for(Address.parse(change.address).name)[0]
            except AgentError:
                return ""
        return ""

    def _release_elsewhere(
        self, address: str, before: dict[str, Any], volume_id: str, host_name: str
    ) -> None:
        """A copy the plan re-placed (its record names another conversion host: one gone from
        the spec, or a pin moved it): its volume is detached from that host's server first, where
        a killed copy left it attached (Cinder attaches it to one server at a time). Only that
        server's attachment is touched."""
        old = str(before.get(RECORDED_HOST) or "")
        if not old or old == host_name:
            return
        server = self.ctx.conn.compute.find_server(old, ignore_missing=True)
        if server is None or str(server.id) not in volumes.attached_servers(
            self.ctx.conn, volume_id
        ):
            return
        volumes.detach(self.ctx.conn, str(server.id), volume_id)
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: volume {volume_id} detached from conversion host {old} (its copy was "
            f"in progress there), to be written on {host_name}",
        )

    def slot_pool(self, vm: str) -> str:
        """The walker's pool of copy slots `vm`'s disk copies take: its host's (the placed
        one's when no host can take it: its step fails at once)."""
        try:
            name = self.host_for(vm)[0]
        except AgentError:
            name = self.placement.get(vm, "")
        return "conversion" if name == self.ctx.conversion_host_name else f"conversion:{name}"

    def _run_sync(
        self, job: SyncJob, address: str, calls: host.Callbacks, host_name: str
    ) -> host.SyncResult:
        """In this process, or on `host_name`'s agent (its queue) when a broker is configured."""
        return self.on_host().sync(host_name, job, calls, self._say(Address.parse(address)))

    def on_host(self) -> OnHost:
        """Where host-bound steps run: here, or on the hosts' agents (execution.broker)."""
        return OnHost(host.Host(self.ctx.conn, self.ctx.sources, self.ctx.devices), self.ctx.remote)

    def _say(self, address: Address) -> Callable[[str], None]:
        """A line about `address` in its VM's log (an agent's: taken, started)."""
        return lambda line: self.ctx.say(address.name, f"{address}: {line}")

    def _callbacks(self, address: str, attrs: dict[str, Any], disk: DiskInfo) -> host.Callbacks:
        """The host's callbacks: checkpoints and a resume's rewrite recorded in the state (the
        record's copy_change_id moves to this snapshot once what changed since the copy began
        is written), progress as events, the apply's stop."""

        def checkpoint(mark: int) -> None:
            attrs["copied_bytes"] = mark
            self._write([ResourceRecord(address, "volume", Status.IN_PROGRESS, dict(attrs))], [])

        def rewritten() -> None:
            attrs["copy_change_id"] = disk.change_id
            self._write([ResourceRecord(address, "volume", Status.IN_PROGRESS, dict(attrs))], [])

        events = self.ctx.events

        def progress(covered: int, total: int) -> None:
            if events is not None:
                events.emit("copy", address=address, done=covered, total=total)

        return host.Callbacks(checkpoint, rewritten, progress, self.ctx.stop)

    def _what_to_copy(
        self, change: Change, before: dict[str, Any], vm: Any, snapshot: Any, disk: DiskInfo
    ) -> ToCopy:
        """A delta from the stored changeId, the resume of an interrupted full copy, or a full
        copy from 0 (onto a volume that reads as zeros only when it is new)."""
        stored = before.get("change_id")
        volume_known = bool(before.get("volume_id"))
        full = (change.after or {}).get("copy") == "full"  # e.g. the disk grew: CBT untrusted
        if change.action is Action.UPDATE and stored and disk.change_id and not full:
            try:
                areas = changed_areas(vm, snapshot, disk.key, disk.capacity, str(stored))
            except ChangeTrackingError as exc:
                return ToCopy("full", None, 0, False, why=f"{exc}")
            return ToCopy("delta", areas, 0, False)
        if change.action is Action.CREATE and before.get("copy") == "full" and volume_known:
            if full:  # the plan starts it over (its disk grew since it began)
                return ToCopy("full", None, 0, False)
            return self._resume(before, vm, snapshot, disk)
        zeroed = (change.after or {}).get("zeroed", True)  # the plan: its type reads as zeros
        return ToCopy("full", None, 0, not volume_known and bool(zeroed))

    def _allocated(self, what: ToCopy, vm: Any, snapshot: Any, disk: DiskInfo) -> ToCopy:
        """A full copy of the whole disk from a reader without block status (https): where the
        disk holds data at the snapshot, the areas CBT lists as allocated (changeId "*"), in
        `data`: only they are read, the rest of the capacity is holes (skipped on a volume
        that reads as zeros, zeroed on older bytes), so read + zeroed + skipped is the capacity
        as with block status. Without CBT the whole extent is read."""
        whole = what.kind == "full" and what.areas is None
        if not whole or not disk.change_id or self.ctx.sources.block_status():
            return what
        try:
            areas = changed_areas(vm, snapshot, disk.key, disk.capacity, "*")
        except ChangeTrackingError:
            return what
        return replace(what, data=areas)

    def job_data(
        self, what: ToCopy, verify: str, at: tuple[Any, Any, DiskInfo]
    ) -> list[Extent] | None:
        """A sync job's `data`: the allocated areas `_allocated` found for a whole copy, else
        `data_areas` for its verify."""
        return what.data if what.data is not None else self.data_areas(verify, *at)

    def data_areas(
        self, verify: str, vm: Any, snapshot: Any, disk: DiskInfo
    ) -> list[Extent] | None:
        """Where the disk holds data at the snapshot, for a whole-disk verify through a reader
        without block status (https): the areas CBT lists as allocated (changeId "*"), so the
        source's unallocated areas are hashed as zeros unread, as block status lets the other
        readers do (a 2 GiB disk holding 40 MiB is not read whole over HTTPS). None (read
        everything) for another scope or reader, or without CBT."""
        if verify != VERIFIED_WHOLE or self.ctx.sources.block_status() or not disk.change_id:
            return None
        try:
            return changed_areas(vm, snapshot, disk.key, disk.capacity, "*")
        except ChangeTrackingError:
            return None

    def _resume(self, before: dict[str, Any], vm: Any, snapshot: Any, disk: DiskInfo) -> ToCopy:
        """An interrupted full copy, continued from its checkpoint so that it ends equal to
        *this* snapshot: what changed since the snapshot it began from (its copy_change_id) is
        rewritten first — over the whole disk, as writes in flight may have landed beyond the
        checkpoint. Without a changeId to ask CBT from (none recorded, CBT off now, reset, or
        refused), or when the disk grew since it began (CBT is not trusted across an extend),
        it starts over from 0 onto the volume's old bytes."""
        done = int(before.get("copied_bytes", 0))
        zero = bool(before.get("dst_is_zero", False))
        began = str(before.get("copy_change_id") or "")
        start_over = "the interrupted copy starts over from 0"
        capacity = before.get("copy_capacity")  # the disk's bytes when the copy began
        if isinstance(capacity, int) and disk.capacity > capacity:
            why = (
                f"disk {disk.key} grew from {exact(capacity)} to {exact(disk.capacity)} since it "
                "began, and CBT cannot be trusted across a disk extend (kb.vmware.com/kb/2090639)"
            )
            return ToCopy("full", None, 0, False, why=f"{start_over}: {why}")
        if not began:
            return ToCopy("full", None, 0, False, why=f"{start_over}: it recorded no changeId")
        if not disk.change_id:
            return ToCopy("full", None, 0, False, why=f"{start_over}: CBT is off")
        if disk.change_id == began:
            return ToCopy("full", None, done, zero, began=began)
        if epoch(began) != epoch(disk.change_id):
            why = f"CBT was reset (changeId epoch {epoch(began)} → {epoch(disk.change_id)})"
            return ToCopy("full", None, 0, False, why=f"{start_over}: {why}")
        try:
            changed = changed_areas(vm, snapshot, disk.key, disk.capacity, began)
        except ChangeTrackingError as exc:
            return ToCopy("full", None, 0, False, why=f"{start_over}: {exc}")
        why = (
            f"resumed at {human(done)} from a newer snapshot: first the "
            f"{human(total_bytes(changed))} changed since changeId {began}"
        )
        return ToCopy("full", None, done, zero, rewrite=changed, began=began, why=why)

    def _extend(self, change: Change, address: Address, volume_id: str) -> None:
        """A disk that grew: its volume is extended (Cinder) to the planned size before the copy."""
        size = (change.after or {}).get("size_gib")
        host_id = self.host_for(address.name)[1]  # a killed apply may have left it attached there
        if isinstance(size, int) and volumes.extend(self.ctx.conn, volume_id, size, host_id):
            self.ctx.say(
                address.name, f"{change.address}: volume {volume_id} extended to {size} GiB"
            )

    def _ensure_volume(self, change: Change, address: Address, before: dict[str, Any]) -> str:
        """The disk's volume, available: the recorded one, or a new one — recorded as soon as
        cinder names it, so an apply killed (or a cloud that loses the request) while it is being
        created finds it again instead of making another."""
        existing = str(before.get("volume_id") or "")
        if existing and volumes.exists(self.ctx.conn, existing):
            if volumes.usable(self.ctx.conn, existing):
                return existing
            self.ctx.say(address.name, f"{change.address}: volume {existing} is in error: replaced")
            self._delete_volume(existing, status="error")
        after = change.after or {}
        metadata = {
            "ferry_vm": self.uuids[address.name] or "",
            "ferry_disk": str(address.index),
            "ferry_converted": "false",
            STATE_KEY: self.lineage,
        }
        volume = volumes.create_volume(
            self.ctx.conn,
            f"{self.targets[address.name]}-{address.index}",
            int(after.get("size_gib", 1)),
            after.get("volume_type"),
            metadata,
            wait=False,
        )
        attrs = {**before, "volume_id": volume.id, "copy": "full", "copied_bytes": 0}
        self._write([ResourceRecord(change.address, "volume", Status.IN_PROGRESS, attrs)], [])
        volume = volumes.wait_volume(self.ctx.conn, str(volume.id), "available")
        if after.get("bootable"):
            self.ctx.conn.block_storage.set_volume_bootable_status(volume, True)
        return str(volume.id)

    def _verify_scope(self, name: str, kind: str) -> str:
        """What of this copy is verified: the whole disk, the areas a warm delta copied, or
        nothing (""). A cutover's final sync is always verified whole when verified at all."""
        scope = "full" if self.ctx.verify else self.verify.get(name, "off")
        if scope == "off":
            return ""
        if scope == "changed" and kind == "delta" and self.modes.get(name) == "replicate":
            return VERIFIED_AREAS
        return VERIFIED_WHOLE

    def _synced(
        self,
        change: Change,
        attrs: dict[str, Any],
        disk: DiskInfo,
        *,
        kind: str,
        stats: CopyStats,
        step: float,
    ) -> None:
        """The copy is complete and flushed: only now does the changeId advance. `step`: the
        step's wall time in seconds (stats.seconds is the copy's own part of it)."""
        volume_id = str(attrs["volume_id"])
        address = Address.parse(change.address)
        verified: tuple[str | None, str | None] = self.ctx.digests.get(change.address, (None, None))
        metadata = {"ferry_vm": self.uuids[address.name] or "", "ferry_disk": str(address.index)}
        metadata[STATE_KEY] = self.lineage
        if disk.change_id:
            metadata["ferry_change_id"] = disk.change_id
        volumes.set_metadata(self.ctx.conn, volume_id, metadata)
        after, before = change.after or {}, change.before or {}
        host = self.host_for(address.name)[0]  # the conversion host that wrote it
        record = {
            "volume_id": volume_id,
            RECORDED_HOST: host,
            "change_id": disk.change_id,
            "size_gib": after.get("size_gib"),
            "capacity": disk.capacity,  # bytes: a grow within a GiB is seen too
            "volume_type": after.get("volume_type"),
            "bootable": after.get("bootable", False),
            "epoch": content_epoch(),  # every write a new one: a conversion is of one epoch
            "last_sync": {
                "kind": kind,
                "bytes": stats.bytes_read + stats.bytes_zeroed,
                "seconds": round(stats.seconds, 3),  # copying only: what throughput is over
                "read": stats.bytes_read,  # data moved (bytes zeroed are not a transfer)
                "skipped": stats.bytes_skipped,  # holes and zeros left alone
                "step_seconds": round(step, 3),
                "at": time.time(),
                "previous_at": (before.get("last_sync") or {}).get("at"),  # dates the change rate
                "source_power": self.ctx.snapshot_power.get(address.name),
                "retries": stats.retries,
                "sha256": verified[0],
                "verified": verified[1],  # whole disk | changed areas | None
                "host": host,
            },
        }
        self._write([ResourceRecord(change.address, "volume", Status.READY, record)], [])
        self.announce_sync(change.address, stats, step, volume_id, record["last_sync"])

    def announce_sync(
        self, address: str, stats: CopyStats, step: float, target: str, last_sync: dict[str, Any]
    ) -> None:
        """A finished sync told: the `synced` event (JSON stream, logs, report) and the line
        people read. `target` is what was written (a volume ID, or image mode's local file);
        `last_sync` the record's (kind, bytes, seconds, sha256, verified, host or none);
        `step` the step's wall time in seconds."""
        vm, kind = Address.parse(address).name, str(last_sync["kind"])
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "synced",
                address=address,
                vm=vm,
                kind=kind,
                bytes=last_sync["bytes"],
                seconds=last_sync["seconds"],
                read=stats.bytes_read,
                skipped=stats.bytes_skipped,
                volume_id=target,
                host=last_sync.get("host"),
                step_seconds=round(step, 3),
                sha256=last_sync["sha256"],
                verified=last_sync["verified"],
            )
        self.ctx.say(vm, sync_line(address, kind, stats, step))

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


def handed_line(address: str, volume_id: str, lineage: str, doing: str) -> str:
    """The one line of a volume step refused because another ferry state manages the volume
    now (`lineage`: that state's; `doing`: "deleted" or "written")."""
    return (
        f"{address}: volume {volume_id} is managed by ferry state {lineage} now (taken over "
        f"since this plan was made, with --adopt-lineage or by hand): not {doing}"
    )


def handed_since(conn: Any, plan: Plan) -> list[str]:
    """The plan's volume steps that would delete or write a volume another ferry state
    manages now (its `ferry_state` names another lineage than the plan's state): one line
    each (handed_line), [] when none. One volume listing when the plan has such steps (a read
    per step cost a 1,000-VM wave thousands of requests at every apply's start); a volume
    gone since is no one's. Raises OpenStackError."""
    steps = [(c, volume_id) for c in plan.changes if (volume_id := _written_volume(c, plan))]
    if not steps:
        return []
    managing = volumes.lineages(conn)
    out = []
    for change, volume_id in steps:
        other = managing.get(volume_id)
        if other and other != plan.state_lineage:
            doing = "deleted" if change.action is Action.DELETE else "written"
            out.append(handed_line(change.address, volume_id, other, doing))
    return out


def _written_volume(change: Change, plan: Plan) -> str:
    """The id of the recorded volume `change` deletes or writes, "" for any other step (and
    for a plan of a state not written yet, which manages no volume)."""
    volume_id = str((change.before or {}).get("volume_id") or "")
    if change.kind != "volume" or not volume_id or not plan.state_lineage:
        return ""
    return "" if change.action in (Action.NOOP, Action.FORGET, Action.READ) else volume_id


def sync_line(address: str, kind: str, stats: CopyStats, step: float) -> str:
    """What a sync did, for people: the step's wall time (`step`, seconds: volume, attach, copy,
    verify, detach), the data read and its rate over the copy's own seconds, zeros written and
    holes skipped apart (they move no data), e.g. 'vm.web01.disk[2000]: full copy in 16.0 s:
    41.9 MiB read (209.7 MiB/s while copying), 0 B zeroed, 19.9 GiB of holes skipped'."""
    moved = f"{human(stats.bytes_read)} read"
    if stats.seconds > 0 and stats.bytes_read:
        moved += f" ({rate(stats.bytes_read / stats.seconds)} while copying)"
    parts = [moved, f"{human(stats.bytes_zeroed)} zeroed"]
    if stats.bytes_skipped:
        parts.append(f"{human(stats.bytes_skipped)} of holes skipped")
    return f"{address}: {kind} copy in {duration(step)}: {', '.join(parts)}"


def _walk_snapshots(info: Any) -> list[Any]:
    out: list[Any] = []
    stack = list(info.rootSnapshotList) if info is not None else []
    while stack:
        tree = stack.pop()
        out.append(tree)
        stack.extend(tree.childSnapshotList or [])
    return out
