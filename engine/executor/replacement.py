"""Where a VM's host-bound steps run (issue 14): the plan's conversion host, or, when its server
is gone, the host a re-placement chooses among those whose agent answers (decided once per
apply, said once); the walker's slot pools follow it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.addresses import Address
from engine.errors import (
    AgentError,
    FerryError,
    StoppedError,
    one_line,
)
from engine.executor.applier_base import ApplierBase
from engine.model.plan import Change
from engine.model.state import RECORDED_HOST
from engine.planner.placement import (
    Candidate,
    Demand,
    Host,
    Replacement,
    copied,
    placed_bytes,
    replace_vm,
)
from engine.providers.openstack import compute, volumes

ANSWERS_KEPT = 30.0  # seconds a ping's answer stands for the next re-placements (Applier)


class Placement(ApplierBase):
    """The Applier's placement of host-bound steps (see the module)."""

    def host_for(self, vm: str) -> tuple[str, str]:
        """(name, server id) of the conversion host that writes `vm`'s volumes: the plan's
        placement when syncs run on the hosts' agents (execution.broker) and that host's server
        is known; else (no broker, or no placement) the host this apply writes on (the spec's
        first). A placed host whose server is gone, the first one too (deleted since the plan;
        any host the plan boots is up before the VM's steps), re-places the VM once by the
        plan's rules among the hosts whose agent answers (`re_place`). Raises AgentError when
        no host can take it."""
        name = self.placement.get(vm, "")
        if self.ctx.remote is not None and name in self.ctx.host_ids:
            return name, self.ctx.host_ids[name]
        first = self.ctx.conversion_host_name
        if self.ctx.remote is None or not name:
            return first, self.ctx.conversion_host_id
        moved = self.re_place(vm, name)
        if moved is None:
            raise AgentError(self.unplaced[vm])
        return moved, self.ctx.host_ids[moved]

    def to_place(self, vm: str) -> Callable[[], object] | None:
        """The re-placement `vm`'s host-bound steps wait on before their host (their slot pool)
        is known, or None when it is known without asking (as placed, decided already, or no
        broker). It asks the agents (a broker ping: remote.ASK_TIMEOUT seconds), so the walker
        runs it off its scheduling thread (Walker's `prepare`): other VMs' steps go on. Read
        without `placing`: a stale answer asks for a re-placement decided since, which returns
        the decision."""
        name = self.placement.get(vm, "")
        if self.ctx.remote is None or not name or name in self.ctx.host_ids:
            return None
        if vm in self.unplaced:
            return None
        return lambda: self.re_place(vm, name)

    def re_place(self, vm: str, gone: str) -> str | None:
        """The host `vm` goes to instead of `gone` (its server gone), decided once per apply:
        placement.replace_vm over the plan's hosts (zones, slots, the bytes placed on each, this
        apply's earlier moves counted), the volumes attached to each server now and the agents
        answering the broker's ping. Said once: in the VM's log, on the console and as a
        `replaced` event. None: no host can take it (the line in `unplaced`)."""
        with self.placing:
            if vm in self.moved_to or vm in self.unplaced:
                return self.moved_to.get(vm)
            placed = self.plan_vm[vm]
            demand = Demand(
                vm,
                copied(vm, self.plan.changes),
                placed.availability_zone or None,
                gone if placed.pinned else None,
                None,
            )
            disks = sum(
                1
                for c in self.plan.changes
                if c.kind == "volume" and Address.parse(c.address).name == vm
            )
            try:
                chosen = replace_vm(demand, disks, gone, self._candidates(gone))
            except FerryError as exc:
                why = f"{gone}, where the plan placed it, is gone, and the hosts could not be asked"
                chosen = Replacement(None, f"{why}: {one_line(str(exc))}")
            if chosen.host is None:
                line = f"{Address('vm', vm)}: not re-placed: {chosen.why}"
                self.unplaced[vm] = line
            else:
                self.moved_to[vm] = chosen.host
                self.placement[vm] = chosen.host
                line = (
                    f"{Address('vm', vm)}: re-placed from conversion host {gone} to "
                    f"{chosen.host}: {chosen.why}"
                )
        if self.ctx.events is not None:
            self.ctx.events.emit(
                "replaced", vm=vm, placed=gone, host=chosen.host, reason=chosen.why
            )
        self.ctx.say(vm, line)
        return chosen.host

    def _candidates(self, gone: str) -> list[Candidate]:
        """The plan's conversion hosts as re-placement sees them now: bytes placed on each (the
        plan's placement, moves included), volumes attached to each server, agents answering
        (`_answering`). Raises AgentError (broker) or OpenStackError (cloud) when they cannot
        be asked."""
        answering = self._answering()
        load = placed_bytes(self.placement, self.plan.changes)
        out = []
        for h in self.plan.hosts:
            if h.name == gone:
                continue
            server = self.ctx.host_ids.get(h.name, "")
            answers = h.name in answering
            attached = volumes.attached_count(self.ctx.conn, server) if server and answers else 0
            host = Host(h.name, h.availability_zone, h.slots)
            out.append(Candidate(host, load.get(h.name, 0), attached, bool(server), answers))
        return out

    def _answering(self) -> set[str]:
        """The hosts whose agent answers the broker's ping, asked again only ANSWERS_KEPT
        seconds after the last answer: the many VMs of a gone host are re-placed on one ping,
        not on one each (seconds apiece, one at a time). Called under `placing`."""
        assert self.ctx.remote is not None
        now = time.monotonic()
        if self.answered is None or now - self.answered[0] > ANSWERS_KEPT:
            self.answered = (now, self.ctx.remote.answering())
        return self.answered[1]

    def ready_agent(self, vm: str) -> None:
        """Before a cutover powers `vm`'s source off (agents only: execution.broker): the agent
        of the host that runs its final sync and conversion takes this apply's tasks (the same
        agent digest, the state lineage it serves or none yet), so a spec whose agent fields
        were edited since the agents started (break-it 12m F6) or another state's agent is
        refused with the source on, not by the agent after the power-off. An agent that does
        not answer (restarting) is waited for up to execution.timeout seconds, said once.
        Raises AgentError (nothing was powered off) or StoppedError (Ctrl-C while waiting)."""
        if self.ctx.remote is None:
            return
        remote = self.ctx.remote.of_state(self.lineage)  # as each of its tasks carries it
        host_name = self.host_for(vm)[0]
        deadline = time.monotonic() + remote.broker.timeout
        said = False
        while (why := remote.refusal(host_name)) is None:
            if self.ctx.stop.is_set():
                raise StoppedError(f"{Address('vm', vm)}: stopped before the power-off")
            if time.monotonic() >= deadline:
                raise AgentError(
                    f"{Address('vm', vm)}: the agent of conversion host {host_name} did not "
                    f"answer for {remote.broker.timeout:.0f} s (execution.timeout): nothing was "
                    f"powered off, the source is left as it was; is `ferry agent --host "
                    f"{host_name}` running with this spec and broker?"
                )
            if not said:
                said = True
                self.ctx.say(
                    vm,
                    f"{Address('vm', vm)}: waiting for the agent of conversion host {host_name} "
                    "to answer before the power-off",
                )
        if why:
            raise AgentError(
                f"{Address('vm', vm)}: {why}; nothing was powered off, the source is left as it was"
            )

    def host_of(self, change: Change) -> str:
        """The conversion host a change runs on: a copy's, compare's (volume) or conversion's
        its VM's ("" when no host can take it: its step fails); "" for the coordinator's
        steps."""
        if change.kind in ("volume", "conversion"):
            try:
                return self.host_for(Address.parse(change.address).name)[0]
            except AgentError:
                return ""
        return ""

    def _release_elsewhere(
        self, address: str, before: dict[str, Any], volume_id: str, host_name: str
    ) -> None:
        """A copy the plan re-placed (its record names another conversion host: one gone from
        the spec, or a pin moved it): its volume is detached from that host's server first, where
        a killed copy left it attached (Cinder attaches it to one server at a time). Only that
        server's attachment is touched."""
        old = str(before.get(RECORDED_HOST) or "")
        if old == host_name or not self._detach_from(old, volume_id):
            return
        self.ctx.say(
            Address.parse(address).name,
            f"{address}: volume {volume_id} detached from conversion host {old} (its copy was "
            f"in progress there), to be written on {host_name}",
        )

    def _detach_from(self, host_name: str, volume_id: str) -> bool:
        """Detach the volume from conversion host `host_name`'s server when it is attached
        there (only that server's attachment is touched); whether it was. Raises
        OpenStackError."""
        if not host_name:
            return False
        server = compute.conversion_server(self.ctx.conn, host_name)
        if server is None or str(server.id) not in volumes.attached_servers(
            self.ctx.conn, volume_id
        ):
            return False
        volumes.detach(self.ctx.conn, str(server.id), volume_id)
        return True

    def slot_pool(self, vm: str) -> str:
        """The walker's pool of copy slots `vm`'s disk copies take: its host's (the placed
        one's when no host can take it: its step fails at once)."""
        try:
            name = self.host_for(vm)[0]
        except AgentError:
            name = self.placement.get(vm, "")
        return "conversion" if name == self.ctx.conversion_host_name else f"conversion:{name}"
