"""A cutover's protection snapshots (one Cinder snapshot per volume, taken before the
conversion): released before a volume is written again (reverted to first when that undoes a
conversion no sync wrote over), and restored after a failed conversion or boot; each revert gives
the volume a new content epoch.
"""

from __future__ import annotations

from typing import Any

from engine.addresses import Address
from engine.errors import FerryError
from engine.executor.cutover_base import POWERED_OFF_AT, CutoverBase, content_epoch
from engine.model.state import (
    CONVERSION_WROTE,
    UNCONFIRMED_SERVER,
    UPDATED_AT,
    ResourceRecord,
    Status,
    changed_outside,
    holds_last_sync,
    written_since_protection,
)
from engine.providers.openstack import compute, volumes

CHANGED_OUTSIDE = "what was written outside ferry"


class Protection(CutoverBase):
    """The protection snapshots of a cutover's volumes (see the module)."""

    def protects(self, name: str, volume_id: str) -> bool:
        """Does VM `name`'s conversion record hold a protection snapshot of `volume_id`?"""
        record = self._records().get(str(Address("vm", name, "conversion")))
        return record is not None and volume_id in dict(record.attributes.get("protection") or {})

    def reverts(self, name: str, volume_id: str) -> bool:
        """Does releasing `volume_id`'s protection snapshot revert the volume to its last sync
        when something wrote it since (the snapshot is held and holds that sync:
        holds_last_sync)? Then what was written since, by anything, is undone."""
        record = self._records().get(str(Address("vm", name, "conversion")))
        if record is None or volume_id not in dict(record.attributes.get("protection") or {}):
            return False
        _, disk = self._disk_of(name, volume_id)
        return holds_last_sync(record.attributes, volume_id, disk.get("change_id"))

    def release_protection(self, name: str, volume_id: str, *, deleting: bool = False) -> bool:
        """Before a volume is written again (a sync, or a new protection) or deleted
        (`deleting`: no revert): its protection snapshot from an earlier conversion goes. The
        volume is first reverted to it when a conversion or an unconfirmed server may have
        changed the volume since AND no sync wrote it after the snapshot was taken (the changeId
        the snapshot holds is still the volume's): never to a snapshot older than the last
        sync, whose writes it would erase.

        True when the volume needed that revert and its snapshot is gone from Cinder (deleted
        outside ferry): what was written since cannot be undone, so the volume record is marked
        tainted (the next plan copies it in full) and the caller's sync copies it in full now
        (break-it 12g F1, F2: the revert failed on the gone snapshot at every apply, after the
        power-off, the source left off). A volume gone too has nothing to undo: False.

        `deleting`: the snapshot goes without a revert; a volume something wrote since
        (written_since_protection) is recorded tainted first, before the snapshot delete: should
        the volume outlive this apply (its delete failed, or the apply was killed before it),
        no later sync trusts it (break-it 12h F1: a delta went on top of the unconfirmed
        guest's bytes, then "No changes")."""
        address = str(Address("vm", name, "conversion"))
        with self._revert_lock:  # volume syncs of one VM run in parallel
            record = self._records().get(address)
            attrs = dict(record.attributes) if record else {}
            protection = dict(attrs.get("protection") or {})
            snapshot_id = protection.pop(volume_id, None)
            if record is None or snapshot_id is None:
                return False
            _, disk = self._disk_of(name, volume_id)
            fresh = holds_last_sync(attrs, volume_id, disk.get("change_id"))
            if deleting:
                said, lost = self._dropped(name, volume_id, str(snapshot_id)), False
            else:
                written = self._written_since(name) or self._outside(volume_id, disk)
                said, lost = self._undo(name, volume_id, str(snapshot_id), fresh, written)
                if fresh and not lost:  # back at its last sync: no full copy for the writer
                    attrs["reverted"] = [*(attrs.get("reverted") or ()), volume_id]
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
            attrs["protection"] = protection
            attrs["protected_change_ids"] = {
                v: c
                for v, c in dict(attrs.get("protected_change_ids") or {}).items()
                if v in protection
            }
            attrs.pop("epochs", None)  # the volume is written again: the conversion is undone
            self.a._write([ResourceRecord(address, "conversion", record.status, attrs)], [])
        self.ctx.say(name, f"{Address('vm', name)}: volume {volume_id} {said}")
        return lost

    def _undo(
        self, name: str, volume_id: str, snapshot_id: str, fresh: bool, written: str
    ) -> tuple[str, bool]:
        """Revert the volume to its protection snapshot when it is `fresh` and was `written`
        since; (what is said of it, whether what was written is lost for good: its snapshot
        gone, the volume record tainted)."""
        if not fresh:
            return "stale protection snapshot deleted, never reverted to: a sync wrote the " \
                "volume after it was taken", False  # fmt: skip
        if not written:
            return "protection snapshot deleted (no conversion had changed it)", False
        if not volumes.exists(self.ctx.conn, volume_id):
            return "is gone (deleted outside ferry): nothing to revert", False
        who = UNCONFIRMED_SERVER if UNCONFIRMED_SERVER in written else CONVERSION_WROTE
        if not compute.snapshot_exists(self.ctx.conn, snapshot_id):
            gone = ("is gone", "it is gone from Cinder (deleted outside ferry)")
            return self._unrevertable(name, volume_id, snapshot_id, gone, who)
        newer = self._reverted_unless_newer(name, volume_id, snapshot_id)
        if newer:
            since = f"snapshot(s) {', '.join(newer)} of the volume taken since, outside ferry"
            refused = f"{since}: Cinder reverts a volume only to its newest snapshot"
            return self._unrevertable(
                name, volume_id, snapshot_id, (f"is not its newest ({since})", refused), who
            )
        said = f"back to its protection snapshot (undoing {written})"
        return said + (": it converts again" if written == CONVERSION_WROTE else ""), False

    def _reverted_unless_newer(self, name: str, volume_id: str, snapshot_id: str) -> list[str]:
        """Revert the volume to its protection snapshot unless snapshots of it were taken since
        (Cinder reverts only to a volume's newest: break-it 12h F2, a backup tool's snapshot
        made the revert fail at every apply); their ids ([]: reverted)."""
        newer = compute.newer_snapshots(self.ctx.conn, volume_id, snapshot_id)
        if newer:
            return newer
        volumes.detach(self.ctx.conn, self.a.host_for(name)[1], volume_id)
        if not self._revert(name, volume_id, snapshot_id):  # one taken since the listing
            return ["(one Cinder found newer)"]
        return []

    def _unrevertable(
        self, name: str, volume_id: str, snapshot_id: str, why: tuple[str, str], who: str
    ) -> tuple[str, bool]:
        """A revert the volume needs cannot happen (`why`: what is recorded, what is said):
        the volume record tainted (the next plan copies it in full); (what is said, True)."""
        recorded, said = why
        stays = f"what {who} wrote stays in it"
        self._taint_unreverted(
            name, volume_id, f"its protection snapshot {snapshot_id} {recorded} and {stays}"
        )
        return (
            f"cannot go back to its protection snapshot {snapshot_id}: {said}, and {stays}: "
            "marked tainted, it is copied in full (never a delta onto it)",
            True,
        )

    def _dropped(self, name: str, volume_id: str, snapshot_id: str) -> str:
        """A protection snapshot about to go without a revert (the plan deletes its volume):
        the volume record tainted first when something wrote the volume since; what is said."""
        who = written_since_protection(self._records(), name)
        if not who:
            return "protection snapshot deleted (no conversion had changed it)"
        stays = f"what {who} wrote stays in it"
        why = f"its protection snapshot {snapshot_id} was deleted, never reverted to (the "
        self._taint_unreverted(name, volume_id, f"{why}volume was to be deleted), and {stays}")
        return (
            f"protection snapshot deleted without a revert (the volume is deleted next): "
            f"{stays}, so it is marked tainted first (copied in full should it stay)"
        )

    def _taint_unreverted(self, name: str, volume_id: str, why: str) -> None:
        """The volume record tainted with `why` (a revert it needed will not happen), and its
        `ferry_change_id` metadata cleared when it exists: a state rebuilt from the
        destination must not adopt it as in sync at that changeId either."""
        key, attrs = self._disk_of(name, volume_id)
        if key is None:
            return
        address = str(Address("vm", name, "disk", key))
        record = ResourceRecord(address, "volume", Status.TAINTED, {**attrs, "tainted": why})
        self.a._write([record], [])
        if volumes.exists(self.ctx.conn, volume_id):
            volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_change_id": ""})

    def _written_since(self, name: str) -> str:
        """What may have written the VM's volumes since their protection snapshots, as said in
        a revert's line ("" when nothing did; model.state.written_since_protection: break-it
        12f F2, the unconfirmed guest's writes stayed under the next delta)."""
        who = written_since_protection(self._records(), name)
        return f"what {who} may have written" if who == UNCONFIRMED_SERVER else who

    def _outside(self, volume_id: str, disk: dict[str, Any]) -> str:
        """What wrote the volume since ferry last did, as said in a revert's line, when its
        Cinder `updated_at` moved since (model.state.changed_outside; "" when it did not)."""
        now = volumes.updated_at(self.ctx.conn, volume_id)
        return CHANGED_OUTSIDE if changed_outside(disk, volume_id, now) else ""

    def _revert(self, name: str, volume_id: str, snapshot_id: str) -> bool:
        """compute.revert, the volume's content epoch moved; False: Cinder refused it (not
        the volume's newest snapshot), nothing done."""
        if not compute.revert(self.ctx.conn, volume_id, snapshot_id):
            return False
        key, _ = self._disk_of(name, volume_id)
        if key is not None:
            self._new_epoch(name, key)
        return True

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
        record = self._records().get(address)
        if record is None:
            raise FerryError(f"{address} has no record in this state: plan again")
        attrs = {**record.attributes, "epoch": content_epoch()}
        volume_id = str(attrs.get("volume_id") or "")
        if volume_id:  # ferry's own write: the volume's updated_at after it
            attrs[UPDATED_AT] = volumes.updated_at(self.ctx.conn, volume_id)
        self.a._write([ResourceRecord(address, "volume", record.status, attrs)], [])

    def restore(self, name: str) -> None:
        """After a failed conversion or boot: volumes back to their protection snapshots (each
        volume's content epoch moves: the conversion is to be redone); the source is powered on
        again after the walk (settle_sources), unless the spec says leave_off."""
        address = str(Address("vm", name, "conversion"))
        record = self._records().get(address)
        attrs = self._attrs(address)
        written = self._written_since(name) or CONVERSION_WROTE
        for volume_id, snapshot_id in (attrs.pop("protection", None) or {}).items():
            said, lost = self._undo(name, volume_id, str(snapshot_id), True, written)
            if not said.startswith("back to"):
                self.ctx.say(name, f"{Address('vm', name)}: volume {volume_id} {said}")
            if not lost:  # kept below while the source is off: the next plan reads it
                attrs["reverted"] = [*(attrs.get("reverted") or ()), volume_id]
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
        attrs.pop("epochs", None)
        if attrs.get(POWERED_OFF_AT) and record is not None:  # kept until settled
            self.a._write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, attrs)], [])
        else:
            self.a._write([], [address])
        self.ctx.say(
            name, f"{Address('vm', name)}: volumes restored from their protection snapshots"
        )
