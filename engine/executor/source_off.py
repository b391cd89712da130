"""A cutover's source: its power-off before the final snapshot (called by the snapshot node in
cutover mode), and the checks before a server boots or is adopted that the source has not run
since its final sync (its power state now, its disks' changeIds against the ones the final sync
recorded).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.addresses import Address
from engine.errors import FerryError, SourceChangedError
from engine.executor.cutover_base import (
    POWERED_OFF_AT,
    SHUTDOWN_ASKED_AT,
    CutoverBase,
)
from engine.model.state import VCENTER_OFF_AT, ResourceRecord, Status
from engine.planner.diff.cutover import moved_change_ids
from engine.providers.vsphere.power import (
    POWERED_ON,
    PowerOffPolicy,
    disk_change_ids,
    power_off,
    powered_on_since,
    vcenter_now,
)


class SourceOff(CutoverBase):
    """The power-off of a cutover's source and the checks that it stayed off (see the module)."""

    def power_off_source(self, name: str, vm: Any, settings: dict[str, Any]) -> str:
        """Record the source's power state, then power it off; returns how it went off. The
        time of the first power-off by ferry is kept (`powered_off_at`, epoch seconds) until
        the source is powered back on: downtime runs from it, across applies."""
        address = str(Address("vm", name, "conversion"))
        record = self._records().get(address)
        status = record.status if record is not None else Status.IN_PROGRESS
        attrs = self._attrs(address)
        power = self._power_state(vm)
        # a guest still going off from ferry's graceful shutdown (an apply killed in the wait)
        # is waited for, not asked again, and its first power-off kept: the downtime runs
        # from it (break-it 12f F3: "powered back on by an apply …", downtime from the 2nd)
        going = self._going_off(attrs, vm, power)[0]
        fresh = POWERED_OFF_AT not in attrs or (power == POWERED_ON and not going)
        # as it is now: ferry has not powered it off (an earlier attempt's 'poweredOff', the
        # source powered on since, would make this power-off one nothing powers back on:
        # break-it 12c item 4), or it runs again (powered back on by an apply that could not
        # record it: item 6)
        if fresh:
            attrs["source_power"] = power
            attrs.pop(POWERED_OFF_AT, None)
            if power == POWERED_ON:  # recorded before the call: a kill
                attrs[POWERED_OFF_AT] = time.time()  # in between still says ferry did it
        since = float(attrs.get(POWERED_OFF_AT) or 0.0)
        attrs[VCENTER_OFF_AT] = vcenter_now(self.ctx.si).isoformat()  # before this final sync

        def commit() -> None:  # known without the state, should it be lost from here
            if since:
                self.powered_off[name] = since

        # a stop before this point powers nothing off (break-it 12e item 4: a Ctrl-C during
        # ready_destination hard-powered production off, and with leave_off left it off)
        left = "still going off from ferry's graceful shutdown" if going else f"as it was ({power})"
        self.go_ahead(name, "the power-off", f"the source is left {left}", commit)
        try:
            self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
        except BaseException:
            self.powered_off.pop(name, None)  # not powered off: nothing to put back
            raise
        asked = [going] if going else []  # when the guest accepted a graceful shutdown
        try:
            how = power_off(
                self.ctx.si,
                vm,
                PowerOffPolicy.from_spec(settings),
                lambda: asked.append(time.time()),
                self.ctx.stop,
                asked=bool(going),
            )
        except FerryError:
            if asked:  # timed out: the guest may go on shutting down (break-it 12e item 6)
                attrs[SHUTDOWN_ASKED_AT] = asked[0]
                self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
            raise
        attrs.pop(SHUTDOWN_ASKED_AT, None)
        attrs["powered_off"] = how
        self.a._write([ResourceRecord(address, "conversion", status, attrs)], [])
        said = how
        if going and how == "graceful":
            at = time.strftime("%H:%M:%S UTC", time.gmtime(going))
            said += f": the guest finished the shutdown ferry asked for at {at}, not asked again"
        self.ctx.say(name, f"{Address('vm', name)}: source powered off ({said})")
        if self.ctx.events is not None:
            self.ctx.events.emit("source_off", vm=name, how=how, since=attrs.get(POWERED_OFF_AT))
        return how

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
        records = {} if running else self._records()  # one state read for both checks
        moved = {} if running else self._moved(name, vm_ref, records)
        ons = [] if running or moved else self._powered_on(name, vm_ref, records)
        if not running and not moved and not ons:
            return
        vm = Address("vm", name)
        if running:
            ran = "the source is running again (powered on since its final snapshot)"
        elif moved:
            ran = f"the source ran since its final sync ({_moved_line(moved)}), though off now"
        else:
            ran = (
                f"the source ran since its final sync (powered on at {_at(ons[-1])}, vCenter's "
                "events), though off now"
            )
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

    def _powered_on(
        self, name: str, vm_ref: Any, records: Mapping[str, ResourceRecord]
    ) -> list[datetime]:
        """When vCenter logged the source powered on (or resumed) since ferry took charge of it
        for its final sync (`vcenter_off_at`): a disk without changed block tracking has no
        changeId to move, and a power cycle of such a VM shows nowhere else. [] for a record
        made before ferry kept that time."""
        record = records.get(str(Address("vm", name, "conversion")))
        since = record.attributes.get(VCENTER_OFF_AT) if record is not None else None
        if not since:
            return []
        return powered_on_since(self.ctx.si, vm_ref, datetime.fromisoformat(str(since)))

    def _moved(
        self, name: str, vm_ref: Any, records: Mapping[str, ResourceRecord]
    ) -> dict[int, tuple[str, str]]:
        """The VM's disks whose changeId moved since the sync its record holds."""
        return moved_change_ids(name, records, disk_change_ids(self.ctx.si, vm_ref))


def _at(when: datetime) -> str:
    """A vCenter time for people: 'HH:MM:SS UTC'."""
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


def _moved_line(moved: Mapping[int, tuple[str, str]]) -> str:
    """'disk 2000's changeId moved from 52…/0 to 52…/1' for each disk, '; '-joined."""
    return "; ".join(
        f"disk {key}'s changeId moved from {was} to {now}"
        for key, (was, now) in sorted(moved.items())
    )
