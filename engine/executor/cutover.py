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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.addresses import Address
from engine.conversion import v2v
from engine.errors import FerryError
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.providers.openstack import compute, volumes
from engine.providers.vsphere.power import (
    POWERED_ON,
    PowerOffPolicy,
    power_off,
    power_on,
    power_state,
)

if TYPE_CHECKING:
    from engine.executor.apply import Applier


class Cutover:
    def __init__(self, applier: Applier) -> None:
        self.a = applier
        self.ctx = applier.ctx
        self._revert_lock = threading.Lock()  # volume syncs of one VM run in parallel

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
            out.append(str(record.attributes["volume_id"]))
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

    # -- power (called by the snapshot node in cutover mode) -------------------------------

    def power_off_source(self, name: str, vm: Any, settings: dict[str, Any]) -> str:
        """Record the source's power state, then power it off; returns how it went off."""
        address = str(Address("vm", name, "conversion"))
        attrs = self._attrs(address)
        if "source_power" not in attrs:
            attrs["source_power"] = self._power_state(vm)
            self.a._write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, attrs)], [])
        how = power_off(self.ctx.si, vm, PowerOffPolicy.from_spec(settings))
        self.a._write(
            [
                ResourceRecord(
                    address, "conversion", Status.IN_PROGRESS, {**attrs, "powered_off": how}
                )
            ],
            [],
        )
        self.ctx.say(name, f"{Address('vm', name)}: source powered off ({how})")
        if self.ctx.events is not None:
            self.ctx.events.emit("source_off", vm=name, how=how)
        return how

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
            self.ctx.conn, name, int(after["vcpus"]), int(after["ram_mb"])
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
        self.ctx.conversion_host_id = server_id
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
        address = Address.parse(change.address)
        attrs = self._attrs(change.address)
        if change.action in (Action.DELETE, Action.FORGET):
            for snapshot_id in (attrs.get("protection") or {}).values():
                compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
            self.a._write([], [change.address])
            return
        after = dict(change.after or {})
        volume_ids = self._volume_ids(address.name, [d["key"] for d in after["disks"]])
        record = self.ctx.store.read().resources.get(change.address)
        interrupted = (
            record is not None
            and record.status is Status.IN_PROGRESS
            and bool(record.attributes.get("protection"))
        )
        leftover = dict(record.attributes.get("protection") or {}) if record and interrupted else {}
        if leftover and after.get("tool"):  # volumes whose sync did not revert them already
            self._start_over(address.name, leftover)
        protection = {
            v: compute.protection_snapshot(self.ctx.conn, v, f"ferry-protect-{v[:8]}")
            for v in volume_ids
        }
        attrs = {**attrs, **after, "protection": protection}
        self.a._write([ResourceRecord(change.address, "conversion", Status.IN_PROGRESS, attrs)], [])
        self.ctx.say(address.name, f"{change.address}: {len(protection)} volume(s) protected")
        if not after.get("tool"):
            self.a._write([ResourceRecord(change.address, "conversion", Status.READY, attrs)], [])
            return
        try:
            seconds = self._convert(address.name, after, volume_ids)
        except FerryError:
            self.restore(address.name, after.get("on_failure", "power_on"))
            raise
        attrs["seconds"] = round(seconds, 1)
        self.a._write([ResourceRecord(change.address, "conversion", Status.READY, attrs)], [])
        self.ctx.say(address.name, f"{change.address}: converted in {seconds:.0f} s")

    def revert_interrupted(self, name: str, volume_id: str) -> None:
        """Before a volume of an interrupted conversion (a killed apply) is synced again: back to
        its protection snapshot (the conversion may have half-changed it), and that snapshot
        forgotten — the conversion takes a fresh one after this sync."""
        address = str(Address("vm", name, "conversion"))
        with self._revert_lock:
            record = self.ctx.store.read().resources.get(address)
            if record is None or record.status is not Status.IN_PROGRESS:
                return
            protection = dict(record.attributes.get("protection") or {})
            snapshot_id = protection.pop(volume_id, None)
            if snapshot_id is None:
                return
            volumes.detach(self.ctx.conn, self.ctx.conversion_host_id, volume_id)
            compute.revert(self.ctx.conn, volume_id, str(snapshot_id))
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
            attrs = {**record.attributes, "protection": protection}
            self.a._write([ResourceRecord(address, "conversion", Status.IN_PROGRESS, attrs)], [])
        self.ctx.say(
            name,
            f"{Address('vm', name)}: volume {volume_id} back to its protection snapshot: an "
            "interrupted conversion starts over from the protection snapshots",
        )

    def _start_over(self, name: str, protection: dict[str, str]) -> None:
        """A conversion interrupted (a killed apply) may have half-changed the guest: detach
        what it left attached, put every volume back to its protection snapshot, convert again."""
        for volume_id, snapshot_id in protection.items():
            volumes.detach(self.ctx.conn, self.ctx.conversion_host_id, volume_id)
            compute.revert(self.ctx.conn, volume_id, snapshot_id)
        self.ctx.say(
            name,
            f"{Address('vm', name)}: an interrupted conversion starts over from the protection "
            "snapshots",
        )

    def _convert(self, name: str, after: dict[str, Any], volume_ids: list[str]) -> float:
        if str(after.get("guest_id") or "").startswith("windows"):
            v2v.check_windows_drivers()
        host = self.ctx.conversion_host_id
        attached: list[str] = []
        try:
            paths = []
            for volume_id in volume_ids:
                volumes.attach(self.ctx.conn, host, volume_id)
                attached.append(volume_id)
                paths.append(self.ctx.devices.device(self.ctx.conn, volume_id, host))
            guest = v2v.Guest(
                name=self.a.targets.get(name, name),
                disks=tuple(
                    v2v.GuestDisk(path, v2v.bus_of(int(d["controller_key"])))
                    for path, d in zip(paths, after["disks"], strict=True)
                ),
                macs=tuple(after.get("macs") or ()),
                firmware=after.get("firmware"),
                memory_mb=int(after.get("memory_mb") or 1024),
                vcpus=int(after.get("vcpus") or 1),
            )
            self.ctx.say(
                name,
                f"{Address('vm', name)}: converting with virt-v2v-in-place (log {self._log(name)})",
            )
            options = v2v.Options(
                firstboot=tuple(Path(p) for p in after.get("firstboot") or ()),
                debug=bool(after.get("debug")),
                cancel=self.ctx.stop,  # Ctrl-C: stopped, then restored like a failed conversion
            )
            return v2v.convert(guest, self._log(name), options)
        finally:
            for volume_id in attached:
                volumes.detach(self.ctx.conn, host, volume_id)

    def restore(self, name: str, on_failure: str) -> None:
        """After a failed conversion or boot: volumes back to their protection snapshots, the
        conversion to be redone, the source powered on again (unless the spec says leave_off)."""
        address = str(Address("vm", name, "conversion"))
        attrs = self._attrs(address)
        for volume_id, snapshot_id in (attrs.get("protection") or {}).items():
            compute.revert(self.ctx.conn, volume_id, str(snapshot_id))
            compute.delete_snapshot(self.ctx.conn, str(snapshot_id))
        self.a._write([], [address])
        self.ctx.say(
            name, f"{Address('vm', name)}: volumes restored from their protection snapshots"
        )
        if on_failure == "power_on" and attrs.get("source_power") == POWERED_ON:
            power_on(self.ctx.si, self.a._vm(name))
            self.ctx.say(name, f"{Address('vm', name)}: source powered back on")

    # -- server ---------------------------------------------------------------------------------

    def server(self, change: Change) -> None:
        address = Address.parse(change.address)
        if self._torn_down(change, "server_id", compute.delete_server):
            return
        after = dict(change.after or {})
        if change.action is Action.READ:
            self._served(change, address.name, after, str(after["server_id"]))
            return
        server_id = self._boot(change, address.name, after)
        self._served(change, address.name, after, server_id)

    def _boot(self, change: Change, name: str, after: dict[str, Any]) -> str:
        uuid = self.a.uuids[name] or ""
        existing = compute.find_server(self.ctx.conn, uuid)
        if existing is not None and existing.status not in compute.SERVER_FAILED:
            compute.wait_active(self.ctx.conn, str(existing.id))
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
        )
        conversion = self._attrs(str(Address("vm", name, "conversion")))
        if conversion.get("firmware") == "efi":
            compute.mark_uefi(self.ctx.conn, spec.volume_ids[0])
        started = time.monotonic()
        server_id = ""
        self.a._write(  # before the boot: from here on the volumes are never synced again
            [ResourceRecord(change.address, "server", Status.IN_PROGRESS, dict(after))], []
        )
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
        except FerryError:
            if server_id:
                compute.delete_server(self.ctx.conn, server_id)
            self.a._write([], [change.address])
            self.restore(name, self._on_failure(name))
            raise
        self.ctx.say(
            name,
            f"{change.address}: server {server_id} ACTIVE in {time.monotonic() - started:.0f} s",
        )
        return server_id

    def _port_ids(self, name: str) -> list[str]:
        """The VM's ports in the source's NIC order."""
        found = []
        for address, record in self._records().items():
            parsed = Address.parse(address)
            if parsed.kind == "vm" and parsed.name == name and parsed.part == "port":
                found.append((parsed.index or 0, str(record.attributes["port_id"])))
        return [port_id for _, port_id in sorted(found)]

    def _on_failure(self, name: str) -> str:
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        return str(((conversion.after if conversion else None) or {}).get("on_failure", "power_on"))

    def _served(self, change: Change, name: str, after: dict[str, Any], server_id: str) -> None:
        """The server runs: the volumes are converted for good, the protection goes."""
        records = self._records()
        puts = []
        for key in after["volumes"]:
            address = str(Address("vm", name, "disk", key))
            record = records[address]
            volume_id = str(record.attributes["volume_id"])
            volumes.set_metadata(self.ctx.conn, volume_id, {"ferry_converted": "true"})
            puts.append(
                ResourceRecord(
                    address, "volume", Status.READY, {**record.attributes, "converted": True}
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
                {**after, "server_id": server_id, "at": time.time()},
            )
        )
        self.a._write(puts, [])
