"""Applying a plan's cutover changes: ports with the source MACs, a flavor when asked, the
protection snapshots and the guest conversion, and the server booted from the volumes.

Order (the plan's graph): the source was powered off before its final snapshot and the final
delta was copied; then the volumes are protected (one Cinder snapshot each), converted in place
on the conversion host, and the server boots from them. A failed conversion or boot deletes the
half-made server, reverts every volume to its protection snapshot and (unless the spec says
`on_failure: leave_off`) powers the source back on: the next apply syncs a delta and tries again.
After the server is ACTIVE the volumes are marked converted and the protection snapshots go.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.addresses import Address
from engine.errors import (
    ConversionError,
    FerryError,
    OpenStackError,
    SourceChangedError,
    StateError,
    StateLockedError,
    StateUnreachableError,
    StoppedError,
    one_line,
)
from engine.executor.host import ConvertJob, firstboot_scripts
from engine.model.desired import Concern
from engine.model.observed import Quota
from engine.model.plan import Action, Change
from engine.model.state import RECORDED_HOST, ResourceRecord, Status
from engine.planner.checks import missing_key_pair
from engine.planner.diff.cutover import moved_change_ids, source_left_off
from engine.planner.quota import Budget, after_power_off
from engine.providers.openstack import compute, volumes
from engine.providers.openstack.read import fetch_key_pairs, fetch_quotas
from engine.providers.vsphere.power import (
    POWERED_OFF,
    POWERED_ON,
    PowerOffPolicy,
    disk_change_ids,
    guest_state,
    power_off,
    power_on,
    power_state,
    wait_power_state,
)
from engine.units import duration

if TYPE_CHECKING:
    from engine.executor.apply import Applier

POWERED_OFF_AT = "powered_off_at"  # conversion record: when ferry first powered the source off
# conversion record: when the guest accepted ferry's graceful shutdown that then timed out (the
# guest may still be going off: the settle tells that from a source someone powered on)
SHUTDOWN_ASKED_AT = "shutdown_asked_at"


def content_epoch() -> str:
    """A new content epoch for a volume record: every write of a volume (a sync, a revert, a
    conversion) gives it one; a server boots only from volumes at their converted epoch."""
    return uuid.uuid4().hex[:16]


# the settle's word for a source someone else powered on since ferry powered it off
ALREADY_ON = "source already powered on (not by ferry): left as it is"


def left_off_line(name: str, since: float) -> str:
    """The stop message of a source ferry left powered off (the plan and report say the same)."""
    return f"{Address('vm', name)}: {source_left_off(since)}"


def brief(error: StateError) -> str:
    """A state error as the lines that repeat it say it (the state and since when, when it is
    unreachable: the apply's last line has the cause)."""
    return one_line(error.brief if isinstance(error, StateUnreachableError) else str(error))


class Cutover:
    def __init__(self, applier: Applier) -> None:
        self.a = applier
        self.ctx = applier.ctx
        self._revert_lock = threading.Lock()  # volume syncs of one VM run in parallel
        # What this apply knows without its state (the state may be unreachable when it
        # settles). VM → epoch seconds ferry powered its source off, from this apply's power-off
        # until settle_sources puts it back or leaves it off: what a kill would leave off (read
        # by the signal handler, without locks), and what _settle_unrecorded powers back on.
        self.powered_off: dict[str, float] = {}
        self.booting: set[str] = set()  # VMs whose server may have been booted by this apply
        # VMs whose server record this apply deleted while it was still in progress (booted by
        # an interrupted apply, never confirmed): not a cutover, the source is production
        self.unconfirmed: set[str] = set()
        # The stop gate (break-it 12e item 4): a running step crosses into an action that takes
        # production down or cannot be undone (the power-off, a conversion's start, a boot)
        # only through go_ahead, and the signal handler sets the stop under the same lock: a
        # stop either comes first (the action never starts) or after the action's commitment
        # is recorded (powered_off, which the handler reads). Reentrant: the handler runs in
        # the main thread, which may hold it.
        self.gate = threading.RLock()

    # -- helpers --------------------------------------------------------------------------------

    def _records(self) -> Mapping[str, ResourceRecord]:
        return self.ctx.store.read().resources

    def _attrs(self, address: str) -> dict[str, Any]:
        record = self._records().get(address)
        return dict(record.attributes) if record else {}

    def _volume_ids(self, name: str, disks: list[int]) -> list[str]:
        records = self._records()
        out = []
        for key in disks:
            address = str(Address("vm", name, "disk", key))
            record = records.get(address)
            if record is None or record.status is not Status.READY:
                raise FerryError(f"{address} is not copied: the cutover needs every volume")
            if record.kind == "disk_file":  # output: image: the volume made from its image
                address = str(Address("vm", name, "volume", key))
                record = records.get(address)
                if record is None or record.status is not Status.READY:
                    raise FerryError(f"{address} is not made: the cutover needs every volume")
            volume_id = str(record.attributes["volume_id"])
            if record.kind == "volume":  # converted and booted: written
                self.a.check_owned(address, volume_id, "written")
            out.append(volume_id)
        return out

    def _torn_down(self, change: Change, id_key: str, delete: Callable[[Any, str], None]) -> bool:
        """Delete/replace removes the recorded object (by `id_key`); delete/forget also drops its
        record. True when nothing is left to create."""
        before = self._attrs(change.address) or dict(change.before or {})
        if change.action in (Action.DELETE, Action.REPLACE) and before.get(id_key):
            delete(self.ctx.conn, str(before[id_key]))
        if change.action in (Action.DELETE, Action.FORGET):
            self.a._write([], [change.address])
            return True
        return False

    def _log(self, name: str) -> Path:
        return self.ctx.log_dir / f"{self.ctx.log_names.get(name, name)}.log"

    def go_ahead(
        self, name: str, action: str, left: str, commit: Callable[[], None] = lambda: None
    ) -> None:
        """Begin `action` ('the power-off', 'the conversion', 'the boot') of VM `name` unless
        the apply was asked to stop: checked and `commit()`ed (a record of what is about to be
        done, no I/O) atomically with the signal handler's stop. `left` says what a stop here
        leaves ('the source is left as it was (poweredOn)'), said in the VM's log and the error.

        Raises StoppedError when the stop came first (nothing of `action` was done)."""
        with self.gate:
            stopped = self.ctx.stop.is_set()
            if not stopped:
                commit()
        if stopped:
            line = f"{Address('vm', name)}: stopped before {action}: {left}"
            self.ctx.say(name, line)
            raise StoppedError(line)

    # -- power (called by the snapshot node in cutover mode) -------------------------------

    def power_off_source(self, name: str, vm: Any, settings: dict[str, Any]) -> str:
        """Record the source's power state, then power it off; returns how it went off. The
        time of the first power-off by ferry is kept (`powered_off_at`, epoch seconds) until
        the source is powered back on: downtime runs from it, across applies."""
        address = str(Address("vm", name, "conversion"))
        record = self._records().get(address)
        status = record.status if record is not None else Status.IN_PROGRESS
        attrs = self._attrs(address)
        power = self._power_state(vm)
        fresh = POWERED_OFF_AT not in attrs or power == POWERED_ON  # as it is now: ferry has
        # not powered it off (an earlier attempt's 'poweredOff', the source powered on since,
        # would make this power-off one nothing powers back on: break-it 12c item 4), or it
        # runs again (powered back on by an apply that could not record it: item 6)
        if fresh:
            attrs["source_power"] = power
            attrs.pop(POWERED_OFF_AT, None)
            if power == POWERED_ON:  # recorded before the call: a kill
                attrs[POWERED_OFF_AT] = time.time()  # in between still says ferry did it
        since = float(attrs.get(POWERED_OFF_AT) or 0.0)

        def commit() -> None:  # known without the state, should it be lost from here
            if since:
                self.powered_off[name] = since

        # a stop before this point powers nothing off (break-it 12e item 4: a Ctrl-C during
        # ready_destination hard-powered production off, and with leave_off left it off)
        self.go_ahead(name, "the power-off", f"the source is left as it was ({power})", commit)
        try:
            if fresh:
                self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
        except BaseException:
            self.powered_off.pop(name, None)  # not powered off: nothing to put back
            raise
        asked: list[float] = []  # when the guest accepted a graceful shutdown
        try:
            how = power_off(
                self.ctx.si,
                vm,
                PowerOffPolicy.from_spec(settings),
                lambda: asked.append(time.time()),
            )
        except FerryError:
            if asked:  # timed out: the guest may go on shutting down (break-it 12e item 6)
                attrs[SHUTDOWN_ASKED_AT] = asked[0]
                self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
            raise
        attrs.pop(SHUTDOWN_ASKED_AT, None)
        attrs["powered_off"] = how
        self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
        self.ctx.say(name, f"{Address('vm', name)}: source powered off ({how})")
        if self.ctx.events is not None:
            self.ctx.events.emit("source_off", vm=name, how=how, since=attrs.get(POWERED_OFF_AT))
        return how

    def settle_sources(self) -> list[str]:
        """After the walk (done, failed or stopped): every cutover VM whose source ferry powered
        off and that has no server is powered back on — unless its spec says
        `on_failure: leave_off`, or a server may have been booted (never two running copies).
        Returns the lines said for sources left off ("source powered off by ferry at ...").
        Without the state (unreachable, or its lock taken by another ferry): from what this
        apply knows it did (_settle_unrecorded)."""
        try:
            records = self._records()
        except StateError as exc:
            return self._settle_unrecorded(exc)
        left_off = []
        for name in self.a.uuids:
            snapshot = self.a.changes.get(str(Address("vm", name, "snapshot")))
            if snapshot is None or not (snapshot.after or {}).get("power_off"):
                continue  # this apply could not power it off: another's, left as it is
            record = records.get(str(Address("vm", name, "conversion")))
            if record is None or not record.attributes.get(POWERED_OFF_AT):
                continue
            if self._server_maybe(name, records) or name in self.booting:
                self.powered_off.pop(name, None)
                continue  # cut over (or a server maybe booted): the source stays off
            line = self._settle(name, record)
            if line:
                left_off.append(line)
        return left_off

    def _shutting_down(self, name: str, attrs: Mapping[str, Any]) -> str:
        """After a graceful shutdown ferry asked for timed out (`shutdown_asked_at`), the guest
        may still be going off: vSphere's ShutdownGuest does not wait, and there is no cancel
        (break-it 12e item 6: the settle found the VM still poweredOn, said "source already
        powered on (not by ferry)" and forgot ferry did it; the guest went off seconds later).
        A source still powered on whose guest does not say 'running' (guest.guestState:
        shuttingDown, or Tools already stopped) is waited for, up to the spec's
        power_off.timeout once more; off by then, it is powered back on by the caller. Returns
        '' for that (and for a guest that runs: it did not go off), else the loud line said of
        a guest still going off (the record is kept: the next plan warns that ferry powered it
        off)."""
        asked = attrs.get(SHUTDOWN_ASKED_AT)
        vm_ref = self.a._vm(name)
        if not asked or self._power_state(vm_ref) != POWERED_ON:
            return ""
        if guest_state(self.ctx.si, vm_ref) == "running":
            return ""
        if wait_power_state(self.ctx.si, vm_ref, POWERED_OFF, self._shutdown_timeout(name)):
            return ""
        guest = guest_state(self.ctx.si, vm_ref)
        if guest == "running":
            return ""
        at = time.strftime("%H:%M:%S UTC", time.gmtime(float(asked)))
        return (
            f"{Address('vm', name)}: source still shutting down (guest {guest}): the graceful "
            f"shutdown ferry asked for at {at} has not ended and cannot be cancelled; the source "
            "will go off: power it on once it is off (ferry does not power on a guest that is "
            "going off)"
        )

    def _shutdown_timeout(self, name: str) -> float:
        """The spec's power_off.timeout for the VM (seconds), as planned; 300 when unset."""
        snapshot = self.a.changes.get(str(Address("vm", name, "snapshot")))
        power = dict((snapshot.after if snapshot else None) or {}).get("power_off") or {}
        return float(power.get("timeout") or 300)

    def _server_maybe(self, name: str, records: Mapping[str, ResourceRecord]) -> bool:
        """A server was (maybe) booted from the VM's volumes: a server record, except one in
        progress whose server the cloud does not have (a boot killed before it was made, or its
        half-made server deleted since: the cutover runs again; break-it 12d item 1)."""
        record = records.get(str(Address("vm", name, "server")))
        if record is None:
            return False
        if record.status is not Status.IN_PROGRESS:
            return True
        return compute.find_server(self.ctx.conn, self.a.uuids[name] or "") is not None

    def _settle(self, name: str, record: ResourceRecord) -> str:
        attrs = dict(record.attributes)
        since = left_off_line(name, float(attrs[POWERED_OFF_AT]))
        if self._on_failure(name) == "leave_off":
            self.powered_off.pop(name, None)  # left off as the spec says: nothing more to do
            self.ctx.say(name, since)
            if self.ctx.events is not None:
                self.ctx.events.emit("source_left_off", vm=name, since=attrs[POWERED_OFF_AT])
            return since
        try:  # someone may have powered it on since (HA, a person): then not ferry
            going = self._shutting_down(name, attrs)
            if going:  # never 'powered on' of a guest going off, nor a power-on during it
                self.ctx.say(name, going)
                if self.ctx.events is not None:
                    self.ctx.events.emit("source_left_off", vm=name, since=attrs[POWERED_OFF_AT])
                return going
            powered = power_on(self.ctx.si, self.a._vm(name))
        except FerryError as exc:
            line = f"{since}: powering it back on failed: {exc}"
            self.ctx.say(name, line)
            return line
        self.powered_off.pop(name, None)
        asked = attrs.get(SHUTDOWN_ASKED_AT)
        for key in ("source_power", "powered_off", POWERED_OFF_AT, SHUTDOWN_ASKED_AT):
            attrs.pop(key, None)
        address = record.address
        said = _settled_line(name, powered is not False, bool(asked))
        try:
            if record.status is Status.IN_PROGRESS and not attrs.get("protection"):
                self.a._write([], [address])  # nothing of a conversion happened that is kept
            else:
                self.a._write([ResourceRecord(address, "conversion", record.status, attrs)], [])
        except StateError as exc:
            said += f"; state not written: {brief(exc)}"
        self.ctx.say(name, said)
        if self.ctx.events is not None:
            self.ctx.events.emit("source_on", vm=name)
        return said if "state not written" in said else ""

    def _settle_unrecorded(self, cause: StateError) -> list[str]:
        """settle_sources without the state: each source this apply powered off (its own
        knowledge, `powered_off`) is powered back on unless on_failure: leave_off, or its server
        may have booted (`booting`), or another ferry holds the state's lock now (that apply
        owns the cutover). Returns a line for each, saying the source's power and what the
        state still says."""
        lines = []
        unwritten = f"state not written: {brief(cause)}"
        for name, since in self.powered_off.items():
            off = left_off_line(name, since)
            if name in self.booting:
                line = f"{Address('vm', name)}: source left off: its server may have booted"
            elif isinstance(cause, StateLockedError):
                line = f"{off}; left as it is (another ferry holds the state now)"
            elif self._on_failure(name) == "leave_off":
                line = f"{off} (on_failure: leave_off)"
            else:
                line = self._power_on_unrecorded(name, off)
            on = "source powered back on" in line or ALREADY_ON in line
            if not on and self.ctx.events is not None:
                self.ctx.events.emit("source_left_off", vm=name, since=since)
            line += f"; {unwritten}"
            self.ctx.say(name, line)
            lines.append(line)
        return lines

    def _power_on_unrecorded(self, name: str, off: str) -> str:
        """The source powered back on without the state; the line says what the state still
        holds (the next apply finds the source running and records it so)."""
        try:
            powered = power_on(self.ctx.si, self.a._vm(name))
        except FerryError as exc:
            return f"{off}: powering it back on failed: {one_line(str(exc))}"
        if self.ctx.events is not None:
            self.ctx.events.emit("source_on", vm=name)
        done = "source powered back on" if powered else ALREADY_ON
        return (
            f"{Address('vm', name)}: {done} (ferry powered it off at "
            f"{time.strftime('%H:%M:%S UTC', time.gmtime(self.powered_off[name]))}); the state "
            "still says it is off until the next apply"
        )

    def _power_back_on(self, name: str, attrs: dict[str, Any]) -> None:
        """A cutover undone (back to replicate, destroy) whose source ferry powered off (an
        apply killed past the power-off: nothing settled it) and that has no confirmed server
        (none, or one an interrupted apply booted and this apply deleted before confirming it:
        break-it 12e item 5, neither ran after the destroy): the source goes back on before the
        record that remembers it goes. A confirmed cutover's source stays off.

        Raises VSphereError (the power-on failed: the record stays, the step fails)."""
        server = str(Address("vm", name, "server"))
        confirmed = server in self._records() or (
            server in self.a.changes and name not in self.unconfirmed
        )
        if not attrs.get(POWERED_OFF_AT) or confirmed:
            return  # cut over (a destroy deletes its server too): the source stays off
        at = time.strftime("%H:%M:%S UTC", time.gmtime(float(attrs[POWERED_OFF_AT])))
        why = f"ferry powered it off at {at}"
        if name in self.unconfirmed:
            why += "; the server an interrupted apply booted, never confirmed, was deleted"
        powered = power_on(self.ctx.si, self.a._vm(name))
        said = f"source powered back on ({why})" if powered else ALREADY_ON
        self.ctx.say(name, f"{Address('vm', name)}: {said}")
        if self.ctx.events is not None:
            self.ctx.events.emit("source_on", vm=name)

    def _power_state(self, vm: Any) -> str:
        return power_state(self.ctx.si, vm)

    # -- ports ----------------------------------------------------------------------------------

    def port(self, change: Change) -> None:
        address = Address.parse(change.address)
        if self._torn_down(change, "port_id", compute.delete_port):
            return
        after = dict(change.after or {})
        port, created = compute.ensure_port(
            self.ctx.conn,
            compute.PortSpec(
                name=str(after["name"]),
                vm_uuid=self.a.uuids[address.name] or "",
                index=address.index or 0,
                mac=str(after["mac"]),
                network=str(after["network"]),
                subnet=after.get("subnet"),
                fixed_ip=after.get("fixed_ip"),
                security_groups=tuple(after.get("security_groups") or ()),
            ),
        )
        self.a._write(
            [ResourceRecord(change.address, "port", Status.READY, {**after, "port_id": port.id})],
            [],
        )
        self.ctx.say(
            address.name,
            f"{change.address}: port {port.id} with MAC {after['mac']} "
            + ("created" if created else "found and reused"),
        )

    # -- flavor ---------------------------------------------------------------------------------

    def flavor(self, change: Change) -> None:
        if self._torn_down(change, "flavor_id", compute.delete_flavor):
            return
        after = dict(change.after or {})
        name = Address.parse(change.address).name
        flavor_id, _ = compute.ensure_flavor(
            self.ctx.conn,
            name,
            int(after["vcpus"]),
            int(after["ram_mb"]),
            int(after.get("disk", 0)),
        )
        self.a._write(
            [
                ResourceRecord(
                    change.address, "flavor", Status.READY, {**after, "flavor_id": flavor_id}
                )
            ],
            [],
        )

    # -- the conversion host (pre-migration phase) -------------------------------------------

    def conversion_host(self, change: Change) -> None:
        before = self._attrs(change.address) or dict(change.before or {})
        if self._torn_down(change, "server_id", compute.delete_conversion_host):
            if before.get("security_group_id"):
                compute.delete_security_group(self.ctx.conn, str(before["security_group_id"]))
            return
        after = dict(change.after or {})
        server_id, group_id, created = compute.ensure_conversion_host(
            self.ctx.conn,
            compute.HostSpec(
                name=str(after["name"]),
                image=str(after["image"]),
                flavor=str(after["flavor"]),
                network=str(after["network"]),
                ssh_from=str(after["ssh_from"]),
                security_group=str(after["security_group"]),
                key_pair=after.get("key_pair"),
            ),
        )
        if str(after["name"]) == self.ctx.conversion_host_name or not self.ctx.conversion_host_id:
            self.ctx.conversion_host_id = server_id
        self.ctx.host_ids[str(after["name"])] = server_id
        attrs = {**after, "server_id": server_id, "security_group_id": group_id}
        self.a._write([ResourceRecord(change.address, "conversion_host", Status.READY, attrs)], [])
        self._shared_step(
            f"{change.address}: server {server_id} " + ("booted" if created else "found and reused")
        )

    # -- networks (created once, for the ports on them) --------------------------------------

    def network(self, change: Change) -> None:
        if self._torn_down(change, "network_id", compute.delete_network):
            return
        after = dict(change.after or {})
        network_id, subnet_id, created = compute.ensure_network(
            self.ctx.conn,
            str(after["name"]),
            str(after["cidr"]),
            after.get("gateway"),
            bool(after.get("dhcp", True)),
        )
        self.a._write(
            [
                ResourceRecord(
                    change.address,
                    "network",
                    Status.READY,
                    {**after, "network_id": network_id, "subnet_id": subnet_id},
                )
            ],
            [],
        )
        self._shared_step(
            f"{change.address}: network {network_id} "
            + ("created" if created else "found and reused")
        )

    def _shared_step(self, line: str) -> None:
        """A step of an object no single VM owns (a network, a conversion host): an event for
        the console and the apply log; no VM's log."""
        if self.ctx.events is not None:
            self.ctx.events.emit("step", vm="", message=line)

    # -- conversion -----------------------------------------------------------------------------

    def conversion(self, change: Change) -> None:
        """Protect the volumes (a Cinder snapshot each, with the changeId it holds), convert
        the guest, and record the content epoch of every volume it converted: the server boots
        only from volumes still at those epochs."""
        address = Address.parse(change.address)
        if change.action in (Action.DELETE, Action.FORGET):
            attrs = self._attrs(change.address)
            for volume_id in list(attrs.get("protection") or {}):
                self.release_protection(address.name, volume_id)
            self._power_back_on(address.name, attrs)
            self.a._write([], [change.address])
            return
        after = dict(change.after or {})
        keys = [int(d["key"]) for d in after["disks"]]
        volume_ids = self._volume_ids(address.name, keys)
        unconverted = "the volumes are as the last sync left them"
        self.go_ahead(address.name, "the conversion", unconverted)
        # an earlier attempt's (a sync drops its own first), also of a disk the spec dropped
        # since: its volume would keep a snapshot no record names and never be deletable
        recorded = list(self._attrs(change.address).get("protection") or {})
        for volume_id in dict.fromkeys([*volume_ids, *recorded]):
            self.release_protection(address.name, volume_id)
        held = {
            v: self._disk(address.name, k).get("change_id")
            for k, v in zip(keys, volume_ids, strict=True)
        }
        protection = {
            v: compute.protection_snapshot(self.ctx.conn, v, f"ferry-protect-{v[:8]}")
            for v in volume_ids
        }
        attrs = {**self._attrs(change.address), **after, "protection": protection}
        attrs |= {"protected_change_ids": held, "epochs": {}}
        attrs[RECORDED_HOST] = self.a.host_for(address.name)[0]  # where it attaches, converts
        self.a._write([ResourceRecord(change.address, "conversion", Status.IN_PROGRESS, attrs)], [])
        self.ctx.say(address.name, f"{change.address}: {len(protection)} volume(s) protected")
        if after.get("tool"):
            try:
                self.go_ahead(address.name, "the conversion", unconverted)
                attrs["seconds"] = round(self._convert(address.name, after, volume_ids), 1)
            except FerryError:
                self.restore(address.name)
                raise
            for key in keys:  # the conversion wrote them: their content is a new epoch
                self._new_epoch(address.name, key)
        attrs["epochs"] = {str(k): self._disk(address.name, k).get("epoch") for k in keys}
        attrs["at"] = time.time()
        self.a._write([ResourceRecord(change.address, "conversion", Status.READY, attrs)], [])
        self.ctx.say(
            address.name,
            f"{change.address}: converted in {duration(attrs['seconds'])}"
            if after.get("tool")
            else f"{change.address}: no conversion (convert: false)",
        )

    def release_protection(self, name: str, volume_id: str) -> None:
        """Before a volume is written again (a sync, or a new protection): its protection
        snapshot from an earlier conversion goes. The volume is first reverted to it when a
        conversion may have changed the volume since AND no sync wrote it after the snapshot
        was taken (the changeId the snapshot holds is still the volume's): never to a snapshot
        older than the last sync, whose writes it would erase."""
        address = str(Address("vm", name, "conversion"))
        with self._revert_lock:  # volume syncs of one VM run in parallel
            record = self._records().get(address)
            attrs = dict(record.attributes) if record else {}
            protection = dict(attrs.get("protection") or {})
            snapshot_id = protection.pop(volume_id, None)
            if record is None or snapshot_id is None:
                return
            held = dict(attrs.get("protected_change_ids") or {}).pop(volume_id, None)
            _, disk = self._disk_of(name, volume_id)
            fresh = held is not None and held == disk.get("change_id")
            if fresh and attrs.get("tool"):
                volumes.detach(self.ctx.conn, self.a.host_for(name)[1], volume_id)
                self._revert(name, volume_id, str(snapshot_id))
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
            attrs["protection"] = protection
            attrs["protected_change_ids"] = {
                v: c
                for v, c in dict(attrs.get("protected_change_ids") or {}).items()
                if v in protection
            }
            attrs.pop("epochs", None)  # the volume is written again: the conversion is undone
            self.a._write([ResourceRecord(address, "conversion", record.status, attrs)], [])
        if fresh and attrs.get("tool"):
            said = "back to its protection snapshot (undoing the conversion): it converts again"
        elif fresh:
            said = "protection snapshot deleted (no conversion had changed it)"
        else:
            said = (
                "stale protection snapshot deleted, never reverted to: a sync wrote the "
                "volume after it was taken"
            )
        self.ctx.say(name, f"{Address('vm', name)}: volume {volume_id} {said}")

    def _revert(self, name: str, volume_id: str, snapshot_id: str) -> None:
        compute.revert(self.ctx.conn, volume_id, snapshot_id)
        key, _ = self._disk_of(name, volume_id)
        if key is not None:
            self._new_epoch(name, key)

    def _disk(self, name: str, key: int) -> dict[str, Any]:
        return self._attrs(str(Address("vm", name, "disk", key)))

    def _disk_of(self, name: str, volume_id: str) -> tuple[int | None, dict[str, Any]]:
        """The disk key and volume record attributes of one of the VM's volumes."""
        for address, record in self._records().items():
            parsed = Address.parse(address)
            mine = parsed.kind == "vm" and parsed.name == name and parsed.part == "disk"
            if mine and record.attributes.get("volume_id") == volume_id:
                return parsed.index, dict(record.attributes)
        return None, {}

    def _new_epoch(self, name: str, key: int) -> None:
        """The volume's content changed outside a sync (a conversion, a revert): a new epoch."""
        address = str(Address("vm", name, "disk", key))
        record = self._records()[address]
        attrs = {**record.attributes, "epoch": content_epoch()}
        self.a._write([ResourceRecord(address, "volume", record.status, attrs)], [])

    def _convert(self, name: str, after: dict[str, Any], volume_ids: list[str]) -> float:
        """The guest converted in place (host.convert) on the VM's conversion host: in this
        process, or on that host's agent when a broker is configured. Returns its seconds."""
        host_name, host_id = self.a.host_for(name)
        log_name = self.ctx.log_names.get(name, name)
        scripts = firstboot_scripts(after.get("firstboot") or ())  # read here, run there
        target = self.a.targets.get(name, name)
        job = ConvertJob(host_id, volume_ids, target, after, log_name, scripts)
        say = self.a._say(Address("vm", name))
        on = self.a.on_host()
        return on.convert(host_name, job, self.ctx.log_dir, self.ctx.stop, say).seconds

    def restore(self, name: str) -> None:
        """After a failed conversion or boot: volumes back to their protection snapshots (each
        volume's content epoch moves: the conversion is to be redone); the source is powered on
        again after the walk (settle_sources), unless the spec says leave_off."""
        address = str(Address("vm", name, "conversion"))
        record = self._records().get(address)
        attrs = self._attrs(address)
        for volume_id, snapshot_id in (attrs.pop("protection", None) or {}).items():
            self._revert(name, volume_id, str(snapshot_id))
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
        attrs.pop("epochs", None)
        if attrs.get(POWERED_OFF_AT) and record is not None:  # kept until settled
            self.a._write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, attrs)], [])
        else:
            self.a._write([], [address])
        self.ctx.say(
            name, f"{Address('vm', name)}: volumes restored from their protection snapshots"
        )

    # -- server ---------------------------------------------------------------------------------

    def server(self, change: Change) -> None:
        address = Address.parse(change.address)
        record = self._records().get(change.address)
        if change.action is Action.DELETE and record and record.status is Status.IN_PROGRESS:
            self.unconfirmed.add(address.name)  # its conversion's delete powers the source on
        if self._torn_down(change, "server_id", compute.delete_server):
            return
        after = dict(change.after or {})
        if change.action is Action.UPDATE:  # a booted server's boot volume: image metadata
            self._image_metadata(change, address.name, after)
            return
        if change.action is Action.READ:  # found: adopted only beside a source still off
            self.check_source_off(address.name, found=str(after["server_id"]))
            self._served(change, address.name, after, str(after["server_id"]))
            return
        server_id = self._boot(change, address.name, after)
        self._served(change, address.name, after, server_id)

    def _image_metadata(self, change: Change, name: str, after: dict[str, Any]) -> None:
        """The boot volume of a server booted before (`boot_volume_id`, as the plan found it):
        its image metadata set to the plan's, the keys it no longer has removed. Nothing else of
        the server changes. Raises OpenStackError."""
        volume_id = str(after.pop("boot_volume_id"))
        unset = [str(k) for k in after.pop("unset", None) or ()]
        metadata = {str(k): str(v) for k, v in (after.get("image_metadata") or {}).items()}
        if metadata:
            compute.set_image_metadata(self.ctx.conn, volume_id, metadata)
        compute.unset_image_metadata(self.ctx.conn, volume_id, unset)
        record = self._records().get(change.address)
        attrs = {**(record.attributes if record else {}), **after}
        self.a._write([ResourceRecord(change.address, "server", Status.READY, attrs)], [])
        self.ctx.say(
            name,
            f"{change.address}: boot volume {volume_id} image metadata updated "
            f"({', '.join([*metadata, *unset])})",
        )

    def _boot(self, change: Change, name: str, after: dict[str, Any]) -> str:
        uuid = self.a.uuids[name] or ""
        existing = compute.find_server(self.ctx.conn, uuid)
        if existing is not None and existing.status not in compute.SERVER_FAILED:
            self.booting.add(name)
            # an interrupted apply's: reused only while the source is still off (break-it 12d
            # item 2: reused beside a source running again, its writes lost, exit 0)
            self.check_source_off(name, found=str(existing.id))
            compute.wait_active(self.ctx.conn, str(existing.id))
            self.check_source_off(name, found=str(existing.id))
            self.ctx.say(name, f"{change.address}: server {existing.id} found, reused")
            return str(existing.id)
        if existing is not None:
            compute.delete_server(self.ctx.conn, str(existing.id))
        ports = self._port_ids(name)
        spec = compute.ServerSpec(
            name=str(after["name"]),
            vm_uuid=uuid,
            flavor=str(after["flavor"]),
            volume_ids=tuple(self._volume_ids(name, list(after["volumes"]))),
            port_ids=tuple(ports),
            key_pair=after.get("key_pair"),
            image_id=self._boot_image_id(name, after),
        )
        conversion = self._attrs(str(Address("vm", name, "conversion")))
        self._check_converted(name, _disk_keys(after), conversion)
        self.check_source_off(name)
        metadata = boot_volume_metadata(after, conversion)
        if metadata and not spec.image_id:  # an image has its own
            compute.set_image_metadata(self.ctx.conn, spec.volume_ids[0], metadata)
        started = time.monotonic()
        server_id = ""
        self.go_ahead(name, "the boot", "no server was made")
        self.a._write(  # before the boot: from here on the volumes are never synced again
            [ResourceRecord(change.address, "server", Status.IN_PROGRESS, dict(after))], []
        )
        self.booting.add(name)  # from here on the source stays off, with or without the state
        try:
            server_id = str(compute.create_server(self.ctx.conn, spec).id)
            self.a._write(
                [
                    ResourceRecord(
                        change.address,
                        "server",
                        Status.IN_PROGRESS,
                        {**after, "server_id": server_id},
                    )
                ],
                [],
            )
            compute.wait_active(self.ctx.conn, server_id)
            # powered on while the server booted (break-it 12d item 3: never re-read, two
            # copies, exit 0): this server goes, the volumes go back to their protection
            self.check_source_off(name, booted=server_id)
        except FerryError:
            if server_id:
                compute.delete_server(self.ctx.conn, server_id)
            self.booting.discard(name)  # no server: the source may go back on
            self.a._write([], [change.address])
            self.restore(name)
            raise
        self.ctx.say(
            name,
            f"{change.address}: server {server_id} ACTIVE in "
            f"{duration(time.monotonic() - started)}",
        )
        return server_id

    def check_source_off(self, name: str, *, found: str = "", booted: str = "") -> None:
        """Before the server boots, again once it is ACTIVE (`booted`: its id), and before a
        server an interrupted apply booted is adopted (`found`: its id): the source has not run
        since its final sync. It ran when it is powered on now, or when a disk's changeId is not
        the one the final sync recorded (`moved_change_ids`: powered on, written and powered off
        again, which the power state alone never shows; break-it 12e items 1 and 2: a server
        booted or adopted from volumes without those writes, exit 0, then "No changes").
        Powered on since its final snapshot (vSphere HA, a person, a monitoring restart), it has
        written what the volumes lack and would run beside its server with the same MACs
        (break-it 12c item 3, 12d items 2 and 3: booted or reused anyway, exit 0).

        Raises SourceChangedError; the source's power is left as it is. Before the boot,
        nothing is made; once booted, the caller deletes the server and reverts the volumes to
        their protection snapshots (the settle powers a source that is off back on); in both
        cases the next apply powers the source off again, syncs its writes and converts again.
        A found server is not touched: the error says how to go on."""
        vm_ref = self.a._vm(name)
        running = self._power_state(vm_ref) == POWERED_ON
        moved = {} if running else self._moved(name, vm_ref)
        if not running and not moved:
            return
        vm = Address("vm", name)
        if running:
            ran = "the source is running again (powered on since its final snapshot)"
        else:
            ran = f"the source ran since its final sync ({_moved_line(moved)}), though off now"
        if found:
            left = (
                "the source was left running"
                if running
                else "the source stays off while that server exists (no two copies)"
            )
            raise SourceChangedError(
                f"{vm}: server {found}, booted by an interrupted apply, is not adopted: {ran} "
                "and the server lacks its writes since; to keep the source, delete the server "
                f"(openstack server delete {found}) and apply again (the cutover runs again: "
                f"power-off, final sync, boot); {left}"
            )
        if booted:
            now = "was powered on" if running else "ran"
            raise SourceChangedError(
                f"{vm}: the source {now} while its server {booted} booted ({ran}): the "
                "server is deleted and the volumes go back to their protection snapshots (no "
                "server without the source's last writes, no two copies of one machine); the "
                "next apply powers it off and syncs what it wrote"
            )
        raise SourceChangedError(
            f"{vm}: {ran}: no server is booted from volumes without its writes; the next "
            "apply powers it off and syncs what it wrote"
        )

    def _moved(self, name: str, vm_ref: Any) -> dict[int, tuple[str, str]]:
        """The VM's disks whose changeId moved since the sync its record holds."""
        return moved_change_ids(name, self._records(), disk_change_ids(self.ctx.si, vm_ref))

    def _boot_image_id(self, name: str, after: dict[str, Any]) -> str | None:
        """boot: image: the Glance image of the boot disk the server boots from (recorded by
        its image node); None for a server booted from a volume. Raises FerryError when it is
        not uploaded."""
        if after.get("boot") != "image":
            return None
        address = str(Address("vm", name, "image", int(after["image"])))
        record = self._records().get(address)
        if record is None or record.status is not Status.READY:
            raise FerryError(f"{address} is not uploaded: the server boots from it")
        return str(record.attributes["image_id"])

    def _check_converted(self, name: str, keys: list[int], conversion: dict[str, Any]) -> None:
        """Refuse to boot from a volume written since its conversion (a sync, a revert to the
        protection snapshot): its content epoch must be the one the conversion recorded.

        Raises FerryError naming the disks."""
        epochs = dict(conversion.get("epochs") or {})
        disks = {k: self._disk(name, k) for k in keys}
        stale = [
            k
            for k, disk in disks.items()
            if not disk.get("converted")  # a server booted from it before: converted for good
            and (not epochs or epochs.get(str(k)) != disk.get("epoch"))
        ]
        if stale:
            raise FerryError(
                f"{Address('vm', name, 'server')}: not booted: the volume(s) of disk(s) "
                f"{', '.join(map(str, stale))} changed since their conversion (synced or "
                "reverted); the next plan converts them again"
            )

    def _port_ids(self, name: str) -> list[str]:
        """The VM's ports in the source's NIC order."""
        found = []
        for address, record in self._records().items():
            parsed = Address.parse(address)
            if parsed.kind == "vm" and parsed.name == name and parsed.part == "port":
                found.append((parsed.index or 0, str(record.attributes["port_id"])))
        return [port_id for _, port_id in sorted(found)]

    def ready_destination(self, name: str) -> None:
        """Before the power-off, what a fresh plan checks and can change between plan and apply
        (break-it 12c item 8: a port deleted by hand; 12d item 5: the instance quota used up,
        18 s of avoidable downtime in the lab): the ports the server boots with (recorded by
        now: they are made before it), its flavor and key pair exist, and the project's quota
        holds what the cutover adds from the power-off on (the planner's `after_power_off`:
        protection snapshots, the server's instance, vCPUs and RAM; ports and volumes are made
        before). Raises OpenStackError, one line (the source stays on)."""
        self._scripts_readable(name)
        conn = self.ctx.conn
        server = self.a.changes.get(str(Address("vm", name, "server")))
        after = (server.after if server else None) or {}
        flavor = str(after.get("flavor") or "")
        missing = [f"port {p}" for p in self._port_ids(name) if not compute.port_exists(conn, p)]
        size = compute.flavor_size(conn, flavor) if flavor else None
        if flavor and size is None:
            missing.append(f"flavor {flavor}")
        if missing:
            raise OpenStackError(
                f"{Address('vm', name)}: {', '.join(missing)} that its server needs no longer "
                "exist (deleted since the plan): run `ferry plan` again; the source was not "
                "powered off"
            )
        if server is None or server.action not in (Action.CREATE, Action.REPLACE):
            return
        found = list(missing_key_pair(after.get("key_pair"), fetch_key_pairs(conn)))
        found += self._quota_short(name, size)
        if found:
            raise OpenStackError(
                f"{Address('vm', name)}: changed since the plan: "
                f"{'; '.join(c.message for c in found)}; the source was not powered off"
            )

    def _scripts_readable(self, name: str) -> None:
        """The conversion's first-boot scripts (conversion.firstboot) can still be read here,
        where the conversion's job reads them (`firstboot_scripts`): a script moved since the
        plan fails before the power-off, not after it. Raises ConversionError, one line."""
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        if conversion is None or conversion.action not in (Action.CREATE, Action.REPLACE):
            return
        try:
            firstboot_scripts((conversion.after or {}).get("firstboot") or ())
        except ConversionError as exc:
            raise ConversionError(f"{exc}; the source was not powered off") from exc

    def _quota_short(self, name: str, size: tuple[int, int] | None) -> list[Concern]:
        """The planner's quota concern for what the VM's cutover adds from the power-off on,
        against the quotas read now: a server (unless one may exist: its record) of the
        flavor's `size` (vCPUs, MiB), and a protection snapshot per volume (unless they are
        taken: the conversion record's `protection`)."""
        records = self._records()
        servers = 0 if str(Address("vm", name, "server")) in records else 1
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        protects = (
            conversion is not None
            and conversion.action in (Action.CREATE, Action.REPLACE)
            and not self._attrs(str(Address("vm", name, "conversion"))).get("protection")
        )
        protected = [
            int((c.after or c.before or {}).get("size_gib") or 0)
            for c in self.a.changes.values()
            if protects
            and c.kind == "volume"
            and Address.parse(c.address).name == name
            and c.action not in (Action.DELETE, Action.FORGET)
        ]
        cores, ram = size or (0, 0)
        needs = after_power_off(servers, cores, ram, protected)
        quotas = {k: Quota(limit, used) for k, (limit, used) in fetch_quotas(self.ctx.conn).items()}
        return [
            replace(c, message=c.message.replace(", after the VMs listed before it", ""))
            for c in Budget(quotas).take(needs)
        ]

    def _on_failure(self, name: str) -> str:
        """The spec's power_off.on_failure for the VM, as planned ('power_on' | 'leave_off')."""
        snapshot = self.a.changes.get(str(Address("vm", name, "snapshot")))
        power = dict((snapshot.after if snapshot else None) or {}).get("power_off") or {}
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        after = (conversion.after if conversion else None) or {}
        return str(power.get("on_failure") or after.get("on_failure") or "power_on")

    def _served(self, change: Change, name: str, after: dict[str, Any], server_id: str) -> None:
        """The server runs: the volumes are converted for good, the protection goes."""
        records = self._records()
        puts = []
        for key in _disk_keys(after):
            address = str(Address("vm", name, "disk", key))
            record = records[address]
            if record.kind == "volume":  # output: image: the file (its volume is made from it)
                volume_id = str(record.attributes["volume_id"])
                volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_converted": "true"})
            puts.append(
                ResourceRecord(
                    address, record.kind, Status.READY, {**record.attributes, "converted": True}
                )
            )
        conversion = str(Address("vm", name, "conversion"))
        attrs = self._attrs(conversion)
        for snapshot_id in (attrs.pop("protection", None) or {}).values():
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
        if conversion in records:
            puts.append(ResourceRecord(conversion, "conversion", Status.READY, attrs))
        puts.append(
            ResourceRecord(
                change.address,
                "server",
                Status.READY,
                {
                    **after,
                    "server_id": server_id,
                    "at": time.time(),
                    "source_off_at": attrs.get(POWERED_OFF_AT),
                },
            )
        )
        self.a._write(puts, [])


