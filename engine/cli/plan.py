"""`ferry plan`: refresh, diff, show; save with --out; CI-friendly JSON and exit codes."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from engine.addresses import Address
from engine.cli.console import make_console
from engine.cli.interrupt import check, ending_on
from engine.diagnostics import Severity, has_errors
from engine.errors import InvalidSpecError, UserError
from engine.model.desired import ConcernLevel
from engine.model.plan import SYMBOLS, VERIFY_PHRASES, Action, Change, Plan, VMPlan
from engine.planner import planfile
from engine.planner.diff.lineage import UNLABELED
from engine.planner.make import make_plan
from engine.planner.refresh import refresh
from engine.spec.load import Loaded
from engine.spec.validate import validate_file
from engine.statestore import DEFAULT_PATH, StateLocation, locate
from engine.units import duration, human

COLORS = {
    Action.CREATE: "green",
    Action.UPDATE: "yellow",
    Action.DELETE: "red",
    Action.REPLACE: "magenta",
    Action.READ: "cyan",
    Action.FORGET: "blue",
    Action.MOVE: "cyan",
    Action.VERIFY: "cyan",
}
LEVEL_COLORS = {ConcernLevel.ERROR: "red", ConcernLevel.WARNING: "yellow", ConcernLevel.INFO: "dim"}


def load_spec(path: Path) -> Loaded:
    loaded = validate_file(path)
    if has_errors(loaded.diagnostics):
        lines = [d.render() for d in loaded.diagnostics if d.severity is Severity.ERROR]
        raise InvalidSpecError(lines)
    return loaded


STATE_HELP = (
    "Where the state is: a file, env:NAME (a PostgreSQL DSN in that environment variable) or a "
    "postgresql:// URL without password (default: the spec's state block, $FERRY_STATE_DSN, "
    "$FERRY_STATE, ./state/ferry.db)."
)
StateOption = Annotated[str | None, typer.Option("--state", help=STATE_HELP)]
AdoptLineageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--adopt-lineage",
        help="With a spec: adopt the volumes (and, with output: image, the Glance images) of a "
        "lost ferry state, named by its lineage (the lineage a refused volume's or image's "
        "concern names; repeatable), or 'unlabeled': those an older ferry made without a "
        "lineage (beside a running server, or replica volumes of a VM no server runs); "
        "adopting writes this state's lineage on them.",
    ),
]


def lineages(values: list[str] | None) -> tuple[str, ...]:
    """The --adopt-lineage values, each a state lineage (a UUID, as `ferry state list` and a
    refused volume's concern print it) or `unlabeled` (objects an older ferry made without a
    lineage: engine.planner.diff.lineage).

    Raises UserError (one that is neither)."""
    out = []
    for value in values or []:
        if value.strip().lower() == UNLABELED:
            out.append(UNLABELED)
            continue
        try:
            out.append(str(uuid.UUID(value.strip())))
        except ValueError:
            raise UserError(
                f"--adopt-lineage {value!r} is not a state lineage (a UUID, as the concern of "
                f"a volume of another state names it) nor {UNLABELED!r}"
            ) from None
    return tuple(dict.fromkeys(out))


def state_location(spec: dict[str, Any] | None, option: str | None) -> StateLocation:
    return locate((spec or {}).get("state"), option, os.environ)


def missing_state_dir(location: StateLocation) -> Path | None:
    """The directory of a SQLite state file that does not exist, None when it does (or the
    state is PostgreSQL's, or ferry's default `state/ferry.db`, whose folder an apply makes): a
    --state path with a typo made a new state wherever it pointed (break-it 16c L4). Terraform's
    local backend, too, creates only the state file, never its directory."""
    path = location.path
    if location.backend != "sqlite" or path is None or path == DEFAULT_PATH:
        return None
    return None if path.parent.is_dir() else path.parent


def new_state_line(location: StateLocation) -> str:
    """What a plan says of a SQLite state file that does not exist yet ("" when it exists):
    the first apply creates it, or refuses it when its directory does not exist."""
    if location.backend != "sqlite" or location.exists():
        return ""
    missing = missing_state_dir(location)
    if missing is not None:
        return (
            f"new state at {location.display}: no such file, and its directory {missing} does "
            "not exist: apply refuses it (create the directory, or fix the state's path)"
        )
    return f"new state at {location.display} (no such file yet: the first apply creates it)"


def check_state_dir(location: StateLocation) -> None:
    """Refuse a SQLite state whose directory does not exist (missing_state_dir). Raises
    UserError (one line); nothing is touched."""
    missing = missing_state_dir(location)  # then the file cannot exist either
    if missing is not None:
        raise UserError(
            f"state {location.display}: its directory {missing} does not exist (ferry creates "
            "the state file, not its directory): create it, or fix the state's path"
        )


def check_shared_state(spec: dict[str, Any], location: StateLocation) -> None:
    """Several conversion hosts running syncs on their agents (execution.broker) need the
    shared PostgreSQL state: a SQLite file is one machine's. Raises UserError (one line) for a
    SQLite `location` with more than one conversion host and a broker; else returns."""
    hosts = spec.get("conversion_hosts") or []
    broker = (spec.get("execution") or {}).get("broker")
    if location.backend != "sqlite" or len(hosts) < 2 or not broker:
        return
    raise UserError(
        f"{len(hosts)} conversion hosts with execution.broker need the shared PostgreSQL state "
        f"(state: {{backend: postgres}} or $FERRY_STATE_DSN), not the SQLite file "
        f"{location.display}: one machine's file"
    )


def plan(
    spec: Annotated[Path, typer.Argument(help="Migration spec (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the plan (with its graph).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0: no changes, 1: error, 2: changes.")
    ] = False,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="Plan only this address (and what it depends on)."),
    ] = None,
    destroy: Annotated[
        bool,
        typer.Option(
            "--destroy", help="Plan the teardown of what ferry created (never the source)."
        ),
    ] = False,
    state: StateOption = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Compare every selected replica (not cut over) with a new source snapshot by "
            "sha256: a verify step where nothing else is planned, every copy verified whole.",
        ),
    ] = False,
    adopt_lineage: AdoptLineageOption = None,
) -> None:
    """Show what apply would do: per VM, the changes, bytes to copy and concerns."""
    with ending_on(signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: nothing is changed
        targets = tuple(Address.parse(t) for t in target or [])
        if out is not None:
            planfile.check_writable(out)  # at once, not after minutes of refresh
        result, location = located_plan(
            spec,
            state,
            targets,
            destroy=destroy,
            verify=verify,
            adopt_lineages=lineages(adopt_lineage),
        )
        check()  # a signal in the refresh that a library swallowed: nothing shown or saved
        sealed = ""
        if out is not None and has_errors(result.diagnostics):
            typer.echo(f"error: the plan has errors: not saved to {out}", err=True)
            out = None
        if out is not None:
            sealed = planfile.save(result, out, spec)
        new = new_state_line(location)
        if as_json:
            typer.echo(json.dumps(planfile.to_json(result), indent=2, ensure_ascii=False))
            if new:  # stdout holds the JSON only
                typer.echo(new, err=True)
        else:
            render(result, make_console())
            if new:
                typer.echo(new)
            if out is not None:
                typer.echo(saved_line(out, sealed, os.environ))
        raise typer.Exit(exit_code(result, detailed_exitcode))


def plan_spec(
    spec: Path,
    state: str | None = None,
    targets: tuple[Address, ...] = (),
    *,
    destroy: bool = False,
    verify: bool = False,
    adopt_lineages: tuple[str, ...] = (),
) -> Plan:
    """The plan `ferry plan SPEC` shows: the spec validated, the source, destination and state
    read (`state`: as --state, None for the spec's or the default), the changes made. The
    library entry point of `ferry plan` and the Ansible collection's plan module.

    Raises InvalidSpecError (the spec's error lines), UserError and the readers' FerryErrors."""
    return located_plan(
        spec, state, targets, destroy=destroy, verify=verify, adopt_lineages=adopt_lineages
    )[0]


def located_plan(
    spec: Path,
    state: str | None = None,
    targets: tuple[Address, ...] = (),
    *,
    destroy: bool = False,
    verify: bool = False,
    adopt_lineages: tuple[str, ...] = (),
) -> tuple[Plan, StateLocation]:
    """plan_spec's plan and the location of the state it read. Raises as plan_spec."""
    if verify and destroy:
        raise UserError("--verify compares replicas with their source; --destroy deletes them")
    loaded = load_spec(spec)
    data = dict(loaded.data)
    location = state_location(data, state)
    check_shared_state(data, location)
    observed = refresh(data, location, os.environ)
    made = make_plan(
        data,
        observed.inventory,
        observed.destination,
        observed.state,
        destroy=destroy,
        targets=targets,
        locate=loaded.where,
        verify=verify,
        adopt_lineages=adopt_lineages,
    )
    return made, location


def saved_line(out: Path, sealed: str, env: Mapping[str, str]) -> str:
    """What `plan --out` tells: where, the plan's sha256, and whether it is signed (with
    `$FERRY_PLAN_KEY` set, an apply checks the signature and refuses an unsigned plan)."""
    signed = f", signed with ${planfile.KEY_ENV}" if env.get(planfile.KEY_ENV) else ""
    return (
        f"Saved the plan to {out} (sha256 {sealed}{signed}): `ferry apply {out}` does exactly this."
    )


def exit_code(result: Plan, detailed: bool) -> int:
    if has_errors(result.diagnostics) or result.blocked:
        return 1
    return 2 if detailed and result.has_changes else 0


def _change_line(change: Change) -> str:
    color = COLORS.get(change.action, "white")
    size = ""
    if change.bytes is not None and change.action is not Action.NOOP:
        size = f" [bold]{'~' if change.estimate else ''}{human(change.bytes)}[/]"
        if change.zeros:
            size += f" [bold]+ {human(change.zeros)} zeros[/]"
    symbol = escape(SYMBOLS[change.action])
    return (
        f"  [{color}]{symbol:>3} {escape(change.address)}[/] {change.action.value}{size}"
        f"  [dim]{escape(change.reason)}[/]"
    )


def downtime_label(seconds: float) -> str:
    """A VM's cutover downtime as the plan shows it: an estimate, and said to be one (final
    delta at the measured or assumed throughput, zeros written, uploads and volumes made from
    images at their measured rates, plus conversion and boot: estimates.downtime), e.g.
    'estimated cutover downtime ~6 min 5 s'."""
    return f"estimated cutover downtime ~{duration(seconds)}"


def local_disk(vm: VMPlan) -> str:
    """output: image: '; up to 1.0 GiB on local disk in /work' (the work directory and what this
    plan's copies may add there); '' with output: volume."""
    if not vm.work_dir:
        return ""
    return f"; up to {human(vm.local_bytes or 0)} on local disk in {vm.work_dir}"


def vm_facts(vm: VMPlan, hosts: bool) -> list[str]:
    """What a VM's heading says after its mode, in order (the terminal plan and the Markdown
    one show the same): its downtime estimate, how its copies are verified, the reader its
    disks are read through, its conversion host (`hosts`: the plan places VMs on several),
    and the local disk an image-mode VM may fill."""
    facts = [downtime_label(vm.downtime_seconds)] if vm.downtime_seconds else []
    facts += [VERIFY_PHRASES[vm.verify]] if vm.verify in VERIFY_PHRASES else []
    facts += [f"disks read via {vm.reader}"] if vm.reader else []
    facts += [f"conversion host {vm.conversion_host}"] if hosts and vm.conversion_host else []
    facts += [local_disk(vm).removeprefix("; ")] if vm.work_dir else []
    return facts


def render(result: Plan, console: Console) -> None:
    for diagnostic in result.diagnostics:
        console.print(f"[red]{escape(diagnostic.render())}[/]")
    by_vm: dict[str, list[Change]] = {}
    for change in result.changes:
        by_vm.setdefault(str(Address.parse(change.address).vm), []).append(change)
    for vm in result.vms:
        flavor = f"flavor {vm.flavor} ({vm.flavor_reason})" if vm.flavor else vm.flavor_reason
        facts = vm_facts(vm, bool(result.hosts))  # one host: nothing to choose, not shown
        downtime = f", {facts.pop(0)}" if vm.downtime_seconds else ""
        downtime += "".join(f"; {fact}" for fact in facts)
        console.print(
            f"\n[bold]{escape(vm.address)}[/] → {escape(vm.target_name)} "
            f"[dim]({vm.mode}; {escape(flavor)}{downtime})[/]"
        )
        for concern in vm.concerns:
            console.print(
                f"  [{LEVEL_COLORS[concern.level]}]{concern.level.value}: "
                f"{escape(concern.message)}[/]"
            )
        if vm.blocked:
            console.print(
                "  [red]blocked: this VM's changes are not planned until its errors are fixed[/]"
            )
        for change in by_vm.pop(vm.address, []):
            if change.action is not Action.NOOP:
                console.print(_change_line(change))
    for address, changes in by_vm.items():
        console.print(f"\n[bold]{escape(address)}[/] [dim]({group_heading(address, result)})[/]")
        for change in changes:
            console.print(_change_line(change))
    if result.hosts:
        console.print("\n[bold]Conversion hosts[/]")
        for line in host_lines(result):
            console.print(f"  {escape(line)}")
    console.print("\n" + summary(result))


def host_lines(result: Plan) -> list[str]:
    """One line per conversion host of a plan placed over several: its VMs, bytes to copy and
    estimated copy time (measured throughput per copy times its slots), and its delta syncs of
    unknown size apart (they weigh in neither)."""
    return [
        f"{h.name}{f' ({h.availability_zone})' if h.availability_zone else ''}: {h.vms} VM(s), "
        f"{human(h.bytes)} to copy"
        + (f" and {h.unknown} delta sync(s) of unknown size" if h.unknown else "")
        + f", ~{duration(h.seconds)} at {h.slots} copies at once"
        for h in result.hosts
    ]


def group_heading(address: str, result: Plan) -> str:
    """What a group of changes outside the spec's VMs is: a VM that left the spec, or an object
    shared by VMs (a flavor made for them, a network, a conversion host)."""
    if Address.parse(address).kind == "vm":
        return "no longer in the spec"
    changes = [c for c in result.changes if str(Address.parse(c.address).vm) == address]
    if changes and all(c.action in (Action.DELETE, Action.FORGET) for c in changes):
        return "no longer needed"
    return "shared by the spec's VMs"


def summary(result: Plan) -> str:
    counts = result.counts()
    create = counts[Action.CREATE] + counts[Action.REPLACE]
    destroy = counts[Action.DELETE] + counts[Action.REPLACE]
    extra = "".join(
        f", {counts[a]} to {a.value}"
        for a in (Action.READ, Action.FORGET, Action.MOVE, Action.VERIFY)
        if counts[a]
    )
    blocked = result.blocked
    tail = f"; {blocked} VM(s) blocked by errors" if blocked else ""
    errors = sum(d.severity is Severity.ERROR for d in result.diagnostics)
    if errors and not result.has_changes:
        return f"No plan: {errors} error(s) above; fix them and plan again (nothing was changed)."
    if errors:
        tail += f"; {errors} error(s) above: nothing is applied until they are fixed"
    if not result.has_changes and not blocked:
        return "No changes: the destination matches the spec."
    up = result.bytes_to_upload
    uploads = f", ~{human(up)} to upload" if up else ""
    return (
        f"Plan: {create} to create, {counts[Action.UPDATE]} to update, {destroy} to destroy"
        f"{extra}; {human(result.bytes_to_copy)} to copy{uploads}{tail}."
    )


def blocked_reasons(vms: list[VMPlan]) -> list[str]:
    """'vm.X: <its error concerns, "; "-joined>' for each of `vms`."""
    return [
        f"{v.address}: " + "; ".join(c.message for c in v.concerns if c.level is ConcernLevel.ERROR)
        for v in vms
    ]
