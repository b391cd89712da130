"""A volume's ownership steps: which volume a step writes, whether this state still manages it
(another ferry state may have taken it over since the plan: --adopt-lineage, or by hand), the
adoption of a found volume (its metadata stamped with this state's lineage), the repair of
stale attachments, and the delete (detached first, ferry's snapshots gone). The sync itself is
volume_steps'."""

from __future__ import annotations

from typing import Any

from engine.addresses import Address
from engine.errors import OpenStackError
from engine.executor.replacement import Placement
from engine.model.plan import Action, Change, Plan
from engine.model.state import (
    RECORDED_HOST,
    STAMP_KEY,
    UPDATED_AT,
    ResourceRecord,
    Status,
    changed_outside,
    own_stamp,
)
from engine.planner.diff.attachments import SETTLE_SECONDS, STALE_KEY
from engine.planner.diff.volumes import FOUND_LINEAGE, adopted_lineage, full_copy
from engine.providers.openstack import volumes
from engine.providers.openstack.read import STATE_KEY, handed
from engine.providers.openstack.retry import transient


def check_found_lineage(object_id: str, found: str, now: str | None, mine: str) -> None:
    """Right before an apply adopts an image or volume as its plan found it: it must still be
    managed by the state it was found with (`found`, its `ferry_state` then; "" unlabelled), or
    by this one (`mine`: an interrupted adoption). One another state labelled or took over
    since (`now`) is that state's: a saved `--adopt-lineage unlabeled` plan applied after the
    real state labelled its objects took them, and its destroy deleted production (break-it
    16d F1). Raises OpenStackError (without the address: the failed step names it); nothing
    is changed."""
    if now is None:
        raise OpenStackError(f"{object_id} is gone since the plan: run `ferry plan` again")
    if now in (found, mine):
        return
    raise OpenStackError(
        f"{object_id} is managed by ferry state {now} since this plan was made "
        f"(found {'unlabelled' if not found else f'of ferry state {found}'}): not adopted; "
        "run `ferry plan` again"
    )


