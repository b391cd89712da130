"""The pre-migration phase: conversion hosts the spec asks ferry to boot (`conversion_hosts[]
.create`), one `host.<name>` change each. Pure, like the rest of the planner.

A host that exists is used as it is (ferry did not make it, or it is recorded and up to date);
a recorded host that is gone is drift, booted again; --destroy deletes the ones ferry booted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.addresses import Address
from engine.model.observed import Destination
from engine.model.plan import Action, Change
from engine.model.state import State, Status


def host_changes(
    spec: Mapping[str, Any], destination: Destination, state: State, *, destroy: bool
) -> list[Change]:
    recorded = {a: r for a, r in state.resources.items() if r.kind == "conversion_host"}
    if destroy:
        return [
            Change(a, "conversion_host", Action.DELETE, "--destroy", dict(r.attributes), None)
            for a, r in sorted(recorded.items())
        ]
    out = []
    for host in spec.get("conversion_hosts") or []:
        create = host.get("create")
        if not create:
            continue
        name = str(host["name"])
        address = str(Address("host", name))
        group = create.get("security_group") or f"{name}-ssh"
        after = {"name": name, **create, "security_group": group}
        record = recorded.get(address)
        exists = name in destination.server_names
        if record is not None and record.status is Status.READY and exists:
            out.append(Change(address, "conversion_host", Action.NOOP, "up to date", after, after))
        elif record is not None and record.status is Status.READY:
            reason = (
                f"drift: recorded conversion host {name} is gone from the cloud (deleted "
                "outside ferry): boot it again"
            )
            before = dict(record.attributes)
            out.append(Change(address, "conversion_host", Action.CREATE, reason, before, after))
        elif not exists:
            reason = (
                f"conversion host {name} does not exist: boot it from image {create['image']} "
                f"(flavor {create['flavor']}, network {create['network']}, SSH from "
                f"{create['ssh_from']})"
            )
            out.append(Change(address, "conversion_host", Action.CREATE, reason, None, after))
    return out
