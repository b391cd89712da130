"""Applying a plan's replication changes: one snapshot per VM, then each disk copied (full or
CBT delta) into its Cinder volume through the conversion host, state persisted after each step.

Correctness rules kept here (../shared/DESIGN.md §5): all disks of a VM come from one snapshot;
a volume's stored changeId (state and `ferry_change_id` metadata) advances only after its copy
completed and was flushed; a changeId that cannot be trusted means a full copy, never a skip.
Cutover changes (ports, flavor, conversion, server) are applied by executor.cutover.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyVmomi import vim

from engine.addresses import Address
from engine.dataplane.copy import CopyOptions, CopyStats, copy, digest, file_digest
from engine.dataplane.nbdkit import NbdkitServer
from engine.errors import ChangeTrackingError, DataplaneError, UserError
from engine.executor.cutover import Cutover
from engine.executor.events import Events
from engine.executor.seams import Devices, Sources
from engine.model.plan import Action, Change, Plan
from engine.model.state import VERIFIED_AREAS, VERIFIED_WHOLE, ResourceRecord, Status
from engine.providers.openstack import volumes
from engine.providers.vsphere.read import changed_areas, fetch_property, retrieve
from engine.providers.vsphere.snapshots import (
    DiskInfo,
    create_snapshot,
    enable_cbt,
    remove_snapshot,
    snapshot_disks,
)
from engine.statestore import StateStore

SUPPORTED = {
    ("source_cbt", Action.CREATE),
    ("source_snapshot", Action.CREATE),
    *(
        (kind, action)
        for kind in (
            "volume",
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
        self.ctx.log_names.update(self.targets)
        self.cutover = Cutover(self)

    # -- the walker's node function -----------------------------------------------------------

    def run(self, address: Hashable) -> None:
        change = self.changes[str(address)]
        handler = {
            "source_cbt": self._enable_cbt,
            "source_snapshot": self._snapshot,
            "volume": self._volume,
            "port": self.cutover.port,
            "flavor": self.cutover.flavor,
            "network": self.cutover.network,
            "conversion_host": self.cutover.conversion_host,
            "conversion": self.cutover.conversion,
            "server": self.cutover.server,
        }[change.kind]
        handler(change)

    def cleanup(self) -> None:
        """Remove the snapshots this apply took (also after failures) and their records."""
        for vm_name, (snapshot, _) in list(self.ctx.snapshots.items()):
            remove_snapshot(self.ctx.si, snapshot)
            self._write([], [str(Address("vm", vm_name, "snapshot"))])
            del self.ctx.snapshots[vm_name]

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
        name = Address.parse(change.address).name
        vm = self._vm(name)
        self._remove_leftovers(name, vm)
        power = (change.after or {}).get("power_off")
        if power is not None:  # cutover: the source goes off before its final snapshot
            self.cutover.power_off_source(name, vm, power)
        snapshot = create_snapshot(
            self.ctx.si,
            vm,
            f"{SNAPSHOT_PREFIX}{self.targets[name]}",
            "taken by ferry for a sync; removed when it ends",
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

    def _remove_leftovers(self, name: str, vm: Any) -> None:
        """Snapshots a killed apply left behind (named ferry-...)."""
        props = fetch_property(self.ctx.si, vm, "snapshot")
        for tree in _walk_snapshots(props):
            if str(tree.name).startswith(SNAPSHOT_PREFIX):
                remove_snapshot(self.ctx.si, tree.snapshot)
                self.ctx.say(
                    name, f"{Address('vm', name)}: removed leftover snapshot {tree.snapshot._moId}"
                )

    # -- volumes --------------------------------------------------------------------------------

    def _volume(self, change: Change) -> None:
        address = Address.parse(change.address)
        record = self.ctx.store.read().resources.get(change.address)
        before = dict(record.attributes) if record else dict(change.before or {})
        if change.action is Action.READ:
            self._adopt(change, address)
            return
        if change.action in (Action.DELETE, Action.FORGET):
            if change.action is Action.DELETE and before.get("volume_id"):
                self._delete_volume(str(before["volume_id"]))
            self._write([], [change.address])
            return
        snapshot, disks = self.ctx.snapshots[address.name]
        disk = disks[address.index or 0]
        self._sync(change, address, before, snapshot, disk)

    def _adopt(self, change: Change, address: Address) -> None:
        """Take over a volume found by metadata (ferry's, or os-migrate's by name): stamp ferry's
        keys on it so it is found by identity from now on; the next sync is a delta from its
        changeId (or a full copy when it has none)."""
        after = dict(change.after or {})
        metadata = {
            "ferry_vm": self.uuids[address.name] or "",
            "ferry_disk": str(address.index),
            "ferry_converted": "false",
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
        vm = self._vm(address.name)
        kind, areas, start_at, fresh = self._what_to_copy(change, before, vm, snapshot, disk)
        volume_id = self._ensure_volume(change, address, before)
        self._extend(change, address, volume_id)
        self.cutover.revert_interrupted(address.name, volume_id)
        attrs = {**before, "volume_id": volume_id, "copy": kind, "copied_bytes": start_at}
        self._write([ResourceRecord(change.address, "volume", Status.IN_PROGRESS, attrs)], [])
        volumes.attach(self.ctx.conn, self.ctx.conversion_host_id, volume_id)
        try:
            device = self.ctx.devices.device(self.ctx.conn, volume_id, self.ctx.conversion_host_id)
            source = self.ctx.sources.source(
                vm._moId, self.uuids[address.name] or "", snapshot._moId, disk
            )
            stats = self._copy(
                change.address,
                attrs,
                source,
                device,
                areas=areas,
                options=CopyOptions(dst_is_zero=fresh, start_at=start_at),
            )
            scope = self._verify_scope(address.name, kind)
            if scope:
                digest_hex = self._verify(
                    source, device, disk, areas if scope == VERIFIED_AREAS else None
                )
                with self.ctx.lock:
                    self.ctx.digests[change.address] = (digest_hex, scope)
        finally:
            volumes.detach(self.ctx.conn, self.ctx.conversion_host_id, volume_id)
        self._synced(change, attrs, disk, kind=kind, stats=stats)

    def _what_to_copy(
        self, change: Change, before: dict[str, Any], vm: Any, snapshot: Any, disk: DiskInfo
    ) -> tuple[str, list[tuple[int, int]] | None, int, bool]:
        """(full | delta, areas or None for all, resume offset, destination reads as zeros)."""
        stored = before.get("change_id")
        volume_known = bool(before.get("volume_id"))
        full = (change.after or {}).get("copy") == "full"  # e.g. the disk grew: CBT untrusted
        if change.action is Action.UPDATE and stored and disk.change_id and not full:
            try:
                areas = changed_areas(vm, snapshot, disk.key, disk.capacity, str(stored))
            except ChangeTrackingError as exc:
                self.ctx.say(Address.parse(change.address).name, f"{change.address}: {exc}")
                return "full", None, 0, False
            return "delta", areas, 0, False
        if change.action is Action.CREATE and before.get("copy") == "full" and volume_known:
            return "full", None, int(before.get("copied_bytes", 0)), True  # resume
        return "full", None, 0, not volume_known

    def _extend(self, change: Change, address: Address, volume_id: str) -> None:
        """A disk that grew: its volume is extended (Cinder) to the planned size before the copy."""
        size = (change.after or {}).get("size_gib")
        if isinstance(size, int) and volumes.extend(self.ctx.conn, volume_id, size):
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

    def _copy(
        self,
        address: str,
        attrs: dict[str, Any],
        source: Any,
        device: Any,
        *,
        areas: list[tuple[int, int]] | None,
        options: CopyOptions,
    ) -> CopyStats:
        def checkpoint(mark: int) -> None:
            self._write(
                [
                    ResourceRecord(
                        address, "volume", Status.IN_PROGRESS, {**attrs, "copied_bytes": mark}
                    )
                ],
                [],
            )

        events = self.ctx.events

        def on_bytes(covered: int, total: int) -> None:
            if events is not None:
                events.emit("copy", address=address, done=covered, total=total)

        options = CopyOptions(
            dst_is_zero=options.dst_is_zero,
            start_at=options.start_at,
            checkpoint=checkpoint,
            on_bytes=on_bytes,
            cancel=self.ctx.stop,
        )
        with NbdkitServer(source) as server:
            stats = copy(server.uri, device, areas, options)
        with self.ctx.lock:
            self.ctx.copied[address] = stats
        return stats

    def _verify_scope(self, name: str, kind: str) -> str:
        """What of this copy is verified: the whole disk, the areas a warm delta copied, or
        nothing (""). A cutover's final sync is always verified whole when verified at all."""
        scope = "full" if self.ctx.verify else self.verify.get(name, "off")
        if scope == "off":
            return ""
        if scope == "changed" and kind == "delta" and self.modes.get(name) == "replicate":
            return VERIFIED_AREAS
        return VERIFIED_WHOLE

    def _verify(
        self, source: Any, device: Any, disk: DiskInfo, areas: list[tuple[int, int]] | None
    ) -> str:
        stop = self.ctx.stop  # a stop mid-verify: the copy stays unrecorded, verified next time
        with NbdkitServer(source) as server:
            want = digest(server.uri, areas=areas, cancel=stop)
        got = file_digest(device, disk.capacity, areas=areas, cancel=stop)
        if got != want:
            over = "the areas copied" if areas is not None else "the disk"
            raise DataplaneError(
                f"verify: disk {disk.key} sha256 {got} over {over} differs from the source's {want}"
            )
        return got

    def _synced(
        self,
        change: Change,
        attrs: dict[str, Any],
        disk: DiskInfo,
        *,
        kind: str,
        stats: CopyStats,
    ) -> None:
        """The copy is complete and flushed: only now does the changeId advance."""
        volume_id = str(attrs["volume_id"])
        address = Address.parse(change.address)
        verified: tuple[str | None, str | None] = self.ctx.digests.get(change.address, (None, None))
        metadata = {"ferry_vm": self.uuids[address.name] or "", "ferry_disk": str(address.index)}
        if disk.change_id:
            metadata["ferry_change_id"] = disk.change_id
        volumes.set_metadata(self.ctx.conn, volume_id, metadata)
        after, before = change.after or {}, change.before or {}
        record = {
            "volume_id": volume_id,
            "change_id": disk.change_id,
            "size_gib": after.get("size_gib"),
            "volume_type": after.get("volume_type"),
            "bootable": after.get("bootable", False),
            "last_sync": {
                "kind": kind,
                "bytes": stats.bytes_read + stats.bytes_zeroed,
                "seconds": round(stats.seconds, 3),
                "at": time.time(),
                "previous_at": (before.get("last_sync") or {}).get("at"),  # dates the change rate
                "source_power": self.ctx.snapshot_power.get(address.name),
                "retries": stats.retries,
                "sha256": verified[0],
                "verified": verified[1],  # whole disk | changed areas | None
            },
        }
        self._write([ResourceRecord(change.address, "volume", Status.READY, record)], [])
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "synced",
                address=change.address,
                vm=address.name,
                kind=kind,
                bytes=record["last_sync"]["bytes"],
                seconds=record["last_sync"]["seconds"],
                sha256=verified[0],
                verified=verified[1],
            )
        self.ctx.say(
            address.name,
            f"{change.address}: {kind} copy, {stats.bytes_read} bytes read "
            f"in {stats.seconds:.1f} s",
        )

    def _write(self, puts: list[ResourceRecord], deletes: list[str]) -> None:
        self.ctx.store.write(puts, deletes)


def _walk_snapshots(info: Any) -> list[Any]:
    out: list[Any] = []
    stack = list(info.rootSnapshotList) if info is not None else []
    while stack:
        tree = stack.pop()
        out.append(tree)
        stack.extend(tree.childSnapshotList or [])
    return out
