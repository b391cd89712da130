"""The source's steps: enabling CBT, the VM's snapshot (a cutover's after its source's
power-off), the checks that the source is the one the plan was made for, and the removal of
snapshots an interrupted apply left (never anyone else's)."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from pyVmomi import vim

from engine.addresses import Address
from engine.errors import (
    DataplaneError,
    SourceChangedError,
    UserError,
)
from engine.executor.applier_base import SNAPSHOT_PREFIX
from engine.executor.seams import LabSources
from engine.executor.source import nic_differences, planned_nics
from engine.executor.volume_steps import VolumeSteps
from engine.model.observed import (
    CBT_SNAPSHOT_DESCRIPTION,
    CONSOLIDATE,
    SYNC_SNAPSHOT_DESCRIPTION,
    SourceNic,
    consolidation_needed,
    ferry_made,
    others_advice,
    own_leftover,
    snapshot_description,
    snapshot_lineage,
)
from engine.model.plan import Action, Change, Plan
from engine.model.state import (
    INSTANCE_UUID,
    ResourceRecord,
    Status,
)
from engine.providers.vsphere.inventory import parse_nic
from engine.providers.vsphere.read import fetch_property, retrieve
from engine.providers.vsphere.snapshots import (
    DiskInfo,
    create_snapshot,
    enable_cbt,
    parse_disks,
    remove_snapshot,
    snapshot_disks,
)
from engine.units import GiB, exact


class SourceSteps(VolumeSteps):
    """The Applier's source steps (see the module)."""

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
        enable_cbt(
            self.ctx.si,
            self._vm(name),
            f"{SNAPSHOT_PREFIX}cbt-{self.targets[name]}",
            snapshot_description(CBT_SNAPSHOT_DESCRIPTION, self.lineage),
        )
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
        before = self._check_own_snapshots(name, vm)
        devices = fetch_property(self.ctx.si, vm, "config.hardware.device")
        self._check_source(name, devices)
        # before the snapshot and any power-off: what the plan saw, or a delta left since
        self._check_base_disks(name, parse_disks(list(devices or [])), len(before))
        with self.ctx.lock:
            self.ctx.source_checked[name] = None
        power = (change.after or {}).get("power_off")
        if power is not None:  # cutover: the source goes off before its final snapshot
            left = "nothing was powered off, the source is left as it was"
            self.cutover.go_ahead(name, "the power-off", left)  # and again right before it
            self.ready_volumes(name)  # nothing after the power-off may wait on a stuck volume
            self.ready_agent(name)  # nor be refused by its agent (another spec or state)
            self.cutover.ready_destination(name)  # nor fail on a port or flavor gone since
            self._probe_reader(name, vm, parse_disks(list(devices or [])))  # nor on the reader
            self.cutover.power_off_source(name, vm, power)
        snapshot = create_snapshot(
            self.ctx.si,
            vm,
            f"{SNAPSHOT_PREFIX}{self.targets[name]}",
            snapshot_description(SYNC_SNAPSHOT_DESCRIPTION, self.lineage),
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
        # again with ferry's taken (removed after): one taken since the check above, during a
        # graceful shutdown's minutes say, froze the base extent before ferry's (break-it 15 F1)
        self._check_own_snapshots(name, vm, trees)
        self._check_disks(name, list(disks.values()))  # what changed in between (removed after)
        # what ferry's snapshot froze is what the reader reads, over the snapshots below it
        below = [t for t in trees if t.snapshot._moId != snapshot._moId]
        self._check_base_disks(name, list(disks.values()), len(below))

    def _probe_reader(self, name: str, vm: Any, disks: list[DiskInfo]) -> None:
        """The reader can open the cutover's disks (Sources.probe: the https reader's HEAD on
        each flat extent, a mount's files) before the power-off, not only in the copy after
        it. Raises DataplaneError naming the VM and the disk; the source is left as it was."""
        try:
            self.ctx.sources.probe(vm._moId, disks)
        except DataplaneError as exc:
            raise DataplaneError(
                f"{Address('vm', name)}: {exc}; nothing was powered off, the source is left "
                "as it was"
            ) from exc

    def _check_base_disks(self, name: str, disks: list[DiskInfo], snapshots: int) -> None:
        """A reader of the base extent reads the disk only when no delta disk that no snapshot
        owns sits above the base disk: `disks` (the VM's, before ferry's snapshot; then those
        ferry's snapshot froze, which the copy reads) run on at most `snapshots` delta disks
        (the snapshots below them), the plan's rule (consolidation_needed). A backup that
        failed since the plan, or an orphaned delta below ferry's leftover snapshot (break-it
        15b N2), would have the copy read a -delta.vmdk as the disk. Checked before any power-
        off and before any byte is read. Raises SourceChangedError naming each disk and the
        delta disk it runs on."""
        reader = _base_extent_reader(self.plan, self.ctx.sources, name)
        stale = [d for d in disks if consolidation_needed(len(d.parents), snapshots)]
        if reader is None or not stale:
            return
        found = "; ".join(
            f"disk {d.key} runs on {d.file_name}, a delta disk over {d.parents[-1]}" for d in stale
        )
        raise SourceChangedError(
            f"{Address('vm', name)}: {found}, which no snapshot owns (vSphere: consolidation "
            f"needed): the {reader} reader would read a delta file as the disk; {CONSOLIDATE}, "
            "then run `ferry plan` again"
        )

    def _check_own_snapshots(self, name: str, vm: Any, trees: list[Any] | None = None) -> list[Any]:
        """A reader of the base extent (https; datastore_path on a real datastore) reads the
        VM's disk at ferry's snapshot only when that snapshot is the VM's only one: a snapshot
        someone took since the plan (a backup job, between `plan --out` and apply) freezes the
        base extent older than the disk, and the copy would record ferry's changeId over older
        bytes (break-it 12c item 10: 2 MiB lost, then "No changes"). Checked before the power-
        off, and again once ferry's snapshot is taken (`trees`: the VM's snapshots then): one
        taken in between, during a graceful shutdown's minutes, froze the base extent before
        ferry's (break-it 15 F1: a cutover's server booted without the guest's last 4 MiB,
        verified, exit 0). Returns the snapshot trees checked ([] for another reader: none read).
        Raises SourceChangedError naming the snapshots."""
        reader = _base_extent_reader(self.plan, self.ctx.sources, name)
        if reader is None:
            return []
        if trees is None:
            trees = _walk_snapshots(fetch_property(self.ctx.si, vm, "snapshot"))
        lineage = self.lineage  # another state's snapshot froze the extent too
        other = [
            t for t in trees if not own_leftover(str(t.name), str(t.description or ""), lineage)
        ]
        if other:
            names = [str(t.name) for t in other]
            theirs = [
                str(t.name) for t in other if ferry_made(str(t.name), str(t.description or ""))
            ]
            users = "consolidate (delete) them, or " if len(theirs) < len(names) else ""
            raise SourceChangedError(
                f"{Address('vm', name)}: has snapshot(s) {', '.join(names)} now: the {reader} "
                f"reader reads the base disk, older than the VM's current state; {users}read "
                "this VM with source.reader: vddk, then run `ferry plan` again"
                f"{others_advice(theirs)}"
            )
        return trees

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
        """Remove the snapshots a killed apply of this state left behind: ferry's own (name and
        description, `ferry_made`; never anyone else's) of this state's lineage or of none (an
        older ferry's), those whose moref is in `only` when given. Another ferry state's stays,
        said once (`_leave_other_states`: its apply may be reading it, break-it 16b F5).
        Returns how many were removed."""
        removed, lineage = 0, self.lineage
        trees = _walk_snapshots(fetch_property(self.ctx.si, vm, "snapshot"))
        self._leave_other_states(name, trees, lineage)
        for tree in trees:
            moref = str(tree.snapshot._moId)
            if not own_leftover(str(tree.name), str(tree.description or ""), lineage):
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

    def _leave_other_states(self, name: str, trees: list[Any], lineage: str) -> None:
        """Say which of `trees` (the VM's snapshots) a ferry state other than this one (of
        `lineage`) took: left alone."""
        for tree in trees:
            theirs = snapshot_lineage(str(tree.name), str(tree.description or ""))
            if theirs is not None and theirs != lineage:
                self.ctx.say(
                    name,
                    f"{Address('vm', name)}: snapshot {tree.snapshot._moId} ({tree.name}) was "
                    f"taken by ferry state {theirs}: left alone (an apply of that state may be "
                    "copying from it)",
                )

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


def _base_extent_reader(plan: Plan, sources: Any, name: str) -> str | None:
    """The reader of VM `name` when it reads its disks' base extents (https; datastore_path on
    a real datastore, not the lab's per-snapshot files), else None."""
    reader = next((v.reader for v in plan.vms if v.name == name), "")
    lab_files = isinstance(sources, LabSources)  # each snapshot's own copy
    if reader == "https" or (reader == "datastore_path" and not lab_files):
        return reader
    return None


def _walk_snapshots(info: Any) -> list[Any]:
    out: list[Any] = []
    stack = list(info.rootSnapshotList) if info is not None else []
    while stack:
        tree = stack.pop()
        out.append(tree)
        stack.extend(tree.childSnapshotList or [])
    return out