class VolumeOwnership(Placement):
    """The Applier's volume ownership steps (see the module)."""

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

    def check_owned(self, address: str, volume_id: str, doing: str, adopts: str = "") -> None:
        """Right before a step deletes or writes a volume this state records (`doing`:
        "deleted", "written"): its `ferry_state` must still name this state (or nothing), or
        `adopts`, the lineage the plan found it with when the step adopts it (adopted_lineage).
        A volume another ferry state took over since the plan was made (--adopt-lineage, or by
        hand) is that state's replica: a saved destroy deleted it, a saved delta wrote it and
        stamped it back (break-it 12e item 3). Raises OpenStackError; nothing is done to it."""
        other = volumes.managed_by(self.ctx.conn, volume_id)
        if other and self.lineage and other not in (self.lineage, adopts):
            raise OpenStackError(
                f"{handed_line(address, volume_id, other, doing)}; plan again (a new plan "
                "never deletes or writes it)"
            )

    def changed_outside(self, address: str, before: dict[str, Any]) -> str:
        """Why the recorded volume is copied in full now, "" when nothing says so: something
        other than ferry attached or changed it since ferry last wrote it (its Cinder
        `updated_at` moved: model.state.changed_outside), also when that happened after the
        plan was made. Not for one the cutover's protection revert brings back to its last
        sync first (Protection.reverts: that undoes whatever was written since). With no value
        recorded, the one the volume's own stamp keeps (model.state.last_known: an agent that
        detached it after the coordinator let go). Raises OpenStackError (not readable)."""
        volume_id = str(before.get("volume_id") or "")
        if not volume_id:
            return ""
        if before.get(UPDATED_AT):
            now, stamp = volumes.updated_at(self.ctx.conn, volume_id), None
        else:  # none recorded: the volume's own stamp of this state's, if any (break-it 12n H1)
            seen = volumes.seen_if_found(self.ctx.conn, volume_id)
            stamp = None if seen is None else own_stamp(seen.metadata, self.lineage)
            if seen is None or stamp is None:
                return ""
            now = seen.updated_at
        name = Address.parse(address).name
        why = changed_outside(before, volume_id, now, stamp)
        if not why or self.cutover.reverts(name, volume_id):
            return ""
        return why

    def label_volume(self, address: str, volume_id: str) -> None:
        """Stamp this state's lineage (`ferry_state`) on a volume it records that carries none
        (made by an older ferry: engine.planner.diff.lineage), metadata only; from then on
        another state's plan neither adopts nor deletes it. Raises OpenStackError (another
        state took it over since the plan)."""
        self.check_owned(address, volume_id, "written")
        volumes.set_metadata(self.ctx.conn, volume_id, {STATE_KEY: self.lineage})
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: volume {volume_id} labelled with this state's lineage",
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
        records = self.ctx.store.read().resources
        for change in self.plan.changes:
            parsed = Address.parse(change.address)
            if change.kind != "volume" or parsed.name != name:
                continue
            if change.action in (Action.DELETE, Action.FORGET, Action.NOOP):
                continue
            self._repair_attachments(change)
            volume_id = self._volume_id(change)
            if volume_id and change.action is not Action.READ:
                adopts = adopted_lineage(change, volume_id)
                try:
                    self.check_owned(change.address, volume_id, "written", adopts)
                except OpenStackError as exc:
                    raise OpenStackError(f"{exc}; the source was not powered off") from exc
            if volume_id and volumes.exists(self.ctx.conn, volume_id):
                record = records.get(change.address)
                try:
                    # Cinder still attaching or detaching it (an interrupted apply's host letting
                    # it go): waited for, bounded, the source still on (break-it 14c F1)
                    volumes.settle(self.ctx.conn, volume_id, SETTLE_SECONDS)
                    if record is not None:  # a copy re-placed from a host the spec dropped (F2)
                        here = self.host_of(change)
                        self._release_elsewhere(
                            change.address, dict(record.attributes), volume_id, here
                        )
                    volumes.check_attachments(self.ctx.conn, volume_id, hosts)
                except OpenStackError as exc:
                    raise OpenStackError(
                        f"{change.address}: {exc}; the source was not powered off"
                    ) from exc
            self._unplanned_full_copy(change, records.get(change.address))

    def _unplanned_full_copy(self, change: Change, record: ResourceRecord | None) -> None:
        """Before a cutover's power-off: a volume the plan syncs as a delta, or whose
        interrupted full copy it resumes (break-it 12m F5: that one starts over from 0), that
        something other than ferry attached or changed since ferry last wrote it (changed_outside:
        a test boot after the plan was made) would be copied in full while the source is off, a
        window the plan did not announce nor count in its downtime estimate. Raises
        OpenStackError (the source stays on: a new plan shows the full copy)."""
        delta = change.action is Action.UPDATE and not full_copy(change)
        if record is None or not (delta or _resumes(change)):
            return
        why = self.changed_outside(change.address, dict(record.attributes))
        if why:
            raise OpenStackError(
                f"{change.address}: {why}: its final sync would be a "
                "full copy, which this plan did not count in the downtime; the source was not "
                "powered off: run `ferry plan` again (it shows the full copy and its downtime)"
            )

    def _adopt(self, change: Change, address: Address) -> None:
        """Take over a volume found by metadata (ferry's, or os-migrate's by name): stamp ferry's
        keys on it so it is found by identity from now on; the next sync is a delta from its
        changeId (or a full copy when it has none)."""
        after = dict(change.after or {})
        found = str(after.pop(FOUND_LINEAGE, None) or "")  # this state's from now on
        volume_id = str(after["volume_id"])
        now = volumes.managed_by(self.ctx.conn, volume_id)
        check_found_lineage(volume_id, found, now, self.lineage)
        self._stamp(address, volume_id, after.get("change_id"))
        # adopted as it is now: what touches it from here on is seen (break-it 12m F1)
        after[UPDATED_AT] = volumes.updated_at(self.ctx.conn, volume_id)
        self._write([ResourceRecord(change.address, "volume", Status.READY, after)], [])
        self.ctx.say(address.name, f"{change.address}: adopted volume {after['volume_id']}")

    def _stamp(self, address: Address, volume_id: str, change_id: object) -> None:
        """Ferry's keys on a volume this state adopts (`_adopt`, `_take_over`), so it is found
        by identity and as this state's from now on; its `ferry_change_id` the plan's, "" when
        the plan trusts none (a protection snapshot of ferry's holds it: a cutover may have
        written it since), nor does a state rebuilt from the cloud then. Its `ferry_updated_at`
        stamp is cleared: one of the state it was found with vouches for nothing of this one's
        (the adoption records the value from now on)."""
        metadata = {
            "ferry_vm": self.uuids[address.name] or "",
            "ferry_disk": str(address.index),
            "ferry_converted": "false",
            STATE_KEY: self.lineage,
            "ferry_change_id": str(change_id or ""),
            STAMP_KEY: "",
        }
        volumes.set_metadata(self.ctx.conn, volume_id, metadata)

    def _take_over(self, change: Change, address: Address, volume_id: str, lineage: str) -> None:
        """The volume an adopt-and-copy step found (of ferry state `lineage`, --adopt-lineage) is
        stamped as this state's before its copy writes a byte (as `_adopt` stamps one adopted as
        it is), so an apply stopped in the copy leaves a volume this state records and manages
        (its next plan resumes the copy), not one its record and metadata disagree on; its
        changeId is the plan's (none when the plan trusts none: copied in full)."""
        self._stamp(address, volume_id, (change.before or {}).get("change_id"))
        self.ctx.say(
            address.name,
            f"{change.address}: adopted volume {volume_id} (of ferry state {lineage}, as planned)",
        )

    def _delete_volume(
        self,
        volume_id: str,
        status: str = "available",
        *,
        of: tuple[str, dict[str, Any]] = ("", {}),
    ) -> None:
        """Delete the volume (one gone already counts as deleted). Awaiting `available`: first
        detached from ferry's conversion host its record names (`of`: the address and record
        attributes; a copy killed mid-way left it attached there, break-it 12h F4: the
        destroy waited 300 s, then failed; said in the VM's log), and
        the snapshots ferry deleted gone (Cinder deletes them asynchronously and refuses a
        volume with snapshots: 12h F1). Raises OpenStackError (a snapshot taken outside ferry
        named, a wait timed out, Cinder refused)."""
        if not volumes.exists(self.ctx.conn, volume_id):
            return
        if status == "available":
            self._detach_deleted(of[0], volume_id, str(of[1].get(RECORDED_HOST) or ""))
            volumes.wait_snapshots_gone(self.ctx.conn, volume_id)
            volumes.wait_volume(self.ctx.conn, volume_id, "available")
        transient(
            lambda: self.ctx.conn.block_storage.delete_volume(volume_id),
            f"deleting volume {volume_id}",
        )

    def _detach_deleted(self, address: str, volume_id: str, host_name: str) -> None:
        """A volume to be deleted, detached from the conversion host `host_name` first."""
        if address and self._detach_from(host_name, volume_id):
            self.ctx.say(
                Address.parse(address).name,
                f"{address}: volume {volume_id} detached from conversion host {host_name} (a "
                "copy interrupted there left it attached), to be deleted",
            )


