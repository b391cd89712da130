"""`ferry discover`: the source inventory, as a table or JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.diagnostics import has_errors
from engine.errors import UserError
from engine.model.observed import Inventory, SourceVM
from engine.providers.vsphere.inventory import fetch_inventory, parse_inventory
from engine.providers.vsphere.session import (
    VCenterTarget,
    session,
    target_from_env,
    target_from_spec,
)
from engine.spec.validate import validate_file
from engine.units import human

INVENTORY_FORMAT = 1


def _target(spec: Path | None) -> VCenterTarget:
    env = dict(os.environ)
    if spec is None:
        return target_from_env(env)
    loaded = validate_file(spec)
    if has_errors(loaded.diagnostics):
        first = next(d for d in loaded.diagnostics)
        raise UserError(f"the spec has errors (run `ferry validate {spec}`): {first.render()}")
    return target_from_spec(loaded.data["source"]["vcenter"], env)


def discover(
    spec: Annotated[
        Path | None,
        typer.Argument(help="Spec whose source to read (default: FERRY_VCENTER_* variables)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """List the source's VMs with disks, NICs, CBT, snapshots, power and tools state."""
    inventory = read_inventory(spec)
    if as_json:
        typer.echo(json.dumps(inventory_json(inventory), indent=2))
    else:
        Console().print(inventory_table(inventory))


def read_inventory(spec: Path | None) -> Inventory:
    """The source's inventory: the vCenter of the spec's source (None: the FERRY_VCENTER_*
    variables). The library entry point of `ferry discover` and the Ansible discover module.

    Raises UserError (a spec with errors, no vCenter settings) and VCenterError."""
    with session(_target(spec)) as si:
        return parse_inventory(fetch_inventory(si))


def inventory_json(inventory: Inventory) -> dict[str, object]:
    return {
        "format_version": INVENTORY_FORMAT,
        "vms": [vm.to_json() for vm in inventory.vms],
        "datastores": list(inventory.datastores),
        "portgroups": list(inventory.portgroups),
        "hosts": list(inventory.hosts),
    }


def _disks(vm: SourceVM) -> str:
    total = sum(d.capacity for d in vm.disks)
    return f"{len(vm.disks)} · {human(total)}"


def _nics(vm: SourceVM) -> str:
    return ", ".join(sorted({n.portgroup or "?" for n in vm.nics}))


def inventory_table(inventory: Inventory) -> Table:
    table = Table(title=f"{len(inventory.vms)} VMs on {len(inventory.hosts)} hosts")
    for column in (
        "VM",
        "power",
        "guest",
        "vCPU",
        "RAM",
        "disks",
        "portgroups",
        "CBT",
        "snapshots",
    ):
        table.add_column(column, overflow="fold")
    for vm in inventory.vms:
        table.add_row(
            vm.name,
            (vm.power_state or "?").removeprefix("powered"),
            vm.guest_id or "?",
            str(vm.cpus),
            human((vm.memory_mb or 0) * 1024 * 1024),
            _disks(vm),
            _nics(vm),
            "on" if vm.cbt else "[red]off[/]",
            ", ".join(s.name for s in vm.snapshots) or "-",
        )
    return table
