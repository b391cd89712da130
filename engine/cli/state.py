"""`ferry state list | show ADDR | unlock`: read and repair the recorded state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.addresses import Address
from engine.cli.plan import STATE_HELP, StateOption, load_spec, state_location
from engine.errors import NoStateError, UserError
from engine.model.state import ResourceRecord, State
from engine.statestore import StateLocation, StateStore, parse_ref

app = typer.Typer(help="Inspect, repair and move ferry's recorded state.", no_args_is_help=True)


SpecOption = Annotated[
    Path | None,
    typer.Option("--spec", help="Read the state's location from this spec's state block."),
]


def _location(state: str | None, spec: Path | None) -> StateLocation:
    return state_location(dict(load_spec(spec).data) if spec else None, state)


def _store(state: str | None, spec: Path | None = None) -> StateStore:
    location = _location(state, spec)
    try:
        return location.open(create=False)
    except NoStateError as exc:
        raise UserError(f"{exc}: nothing has been applied there yet") from exc


@app.command("list")
def list_(
    state: StateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The records as JSON.")] = False,
    spec: SpecOption = None,
) -> None:
    """Every recorded address with its kind and status."""
    current = _store(state, spec).read()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "lineage": current.lineage,
                    "serial": current.serial,
                    "resources": [
                        {"address": r.address, "kind": r.kind, "status": r.status.value}
                        for r in current.resources.values()
                    ],
                },
                indent=2,
            )
        )
        return
    for record in current.resources.values():
        typer.echo(f"{record.address:<50} {record.kind:<10} {record.status.value}")
    typer.echo(
        f"# lineage {current.lineage}, serial {current.serial}, {len(current.resources)} resources",
        err=True,
    )


@app.command()
def show(
    address: Annotated[str, typer.Argument(help="e.g. vm.web01.disk[2000]")],
    state: StateOption = None,
    spec: SpecOption = None,
) -> None:
    """One address's recorded attributes, as JSON (a VM's address: all its records).

    A VM's address (vm.web01, as the plan prints it) shows every record of that VM."""
    parsed = Address.parse(address)
    wanted = str(parsed)
    resources = _store(state, spec).read().resources
    record = resources.get(wanted)
    if record is not None:
        shown: dict[str, Any] = _record_json(record)
    else:
        parts = [
            _record_json(r)
            for a, r in sorted(resources.items())
            if parsed.part is None and str(Address.parse(a).vm) == wanted
        ]
        if not parts:
            raise UserError(f"{wanted} is not in the state (`ferry state list` shows what is)")
        shown = {"address": wanted, "records": parts}
    typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))


def _record_json(record: ResourceRecord) -> dict[str, Any]:
    return {
        "address": record.address,
        "kind": record.kind,
        "status": record.status.value,
        "attributes": dict(record.attributes),
        "updated_at": record.updated_at,
    }


@app.command()
def unlock(state: StateOption = None, spec: SpecOption = None) -> None:
    """Remove the state lock left by a ferry process that is gone."""
    removed = _store(state, spec).force_unlock()
    if removed is None:
        typer.echo("the state was not locked")
    else:
        typer.echo(f"removed the lock of {removed.holder} (pid {removed.pid} on {removed.host})")


@app.command()
def migrate(
    to: Annotated[str, typer.Option("--to", help="The destination. " + STATE_HELP)],
    state: StateOption = None,
    spec: SpecOption = None,
) -> None:
    """Copy the state to another backend (e.g. SQLite → PostgreSQL), both sides locked.

    Lineage, serial and every record are copied. The destination must be empty; the source is
    left as it is."""
    source_location, target_location = _location(state, spec), parse_ref(to, os.environ)
    if target_location.identity == source_location.identity:
        raise UserError(f"the source and the destination are the same state ({to})")
    source, target = _store(state, spec), target_location.open()
    with source.locked("state migrate"), target.locked("state migrate"):
        current = source.read()
        target.replace(current)
        _check_copy(current, target.read(), target.display)
    typer.echo(
        f"copied {len(current.resources)} records (lineage {current.lineage}, serial "
        f"{current.serial}) from {source.display} to {target.display}; point ferry at it with "
        "the spec's state block, $FERRY_STATE_DSN or --state"
    )
    source.close()
    target.close()


def _check_copy(source: State, copied: State, where: str) -> None:
    def rows(state: State) -> list[tuple[object, ...]]:
        return [
            (r.address, r.kind, r.status, json.dumps(dict(r.attributes), sort_keys=True))
            for r in state.resources.values()
        ]

    same = (source.lineage, source.serial) == (copied.lineage, copied.serial)
    if not same or rows(source) != rows(copied):
        raise UserError(f"the copy in {where} differs from its source: do not use it")
