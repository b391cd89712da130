"""Applying a plan's cutover changes: ports with the source MACs, a flavor when asked, the
protection snapshots and the guest conversion, and the server booted from the volumes.

Order (the plan's graph): the source was powered off before its final snapshot and the final
delta was copied; then the volumes are protected (one Cinder snapshot each), converted in place
on the conversion host, and the server boots from them. A failed conversion or boot deletes the
half-made server, reverts every volume to its protection snapshot and (unless the spec says
`on_failure: leave_off`) powers the source back on: the next apply syncs a delta and tries again.
After the server is ACTIVE the volumes are marked converted and the protection snapshots go.

Cutover's parts, by concern: the state they share (cutover_base), the source's power-off and
the checks that it stayed off (source_off), the destination checks before the power-off
(destination_checks), the protection snapshots (protection) and the settle of the sources after
the walk (settle).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.addresses import Address
from engine.errors import FerryError, OpenStackError
from engine.executor.cutover_base import POWERED_OFF_AT, foreign_server
from engine.executor.destination_checks import DestinationChecks
from engine.executor.host import ConvertJob, firstboot_scripts
from engine.executor.protection import Protection
from engine.executor.settle import Settle
from engine.executor.source_off import SourceOff
from engine.model.plan import Action, Change
from engine.model.state import RECORDED_HOST, ResourceRecord, Status
from engine.planner.diff.lineage import LABEL
from engine.planner.diff.volumes import FOUND_LINEAGE
from engine.providers.openstack import compute, volumes
from engine.providers.openstack.read import handed
from engine.units import duration


class Cutover(Settle, SourceOff, DestinationChecks, Protection):
    """Applies a plan's cutover changes (see the module); the settle, the source's
    power-off and checks, the destination checks and the protection snapshots are its parts
    (engine.executor.settle, source_off, destination_checks, protection)."""

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

    # -- ports ----------------------------------------------------------------------------------

    def port(self, change: Change) -> None:
        """The NIC's port: made (or this state's own, a killed apply's, reused; one the plan
        adopts, found unlabelled or of a state --adopt-lineage names, relabelled), labelled with
        this state's lineage (an older ferry's recorded port), or deleted. A recorded port that
        another ferry state manages now is not deleted. Raises OpenStackError."""
        address = Address.parse(change.address)
        before = self._attrs(change.address) or dict(change.before or {})
        if change.action in (Action.DELETE, Action.REPLACE) and before.get("port_id"):
            self._check_port_owned(change.address, str(before["port_id"]))
        if self._torn_down(change, "port_id", compute.delete_port):
            return
        after = dict(change.after or {})
        if change.action is Action.UPDATE and after.pop(LABEL, None):
            self._label_port(change.address, before)
            return
        adopts = after.pop(FOUND_LINEAGE, None)
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
                lineage=self.a.lineage,
                adopts=None if adopts is None else str(adopts),
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

    def _check_port_owned(self, address: str, port_id: str) -> None:
        """Right before a step deletes a port this state records: its description's ferry_state
        must name this state (or none). Raises OpenStackError; nothing is deleted."""
        other = compute.port_lineage(self.ctx.conn, port_id)
        if other and self.a.lineage and other != self.a.lineage:
            raise OpenStackError(
                f"{address}: {handed('port', port_id, other, 'deleted')}; plan again (a new "
                "plan never deletes it)"
            )

    def _label_port(self, address: str, before: dict[str, Any]) -> None:
        """Stamp this state's lineage on a port it records that carries none (made by an older
        ferry: engine.planner.diff.lineage), description only. Raises OpenStackError."""
        port_id = str(before["port_id"])
        compute.label_port(self.ctx.conn, port_id, self.a.lineage)
        self.a._write([ResourceRecord(address, "port", Status.READY, before)], [])
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: port {port_id} labelled with this state's lineage",
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
            self._undo_conversion(change, address.name)
            return
        after = dict(change.after or {})
        keys = [int(d["key"]) for d in after["disks"]]
        volume_ids = self._volume_ids(address.name, keys)
        unconverted = "the volumes are as the last sync left them"
        self.go_ahead(address.name, "the conversion", unconverted)
        # an earlier attempt's (a sync drops its own first), also of a disk the spec dropped
        # since: its volume would keep a snapshot no record names and never be deletable
        recorded = list(self._attrs(change.address).get("protection") or {})
        lost = [
            volume_id
            for volume_id in dict.fromkeys([*volume_ids, *recorded])
            if self.release_protection(address.name, volume_id)
        ]
        if lost:  # no sync in this plan copied them again: never converted and booted so
            raise FerryError(
                f"{change.address}: volume(s) {', '.join(lost)} hold writes their gone "
                "protection snapshots cannot undo: not converted; the next plan copies them "
                "in full"
            )
        held = {
            v: self._disk(address.name, k).get("change_id")
            for k, v in zip(keys, volume_ids, strict=True)
        }
        protection = {
            v: compute.protection_snapshot(self.ctx.conn, v, f"ferry-protect-{v[:8]}")
            for v in volume_ids
        }
        attrs = {**self._attrs(change.address), **after, "protection": protection}
        attrs |= {"protected_change_ids": held, "epochs": {}, "reverted": []}
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

    def _disk(self, name: str, key: int) -> dict[str, Any]:
        return self._attrs(str(Address("vm", name, "disk", key)))

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
        return on.convert(host_name, job, self.ctx.log_dir, self.ctx.stop.of(name), say).seconds

    # -- server ---------------------------------------------------------------------------------

    def server(self, change: Change) -> None:
        address = Address.parse(change.address)
        record = self._records().get(change.address)
        if change.action is Action.DELETE and record and record.status is Status.IN_PROGRESS:
            self._unconfirmed_gone(address.name, record, change)
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

    def _undo_conversion(self, change: Change, name: str) -> None:
        """A conversion record's delete (back to replicate, a destroy, a VM out of the spec):
        the source ferry powered off goes back on first (it is production; its record drops
        powered_off_at: a failure below no longer leaves it off, break-it 12g F1), then each
        protection snapshot goes, reverted to where something wrote the volume since (not for
        a volume this plan deletes), then the record."""
        record = self._records().get(change.address)
        attrs = dict(record.attributes) if record is not None else {}
        taken = self._taken_over(name) if change.action is Action.FORGET else ""
        if taken:
            self.a._write([], [change.address])
            self.ctx.say(
                name,
                f"{change.address}: forgotten; ferry state {taken} manages the VM's volumes now: "
                "the source's power and the protection snapshots are left to it",
            )
            return
        self._power_back_on(name, attrs)
        if record is not None and attrs.pop(POWERED_OFF_AT, None) is not None:
            self.a._write([replace(record, attributes=attrs)], [])
        lost = [
            volume_id
            for volume_id in list(attrs.get("protection") or {})
            if self.release_protection(name, volume_id, deleting=self._deleted(name, volume_id))
        ]
        self.a._write([], [change.address])
        unsynced = [v for v in lost if not self._synced_here(name, v)]
        if unsynced:  # the source is on, the record gone: only these volumes stay wrong
            raise FerryError(
                f"{change.address}: volume(s) {', '.join(unsynced)} keep writes their gone "
                "protection snapshots cannot undo and this plan syncs them no more: marked "
                "tainted, the next plan copies them in full"
            )

    def _taken_over(self, name: str) -> str:
        """The lineage of the other ferry state that manages one of VM `name`'s recorded
        volumes now (their `ferry_state`: it adopted the VM with --adopt-lineage), "" when none
        does. Such a state's cutover owns the source's power and the volumes' protection
        snapshots: this state's forget of the conversion record touches neither (break-it
        16d: the old state's destroy powered the source back on beside the other state's
        server, and deleted that state's snapshots). Raises OpenStackError."""
        for address, record in self._records().items():
            parsed = Address.parse(address)
            volume_id = str(record.attributes.get("volume_id") or "")
            if parsed.name != name or parsed.part != "disk" or not volume_id:
                continue
            other = volumes.managed_by(self.ctx.conn, volume_id)
            if other and other != self.a.lineage:
                return other
        return ""

    def _synced_here(self, name: str, volume_id: str) -> bool:
        """This plan syncs (creates or updates) the VM's volume `volume_id`, after the
        conversion's delete (graph.backout_before_syncs)."""
        return any(
            c.kind == "volume"
            and c.action in (Action.CREATE, Action.UPDATE, Action.REPLACE)
            and Address.parse(c.address).name == name
            and volume_id in {(c.before or {}).get("volume_id"), (c.after or {}).get("volume_id")}
            for c in self.a.changes.values()
        )

    def _deleted(self, name: str, volume_id: str) -> bool:
        """This plan deletes (or forgets) the VM's volume `volume_id` (a destroy)."""
        return any(
            c.kind == "volume"
            and c.action in (Action.DELETE, Action.FORGET)
            and Address.parse(c.address).name == name
            and (c.before or {}).get("volume_id") == volume_id
            for c in self.a.changes.values()
        )

    def _unconfirmed_gone(self, name: str, record: ResourceRecord, change: Change) -> None:
        """Before a server an interrupted apply booted and never confirmed is deleted (a
        destroy, or a back-out to replicate: break-it 12f F2): its conversion record says a
        guest may have written the volumes (`server_ran`: the protection snapshots are reverted
        to, not just dropped, even after this apply is killed), and a server the record never
        named (killed before the cloud answered) is found by the VM's instance UUID and
        deleted. The conversion's delete then powers the source back on. Raises
        OpenStackError, StateError."""
        self.unconfirmed.add(name)
        conversion = self._records().get(str(Address("vm", name, "conversion")))
        if conversion is not None and conversion.attributes.get("protection"):
            attrs = {**conversion.attributes, "server_ran": True}
            self.a._write([replace(conversion, attributes=attrs)], [])
        if record.attributes.get("server_id"):
            return
        found = compute.find_server(self.ctx.conn, self.a.uuids.get(name) or "")
        if found is not None:
            compute.delete_server(self.ctx.conn, str(found.id))
            self.ctx.say(name, f"{change.address}: server {found.id} deleted (never confirmed)")

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
        if existing is not None and not self.runs_from_replica(name, existing):
            raise OpenStackError(foreign_server(str(existing.id)))  # the step names the address
        if existing is not None and existing.status not in compute.SERVER_FAILED:
            self.booting.add(name)
            # an interrupted apply's: reused only while the source is still off (break-it 12d
            # item 2: reused beside a source running again, its writes lost, exit 0)
            self.check_source_off(name, found=str(existing.id))
            compute.wait_active(self.ctx.conn, str(existing.id))
            self.check_source_off(name, found=str(existing.id))
            self.ctx.say(name, f"{change.address}: server {existing.id} found, reused")
            self._release_quota(name)
            return str(existing.id)
        if existing is not None:
            compute.delete_server(self.ctx.conn, str(existing.id))
        taken = compute.others_named(self.ctx.conn, str(after["name"]), uuid)
        if taken:  # made since the check before the power-off (break-it 12k M7)
            raise OpenStackError(
                f"server {', '.join(taken)} named {after['name']!r} was made "
                "since the plan and ferry did not boot it: no second one booted; rename or "
                "delete it, or set the VM's target_name, then apply again"
            )
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
        self._release_quota(name)
        return server_id

    def _release_quota(self, name: str) -> None:
        """The VM's server is ACTIVE: the quotas read from now on count what its cutover took
        (see CutoverBase.reserved)."""
        with self.reserved_lock:
            self.reserved.pop(name, None)

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

    def _served(self, change: Change, name: str, after: dict[str, Any], server_id: str) -> None:
        """The server runs: the volumes are converted for good, the protection goes. An image
        VM's disk without a file record (a server adopted by a lost state: break-it 16 F2, a
        KeyError at every apply) is recorded cut over without a file: the server runs from the
        volumes made from its images, and no later plan copies the disk again. Raises
        FerryError (a volume VM's disk without a record), OpenStackError."""
        records = self._records()
        puts = []
        for key in _disk_keys(after):
            address = str(Address("vm", name, "disk", key))
            record = records.get(address)
            if record is None and after.get("boot") in ("image", "volume"):  # output: image
                record = ResourceRecord(address, "disk_file", Status.READY, {"disk_key": key})
            if record is None:
                raise FerryError(
                    f"{change.address}: {address} has no record in this state: the server's "
                    "volumes are not known; plan again"
                )
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


def _disk_keys(after: dict[str, Any]) -> list[int]:
    """The disks a server change boots from: boot: image's boot disk (its image), then the
    disks of its volumes."""
    boot = [int(after["image"])] if after.get("boot") == "image" else []
    return boot + [int(k) for k in after["volumes"]]