UEFI_METADATA = {"hw_firmware_type": "uefi", "hw_machine_type": "q35"}


def boot_volume_metadata(after: Mapping[str, Any], conversion: Mapping[str, Any]) -> dict[str, str]:
    """The image metadata the boot volume gets before the server boots ({name: value}): the
    plan's (the server change's `image_metadata`: firmware, Secure Boot, bus, NIC model); for a
    plan saved before ferry planned it, UEFI on q35 when the conversion recorded efi firmware."""
    if "image_metadata" in after:
        return {str(k): str(v) for k, v in (after["image_metadata"] or {}).items()}
    return dict(UEFI_METADATA) if conversion.get("firmware") == "efi" else {}


def _settled_line(name: str, powered: bool, asked: bool) -> str:
    """What the settle says of a source it found off and powered back on (`powered`), or found
    running; `asked`: a graceful shutdown ferry asked for had timed out."""
    vm = Address("vm", name)
    if not powered and asked:  # the guest did not go off: it runs, as it did
        return (
            f"{vm}: source still running: the graceful shutdown ferry asked for did not end it "
            "(the guest runs); left as it is"
        )
    if not powered:  # someone powered it on since ferry powered it off
        return f"{vm}: {ALREADY_ON}"
    if asked:
        return f"{vm}: source powered back on (its graceful shutdown ended after ferry's timeout)"
    return f"{vm}: source powered back on"


def _moved_line(moved: Mapping[int, tuple[str, str]]) -> str:
    """'disk 2000's changeId moved from 52…/0 to 52…/1' for each disk, '; '-joined."""
    return "; ".join(
        f"disk {key}'s changeId moved from {was} to {now}"
        for key, (was, now) in sorted(moved.items())
    )


def _disk_keys(after: dict[str, Any]) -> list[int]:
    """The disks a server change boots from: boot: image's boot disk (its image), then the
    disks of its volumes."""
    boot = [int(after["image"])] if after.get("boot") == "image" else []
    return boot + [int(k) for k in after["volumes"]]
