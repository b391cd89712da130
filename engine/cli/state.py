"""`ferry state list | show ADDR | unlock`: read and repair the recorded state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.addresses import Address
from engine.errors import UserError
from engine.statestore import default_path
from engine.statestore.sqlite import SqliteStateStore

app = typer.Typer(help="Inspect and repair ferry's recorded state.", no_args_is_help=True)
StateOption = Annotated[
    Path | None,
    typer.Option("--state", help="State file (default: $FERRY_STATE or ./state/ferry.db)."),
]


def _store(path: Path | None) -> SqliteStateStore:
    return SqliteStateStore(path or default_path(), create=False)


@app.command("list")
def list_(
    state: StateOption = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Every recorded address with its kind and status."""
    current = _store(state).read()
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
) -> None:
    """One address's recorded attributes, as JSON."""
    wanted = str(Address.parse(address))
    record = _store(state).read().resources.get(wanted)
    if record is None:
        raise UserError(f"{wanted} is not in the state")
    typer.echo(
        json.dumps(
            {
                "address": record.address,
                "kind": record.kind,
                "status": record.status.value,
                "attributes": dict(record.attributes),
                "updated_at": record.updated_at,
            },
            indent=2,
            ensure_ascii=False,
        )
    )


@app.command()
def unlock(state: StateOption = None) -> None:
    """Remove the state lock left by a ferry process that is gone."""
    removed = _store(state).force_unlock()
    if removed is None:
        typer.echo("the state was not locked")
    else:
        typer.echo(f"removed the lock of {removed.holder} (pid {removed.pid} on {removed.host})")
