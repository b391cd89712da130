"""Applying a plan: the Applier is the walker's node function; each change goes to its step.

The Applier is assembled from its parts: source_steps (CBT, the VM's snapshot, the checks that
the source is the one planned), volume_steps (adopt, sync, compare, delete), replacement (where
host-bound steps run when a conversion host is gone) and applier_base (what they share). Cutover
changes (ports, flavor, conversion, server) go to executor.cutover, image mode's to
executor.image.

Correctness rules kept by the parts (../shared/DESIGN.md §5): all disks of a VM come from one
snapshot; a volume's stored changeId (state and `ferry_change_id` metadata) advances only after
its copy completed and was flushed; a changeId that cannot be trusted means a full copy, never a
skip.
"""

from __future__ import annotations

from collections.abc import Hashable

from engine.addresses import Address
from engine.errors import StateError
from engine.executor.applier_base import Context
from engine.executor.cutover import Cutover
from engine.executor.image import DiskFiles, ImageCutover
from engine.executor.moved import moved_records
from engine.executor.settle import brief, left_off_line
from engine.executor.source_steps import SourceSteps
from engine.model.plan import Action, Change, Plan
from engine.providers.vsphere.snapshots import remove_snapshot

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
# a cutover's steps that check the source first (the first one of each VM does): ports come
# before the snapshot that powers the source off, a server boots with the plan's ports
CHECKED_FIRST = ("port", "conversion", "server")


def unsupported(plan: Plan) -> list[Change]:
    """Changes this executor has no handler for (a plan from a newer ferry)."""
    return [
        c
        for c in plan.changes
        if c.action is not Action.NOOP and (c.kind, c.action) not in SUPPORTED
    ]


class Applier(SourceSteps):
    """Runs a plan's changes (the walker's node function): source, volume and placement steps
    from its parts, cutover steps through executor.cutover and image mode's through
    executor.image."""

    def __init__(self, plan: Plan, ctx: Context) -> None:
        super().__init__(plan, ctx)
        self.cutover = Cutover(self)
        self.files = DiskFiles(self)
        self.images = ImageCutover(self)

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
            if not remove_snapshot(self.ctx.si, snapshot):
                self.ctx.say(
                    vm_name,
                    f"{Address('vm', vm_name)}: snapshot {snapshot._moId} was removed outside "
                    "ferry during the apply",
                )
            del self.ctx.snapshots[vm_name]
            try:
                self._write([], [str(Address("vm", vm_name, "snapshot"))])
            except StateError as exc:
                self.ctx.say(
                    vm_name,
                    f"{Address('vm', vm_name)}: snapshot {snapshot._moId} removed; state not "
                    f"written: {brief(exc)}",
                )
