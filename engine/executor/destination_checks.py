"""A cutover's checks of the destination before the source's power-off: what a fresh plan checks
and can change between plan and apply (the server's ports, flavor and key pair, the project's
quota for what the cutover adds from the power-off on, the first-boot scripts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from engine.addresses import Address
from engine.errors import ConversionError, OpenStackError
from engine.executor.cutover_base import CutoverBase, foreign_server
from engine.executor.host import firstboot_scripts
from engine.model.desired import Concern
from engine.model.observed import Quota
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord
from engine.planner.checks import missing_key_pair
from engine.planner.quota import (
    PER_VOLUME,
    VOLUME_KINDS,
    Budget,
    Held,
    after_power_off,
    volume_demand,
    volume_id,
)
from engine.providers.openstack import compute, volumes
from engine.providers.openstack.read import (
    CINDER_TYPED,
    fetch_default_type,
    fetch_key_pairs,
    fetch_quotas,
)


class DestinationChecks(CutoverBase):
    """The destination checks before a cutover's power-off (see the module)."""

    def ready_destination(self, name: str) -> None:
        """Before the power-off, what a fresh plan checks and can change between plan and apply
        (break-it 12c item 8: a port deleted by hand; 12d item 5: the instance quota used up,
        18 s of avoidable downtime in the lab): the ports the server boots with (recorded by
        now: they are made before it), its flavor and key pair exist, and the project's quota
        holds what the cutover adds from the power-off on (the planner's `after_power_off`:
        the server's instance, vCPUs and RAM; its `volume_demand`: protection snapshots, the
        extends of grown disks, and the volumes not made yet, which hang on the final
        snapshot: a cold cutover of a VM never replicated, whose volume type may be gone since
        the plan: break-it 12i F5, production powered off, then a 404 on the volume create).
        The ports are made before. Raises OpenStackError, one line (the source stays on)."""
        self._scripts_readable(name)
        conn = self.ctx.conn
        server = self.a.changes.get(str(Address("vm", name, "server")))
        after = (server.after if server else None) or {}
        flavor = str(after.get("flavor") or "")
        missing = [f"port {p}" for p in self._port_ids(name) if not compute.port_exists(conn, p)]
        missing += [f"volume type {t}" for t in self._missing_volume_types(name)]
        size = compute.flavor_size(conn, flavor) if flavor else None
        if flavor and size is None:
            missing.append(f"flavor {flavor}")
        if missing:
            raise OpenStackError(
                f"{Address('vm', name)}: {', '.join(missing)} that its server needs no longer "
                f"exist{'s' if len(missing) == 1 else ''} (deleted since the plan): run `ferry "
                "plan` again; the source was not powered off"
            )
        if server is None or server.action not in (Action.CREATE, Action.REPLACE):
            return
        said = [c.message for c in missing_key_pair(after.get("key_pair"), fetch_key_pairs(conn))]
        said += [c.message for c in self._quota_short(name, size)]
        if str(Address("vm", name, "server")) not in self._records():  # else a boot it began
            listed = compute.project_servers(conn)  # one listing for both checks
            said += self._name_taken(name, str(after.get("name") or ""), listed)
            said += self._foreign_server(name, listed)
        if said:
            raise OpenStackError(
                f"{Address('vm', name)}: changed since the plan: "
                f"{'; '.join(said)}; the source was not powered off"
            )

    def _foreign_server(self, name: str, servers: list[Any]) -> list[str]:
        """The planner's server-not-from-replica concern against the servers of now
        (`servers`, the project's): a server carrying ferry_vm of this VM that does not run
        from this state's volumes, restored or booted by another state since the plan
        (break-it 12k F1: "found, reused" by the boot, the source off for a replica nobody
        boots). Called when the VM's server is not recorded (else a boot this state began)."""
        server = compute.vm_server(servers, self.a.uuids[name] or "")
        if server is None or self.runs_from_replica(name, server):
            return []
        return [foreign_server(str(server.id))]

    def _name_taken(self, name: str, server_name: str, servers: list[Any]) -> list[str]:
        """The planner's server-name-taken concern against the servers of now (`servers`, the
        project's): a server of the cutover's name that ferry did not boot for this VM, made
        since the plan (break-it 12j F4: a hand-made web01, then the source powered off for a
        second web01). Called when the VM's server is not recorded (a replace boots over
        ferry's own)."""
        taken = compute.named_besides(servers, server_name, self.a.uuids[name] or "")
        if not server_name or not taken:
            return []
        return [
            f"server {', '.join(taken)} named {server_name!r} exists and ferry did not boot it "
            "for this VM: the cutover would boot a second one of that name; rename or delete "
            "it, or set the VM's target_name"
        ]

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
        flavor's `size` (vCPUs, MiB), and the planner's `volume_demand` of its volume changes:
        the volumes not made yet, the extends not done yet, and a protection snapshot per
        volume (unless they are taken: the conversion record's `protection`), each by the type
        and size Cinder holds now and the project's default volume type (read here, only when
        a Cinder quota has a limit: an unlimited one is not checked)."""
        records = self._records()
        servers = 0 if str(Address("vm", name, "server")) in records else 1
        conversion = self.a.changes.get(str(Address("vm", name, "conversion")))
        protects = (
            conversion is not None
            and conversion.action in (Action.CREATE, Action.REPLACE)
            and not self._attrs(str(Address("vm", name, "conversion"))).get("protection")
        )
        cores, ram = size or (0, 0)
        needs = after_power_off(servers, cores, ram)
        quotas = {k: Quota(limit, used) for k, (limit, used) in fetch_quotas(self.ctx.conn).items()}
        cinder = [k for k in quotas if k.partition("_")[0] in CINDER_TYPED]
        limited = any(quotas[k].limit >= 0 for k in [*cinder, PER_VOLUME] if k in quotas)
        default_type: str | None = None
        if limited:  # else moot
            changes = self._volume_changes(lambda vm: vm == name)
            default_type = fetch_default_type(self.ctx.conn)
            held = self._held(changes, records, lambda v: volumes.type_and_size(self.ctx.conn, v))
            needs |= volume_demand(changes, held, protects=protects, default_type=default_type)
        with self.reserved_lock:
            budget = Budget(quotas)
            others = [n for vm, n in self.reserved.items() if vm != name]
            if limited:
                others.append(self._pending_elsewhere(name, default_type))
            for taken in others:  # the apply's other steps that take the same quotas
                budget.spend(taken)
            short = budget.take(needs)
            if not short:
                self.reserved[name] = dict(needs)
        after = ", after the apply's other steps" if any(others) else ""
        return [
            replace(c, message=c.message.replace(", after the VMs listed before it", after))
            for c in short
        ]

    def _pending_elsewhere(self, name: str, default_type: str | None) -> dict[str, int]:
        """What the apply's volume changes of the VMs other than `name` whose cutover holds no
        share yet (replicate VMs, and cutovers not checked yet) still add to Cinder's quotas:
        volumes not made yet and extends not done yet, against the volumes Cinder holds now
        (one listing), so what they made already is counted once, by Cinder (break-it 12l F1:
        a replicate VM of the same saved plan made its volume after web01's check, web01 was
        powered off, then 413 on its protection snapshot)."""
        changes = self._volume_changes(lambda vm: vm not in (name, *self.reserved))
        if not changes:
            return {}
        listed = volumes.types_and_sizes(self.ctx.conn)
        held = self._held(changes, self._records(), listed.get)  # the records as of now
        return volume_demand(changes, held, protects=False, default_type=default_type)

    def _volume_changes(self, of: Callable[[str], bool]) -> list[Change]:
        """The plan's changes that make or hold a Cinder volume (VOLUME_KINDS) of the VMs `of`
        selects (by name), not deleted or forgotten."""
        return [
            c
            for c in self.a.changes.values()
            if c.kind in VOLUME_KINDS
            and of(Address.parse(c.address).name)
            and c.action not in (Action.DELETE, Action.FORGET)
        ]

    @staticmethod
    def _held(
        changes: list[Change],
        records: Mapping[str, ResourceRecord],
        held: Callable[[str], tuple[str | None, int] | None],
    ) -> dict[str, Held]:
        """By change address, the volume Cinder holds for it now (its type and size, as `held`
        reads a volume id: None when gone): the one its record names (made or synced by this
        apply so far), else the plan's."""
        out = {}
        for change in changes:
            record = records.get(change.address)
            found = str((record.attributes if record else {}).get("volume_id") or volume_id(change))
            there = held(found) if found else None
            if there is not None:
                out[change.address] = Held(*there)
        return out

    def _new_volumes(self, name: str) -> list[Change]:
        """The VM's volume changes that create a volume this apply has not made yet (no
        volume recorded): made after the final snapshot, so after the power-off."""
        return [
            c
            for c in self.a.changes.values()
            if c.kind == "volume"
            and c.action in (Action.CREATE, Action.REPLACE)
            and Address.parse(c.address).name == name
            and not self._attrs(c.address).get("volume_id")
            and not (c.before or {}).get("volume_id")
        ]

    def _missing_volume_types(self, name: str) -> list[str]:
        """The volume types the VM's new volumes name that the cloud no longer has."""
        wanted = {
            str((c.after or {}).get("volume_type"))
            for c in self._new_volumes(name)
            if (c.after or {}).get("volume_type")
        }
        return sorted(wanted - volumes.type_names(self.ctx.conn)) if wanted else []

    def _port_ids(self, name: str) -> list[str]:
        """The VM's ports in the source's NIC order."""
        found = []
        for address, record in self._records().items():
            parsed = Address.parse(address)
            if parsed.kind == "vm" and parsed.name == name and parsed.part == "port":
                found.append((parsed.index or 0, str(record.attributes["port_id"])))
        return [port_id for _, port_id in sorted(found)]