def handed_line(address: str, volume_id: str, lineage: str, doing: str) -> str:
    """The one line of a volume step refused because another ferry state manages the volume
    now (`lineage`: that state's; `doing`: "deleted" or "written")."""
    return f"{address}: {handed('volume', volume_id, lineage, doing)}"


def handed_since(conn: Any, plan: Plan) -> list[str]:
    """The plan's volume steps that would delete or write a volume another ferry state
    manages now (its `ferry_state` names another lineage than the plan's state, and than the
    one a step that adopts it found it with: adopted_lineage): one line each (handed_line), []
    when none. One volume listing when the plan has such steps (a read
    per step cost a 1,000-VM wave thousands of requests at every apply's start); a volume
    gone since is no one's. Raises OpenStackError."""
    steps = [(c, volume_id) for c in plan.changes if (volume_id := _written_volume(c, plan))]
    if not steps:
        return []
    managing = volumes.lineages(conn)
    out = []
    for change, volume_id in steps:
        other = managing.get(volume_id)
        if other and other not in (plan.state_lineage, adopted_lineage(change, volume_id)):
            doing = "deleted" if change.action is Action.DELETE else "written"
            out.append(handed_line(change.address, volume_id, other, doing))
    return out


def _written_volume(change: Change, plan: Plan) -> str:
    """The id of the recorded volume `change` deletes or writes (a replica, or output: image's
    volume made from an image), "" for any other step (and for a plan of a state not written
    yet, which manages no volume)."""
    volume_id = str((change.before or {}).get("volume_id") or "")
    if change.kind not in ("volume", "image_volume") or not volume_id or not plan.state_lineage:
        return ""
    return "" if change.action in (Action.NOOP, Action.FORGET, Action.READ) else volume_id


def _resumes(change: Change) -> bool:
    """Does `change` resume an interrupted full copy from its checkpoint (the plan counted only
    the rest of the disk), rather than copy from 0?"""
    before, after = change.before or {}, change.after or {}
    started = before.get("copy") == "full" and int(before.get("copied_bytes") or 0) > 0
    return change.action is Action.CREATE and started and after.get("copy") != "full"
