"""The settle: what happens to a cutover's source after the walk (done, failed or stopped) and
when a cutover is undone. A source ferry powered off that has no server is powered back on,
unless the spec says `on_failure: leave_off` or a server may have booted (never two running
copies); a guest still going off after a graceful shutdown that timed out is waited for once
more. Without the state, from what this apply knows it did.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from engine.addresses import Address
from engine.errors import (
    FerryError,
    StateError,
    StateLockedError,
    StateUnreachableError,
    StoppedError,
    VSphereError,
    one_line,
)
from engine.executor.cutover_base import (
    POWERED_OFF_AT,
    SHUTDOWN_ASKED_AT,
    CutoverBase,
)
from engine.model.state import VCENTER_OFF_AT, ResourceRecord, Status
from engine.planner.diff.cutover import source_left_off
from engine.providers.openstack import compute
from engine.providers.vsphere.power import (
    POWERED_OFF,
    guest_state,
    power_on,
    wait_power_state,
)

# the settle's word for a source someone else powered on since ferry powered it off
ALREADY_ON = "source already powered on (not by ferry): left as it is"


def left_off_line(name: str, since: float) -> str:
    """The stop message of a source ferry left powered off (the plan and report say the same)."""
    return f"{Address('vm', name)}: {source_left_off(since)}"


def brief(error: StateError) -> str:
    """A state error as the lines that repeat it say it (the state and since when, when it is
    unreachable: the apply's last line has the cause)."""
    return one_line(error.brief if isinstance(error, StateUnreachableError) else str(error))


class Settle(CutoverBase):
    """The settle of a cutover's sources (see the module)."""

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
            if name in self.settled_early:
                continue  # settled when its cutover failed (step_ended), said then
            line = self._settle_vm(name, records)
            if line:
                left_off.append(line)
        return left_off

    def left_off_before(self) -> frozenset[str]:
        """The cutover VMs of this plan whose source an earlier apply powered off and left off
        (their conversion record's powered_off_at): none when the state cannot be read (the
        walk's first step says why)."""
        cutovers = [name for name in self.a.uuids if self._power_off_planned(name)]
        if not cutovers:
            return frozenset()
        try:
            records = self._records()
        except StateError:
            return frozenset()
        off = set()
        for name in cutovers:
            record = records.get(str(Address("vm", name, "conversion")))
            if record is not None and record.attributes.get(POWERED_OFF_AT):
                off.add(name)
        return frozenset(off)

    def _power_off_planned(self, name: str) -> bool:
        """This plan may power VM `name`'s source off (its snapshot step's power_off)."""
        snapshot = self.a.changes.get(str(Address("vm", name, "snapshot")))
        return snapshot is not None and bool((snapshot.after or {}).get("power_off"))

    def _settle_vm(self, name: str, records: Mapping[str, ResourceRecord]) -> str:
        """settle_sources for VM `name`: its line when its source is left off, else ''."""
        if not self._power_off_planned(name):
            return ""  # this apply could not power it off: another's, left as it is
        record = records.get(str(Address("vm", name, "conversion")))
        if record is None or not record.attributes.get(POWERED_OFF_AT):
            return ""
        if self._server_maybe(name, records) or name in self.booting:
            self.powered_off.pop(name, None)
            return ""  # cut over (or a server maybe booted): the source stays off
        return self._settle(name, record)

    def step_began(self, address: str) -> None:
        """A step of the walk begins (counted until step_ended). Raises StoppedError when its
        VM's cutover failed with the source off (step_ended): the step does nothing."""
        name = Address.parse(address).name
        with self._steps_lock:
            failed = self.abandoned.get(name)
            if failed is None:
                self.running[name] += 1
                return
        raise StoppedError(f"not begun: {Address('vm', name)}'s cutover failed at {failed}")

    def step_ended(self, address: str, error: BaseException | None) -> None:
        """A step of the walk ended (`error`: why it failed, None when done). A failure of a
        VM whose source this apply holds off (powered_off), other than a stop, abandons the
        VM's cutover for this apply: its other steps are stopped (Stop.stop_vm: they
        checkpoint and end) and none begins (step_began), and once none runs its source is
        settled at once, not after the walk (break-it 16e H1: the source stayed off 105 s
        after its cutover failed, behind an upload; and behind another VM's replica copy)."""
        name = Address.parse(address).name
        with self._steps_lock:
            self.running[name] -= 1
            if (
                error is not None
                and not isinstance(error, StoppedError)
                and name in self.powered_off
                and name not in self.abandoned
            ):
                self._abandon(name, address)
            settle = name in self.abandoned and not self.running[name]
            settle = settle and name not in self.settled_early
            if settle:
                self.settled_early.add(name)
        if settle:
            try:
                self._settle_vm(name, self._records())
            except FerryError:  # settle_sources does it after the walk, as it can
                self.settled_early.discard(name)

    def _abandon(self, name: str, address: str) -> None:
        """Stop VM `name`'s steps: the step at `address` failed with its source off."""
        with self.gate:  # a boot's go_ahead either came first (booting) or sees the stop
            self.abandoned[name] = address
            self.ctx.stop.stop_vm(name)
        others = " (its other steps end now)" if self.running[name] else ""
        self.ctx.say(
            name,
            f"{Address('vm', name)}: its cutover failed at {address} with the source off by "
            f"ferry{others}: the source is powered back on as soon as none runs (unless "
            "on_failure: leave_off); the next apply resumes the cutover",
        )

    def _shutting_down(self, name: str, attrs: Mapping[str, Any]) -> str:
        """After a graceful shutdown ferry asked for timed out (`shutdown_asked_at`), the guest
        may still be going off: vSphere's ShutdownGuest does not wait, and there is no cancel
        (break-it 12e item 6: the settle found the VM still poweredOn, said "source already
        powered on (not by ferry)" and forgot ferry did it; the guest went off seconds later).
        A source still powered on whose guest does not say 'running' (guest.guestState:
        shuttingDown, or Tools already stopped) is waited for, up to the spec's
        power_off.timeout once more; off by then, it is powered back on by the caller. The same
        for a source ferry was powering off (`powered_off_at`) whose guest says shuttingDown: an
        apply killed during the graceful wait never recorded its ask (break-it 12f F1, B and C).
        Returns '' for that (and for a guest that runs: it did not go off), else the loud line
        said of a guest still going off (the record is kept: the next plan warns that ferry
        powered it off)."""
        vm_ref = self.a._vm(name)
        since = self._going_off(attrs, vm_ref)[0]
        if not since:
            return ""
        if wait_power_state(self.ctx.si, vm_ref, POWERED_OFF, self._shutdown_timeout(name)):
            return ""
        guest = guest_state(self.ctx.si, vm_ref)
        if guest == "running":
            return ""
        at = time.strftime("%H:%M:%S UTC", time.gmtime(float(since)))
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
        for key in (
            "source_power",
            "powered_off",
            POWERED_OFF_AT,
            SHUTDOWN_ASKED_AT,
            VCENTER_OFF_AT,
        ):
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
        try:  # a guest still going off is waited for first, never said "already on"
            going = self._shutting_down(name, {POWERED_OFF_AT: self.powered_off[name]})
            if going:
                return going
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

        A guest still going off from ferry's graceful shutdown is waited for first (see
        _shutting_down). Raises VSphereError (the power-on failed, or the guest is still going
        off: the record stays, the step fails)."""
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
        going = self._shutting_down(name, attrs)  # back-out or destroy during ferry's
        if going:  # graceful shutdown (break-it 12f F1): "already on", the record dropped, off
            raise VSphereError(going)  # seconds later with no word; the record stays
        powered = power_on(self.ctx.si, self.a._vm(name))
        said = f"source powered back on ({why})" if powered else ALREADY_ON
        self.ctx.say(name, f"{Address('vm', name)}: {said}")
        if self.ctx.events is not None:
            self.ctx.events.emit("source_on", vm=name)

    def _on_failure(self, name: str) -> str:
        """The spec's power_off.on_failure for the VM, as planned ('power_on' | 'leave_off')."""
        snapshot = self.a.changes.get(str(Address("vm", name, "snapshot")))
        power = dict((snapshot.after if snapshot else None) or {}).get("power_off") or {}
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        after = (conversion.after if conversion else None) or {}
        return str(power.get("on_failure") or after.get("on_failure") or "power_on")


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
