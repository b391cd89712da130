"""`ferry apply SPEC|PLANFILE`: do exactly the plan, under the state lock, persisting after
every step; a saved plan is refused when the spec or the state changed since it was made."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Annotated, Any, NoReturn

import networkx as nx
import typer
from rich.console import Console
from rich.markup import escape

from engine.addresses import Address
from engine.cli.console import make_console
from engine.cli.interrupt import STOPPED, check, ending_on
from engine.cli.plan import (
    AdoptLineageOption,
    StateOption,
    blocked_reasons,
    check_shared_state,
    check_state_dir,
    lineages,
    load_spec,
    render,
    state_location,
)
from engine.cli.progress import HumanView, JsonView
from engine.errors import FerryError, StoppedError, UserError, one_line, step_error
from engine.executor.applier_base import Context
from engine.executor.apply import Applier, unsupported
from engine.executor.events import Events, log_path
from engine.executor.remote import (
    Remote,
    agent_concurrency,
    agent_digests,
    broker_from_spec,
    check_broker,
    make_app,
)
from engine.executor.seams import (
    ByIdDevices,
    ConnectionInfoDevices,
    DatastorePathSources,
    HttpsSources,
    LabDevices,
    LabFaultSources,
    LabSources,
    Sources,
    VddkSources,
)
from engine.executor.volume_ownership import handed_since
from engine.executor.walker import Outcome, Walker, WalkResult
from engine.model.plan import Action, Plan
from engine.model.state import State
from engine.planner import planfile
from engine.planner.make import make_plan, spec_digest
from engine.planner.placement import ESXI_READS  # concurrent disk reads per ESXi host (NFC)
from engine.planner.refresh import read_state, refresh
from engine.providers.openstack import compute
from engine.providers.openstack.read import connect_destination
from engine.providers.vsphere.session import VCenterTarget, session, target_from_spec
from engine.spec.validate import reader_of
from engine.statestore import StateLocation, StateStore
from engine.units import human


def apply(
    target: Annotated[Path, typer.Argument(help="A spec (plans and applies) or a saved plan.")],
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask.")] = False,
    parallelism: Annotated[
        int | None,
        typer.Option(
            "--parallelism",
            min=1,
            max=256,
            help="Steps run at once (copies are also bounded per conversion host and ESXi "
            "host); default: the slots of the conversion hosts the apply writes on, plus 2, "
            "at least 4.",
        ),
    ] = None,
    state: StateOption = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--target", help="With a spec: apply only this address (and what it depends on)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Events as JSON lines on stdout (for CI logs).")
    ] = False,
    spec_option: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="With a saved plan: the spec it was made from, when it is not where the plan "
            "says (its digest must match the plan's).",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="With a spec: compare every selected replica (not cut over) with a new source "
            "snapshot by sha256 (a verify step where nothing else is planned; every copy "
            "verified whole); a mismatch marks the volume tainted. A saved plan verifies as it "
            "was made (`ferry plan --verify --out`).",
        ),
    ] = False,
    adopt_lineage: AdoptLineageOption = None,
) -> None:
    """Apply a plan: disk syncs into Cinder volumes, and cutovers to servers."""
    with ending_on(signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: before the walk (which
        # stops by its own handlers) nothing is changed (break-it 12f F7: killed, no line)
        console = make_console(stderr=as_json)
        targets = tuple(Address.parse(t) for t in only or [])
        plan, spec, saved, location = prepare(
            target, state, targets, spec_option, verify, adopt_lineages=lineages(adopt_lineage)
        )
        if not as_json:
            render(plan, console)
            if saved is not None:
                console.print(escape(saved.seal_line()))
        check_applicable(plan, console, as_json)
        blocked = blocked_line(plan)
        if not plan.has_changes:
            console.print("No changes to apply." + (f" {blocked}" if blocked else ""))
            if as_json:  # CI reads stdout: one line that says so
                JsonView()(nothing_applied(plan, bool(blocked)))
            raise typer.Exit(1 if blocked else 0)
        if saved is None and not auto_approve:
            if as_json or not sys.stdin.isatty():
                raise UserError(
                    "apply needs --auto-approve when it cannot ask (no terminal, --json)"
                )
            typer.confirm("Apply this plan?", abort=True)
        view: HumanView | JsonView = JsonView() if as_json else HumanView(console)
        raise typer.Exit(run_plan(plan, spec, location, parallelism, (console, view)))


def prepare(
    target: Path,
    state: str | None = None,
    targets: tuple[Address, ...] = (),
    spec_option: Path | None = None,
    verify: bool = False,
    *,
    adopt_lineages: tuple[str, ...] = (),
) -> tuple[Plan, dict[str, Any], planfile.Saved | None, StateLocation]:
    """What `ferry apply TARGET` applies: (the plan, its spec, the saved plan it was read from
    or None when planned now, the state's location); a saved plan is checked fresh against the
    spec and the state. The library entry point of `ferry apply` and the Ansible collection's
    apply module (then check_applicable, then run_plan).

    Raises InvalidSpecError and UserError (a stale or unreadable plan, a locked state)."""
    plan, spec, saved = _plan_for(target, state, targets, spec_option, verify, adopt_lineages)
    location = state_location(spec, state)
    if saved is not None:  # a spec was checked by _plan_for, before its refresh
        check_shared_state(spec, location)
        _check_fresh(plan, spec, location, spec_option)
        check_state_dir(location)
    return plan, spec, saved, location


def _plan_for(
    target: Path,
    state: str | None,
    targets: tuple[Address, ...],
    spec_option: Path | None,
    verify: bool,
    adopt_lineages: tuple[str, ...] = (),
) -> tuple[Plan, dict[str, Any], planfile.Saved | None]:
    """The plan to apply, its spec, and the saved plan it was read from (None: planned now).

    Raises UserError."""
    if target.suffix in (".yaml", ".yml"):
        if spec_option is not None:
            raise UserError(
                f"--spec goes with a saved plan; {target} is a spec itself (drop --spec, or "
                "apply the plan made from it)"
            )
        spec = dict(load_spec(target).data)
        location = state_location(spec, state)
        check_state_dir(location)
        check_shared_state(spec, location)
        _check_unlocked(location)
        observed = refresh(spec, location, os.environ)
        plan = make_plan(
            spec,
            observed.inventory,
            observed.destination,
            observed.state,
            targets=targets,
            verify=verify,
            adopt_lineages=adopt_lineages,
        )
        return plan, spec, None
    if targets:
        raise UserError("--target selects from a spec; a saved plan is applied whole")
    if adopt_lineages:
        raise UserError(
            "--adopt-lineage goes with a spec; a saved plan adopts what it was planned to "
            "(make it with `ferry plan --adopt-lineage LINEAGE --out PLAN`)"
        )
    saved = planfile.load(target)
    if verify and not saved.plan.verify:
        raise UserError(
            f"{target} was planned without --verify, and a saved plan is applied as approved: "
            "make it with `ferry plan --verify --out PLAN`"
        )
    if saved.signed and not saved.checked:
        raise UserError(
            f"{target} is signed: set {planfile.KEY_ENV} to the key it was signed with, so its "
            "signature can be checked"
        )
    return saved.plan, dict(load_spec(_spec_of(target, saved, spec_option)).data), saved


def _spec_of(target: Path, saved: planfile.Saved, option: Path | None) -> Path:
    """The spec a saved plan applies with: --spec, else the one the plan names."""
    if option is not None:
        if not option.is_file():
            problem = "a folder, not a spec file" if option.is_dir() else "no such file"
            raise UserError(f"--spec {option}: {problem}")
        return option
    if not saved.spec_file:
        raise UserError(f"{target} does not name the spec it was made from: pass --spec PATH")
    if saved.spec_path is None:
        raise UserError(
            f"the spec this plan was made from ({saved.spec_file}, relative to "
            f"{target.resolve().parent}) is not found: pass --spec PATH"
        )
    return saved.spec_path


def _check_unlocked(location: StateLocation) -> None:
    """Another apply running on this state: say who, before refreshing anything."""
    if not location.exists():
        return
    store = location.open()
    try:
        store.check_unlocked()
    finally:
        store.close()


def _check_fresh(
    plan: Plan, spec: dict[str, Any], location: StateLocation, named: Path | None = None
) -> None:
    """A saved plan applies only with the spec (`named` by --spec, else the plan's own) and the
    state it was made from, unchanged (a plan made on an empty state, whose lineage the first
    write of that state makes, is told that the state changed, not that it is another).

    Raises UserError naming which of them differs."""
    if spec_digest(spec) != plan.spec_digest:
        if named is not None:
            raise UserError(
                f"--spec {named} is not the spec this plan was made from (its content differs): "
                "pass that spec, or plan again"
            )
        raise UserError("the spec changed since this plan was made: run `ferry plan` again")
    check_state_unchanged(plan, read_state(location), location)


def check_state_unchanged(plan: Plan, current: State, location: StateLocation) -> None:
    """The state (`current`) is the one `plan` was made from, at the serial it read: run again
    under the state's lock, right after taking it, so an apply that refreshed while another
    one ran does not then apply what it planned from the state before that other apply's
    writes (break-it 12k M1; Terraform takes its lock before the refresh). A plan made on an
    empty state applies to one still empty (the apply's store made it). Raises UserError."""
    if plan.state_serial == 0 == current.serial:
        return
    if current.lineage != plan.state_lineage and not (plan.state_serial == 0 < current.serial):
        raise UserError(
            f"the state {location.display or location.identity} is not the one this plan was "
            "made from (another lineage"
            f"{'' if current.serial else '; it is empty'}): pass the plan's --state, or plan "
            "again"
        )
    if current.serial != plan.state_serial:
        raise UserError(
            f"the state changed since this plan was made (serial {plan.state_serial} "
            f"→ {current.serial}): run `ferry plan` again"
        )


def check_applicable(plan: Plan, console: Console, as_json: bool) -> None:
    """A plan with errors or steps this ferry cannot run: UserError (one line)."""
    errors = [d for d in plan.diagnostics if d.severity.value == "error"]
    if len(errors) == 1:  # the one line says it (the human view showed it with its place too)
        raise UserError(f"{errors[0].summary}: fix it and plan again")
    if errors:
        if as_json:  # the human view printed them with the plan; CI logs get them on stderr
            for diagnostic in errors:
                console.print(escape(diagnostic.render()))
        raise UserError(
            f"the plan has {len(errors)} errors, shown above (the first: {errors[0].summary}): "
            "fix them and plan again"
        )
    missing = unsupported(plan)
    if missing:
        listed = ", ".join(f"{c.address} ({c.action.value})" for c in missing[:5])
        raise UserError(f"this ferry cannot apply: {listed} (a plan from a newer ferry?)")


def apply_end_fields(
    plan: Plan,
    ok: bool,
    counts: tuple[int, int, int] = (0, 0, 0),
    copied: tuple[int, int, int] = (0, 0, 0),
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The fields of every apply_end event (engine.executor.events), whether or not steps ran,
    so a CI gate or a script reading `blocked` and `failed` always finds them: `counts` are the
    steps (done, failed, skipped), `copied` the bytes (read, zeroed, skipped), `seconds` the
    apply's duration."""
    done, failed, skipped = counts
    read, zeroed, bytes_skipped = copied
    return {
        "ok": ok,
        "blocked": plan.blocked,  # the targeted VMs only, as the exit code and blocked_line
        "done": done,
        "failed": failed,
        "skipped": skipped,
        "bytes_read": read,
        "bytes_zeroed": zeroed,
        "bytes_skipped": bytes_skipped,
        "seconds": round(seconds, 3),
    }


def nothing_applied(plan: Plan, blocked: bool) -> dict[str, Any]:
    """The apply_end event of an apply with no changes (`apply_end_fields`, all zero)."""
    return {
        "ts": round(time.time(), 3),
        "event": "apply_end",
        **apply_end_fields(plan, not blocked),
    }


def blocked_line(plan: Plan, reasons: bool = False) -> str:
    """A line naming the VMs the plan blocked (error concerns), or "": they make apply exit 1, so
    a CI gate cannot go green on a wave whose VMs were not applied. `reasons`: each VM's error
    concerns in the line (for a caller that did not print the plan, e.g. the Ansible modules:
    break-it 16 F4, an AAP job log said only "see their concerns above")."""
    wanted = {str(Address.parse(t).vm) for t in plan.targets}
    vms = [v for v in plan.vms if v.blocked and (not wanted or v.address in wanted)]
    if not vms:
        return ""
    if reasons:
        return f"Not applied, blocked by errors: {'; '.join(blocked_reasons(vms))}."
    names = ", ".join(v.address for v in vms)
    return f"Not applied, blocked by errors: {names} (see their concerns above)."


def _observed(
    applier: Applier, events: Events, state_lost: Callable[[], None] = lambda: None
) -> Any:
    """The walker's node function: the applier's, framed by node_start / node_end events. A
    step that fails on a state lost for good (unreachable past the retry window, or locked by
    another ferry meanwhile) calls `state_lost`: no new step starts (each would fail on its
    first record, some after acting)."""

    def run(node: Any) -> None:
        change = applier.changes[str(node)]
        # StoppedError when its VM's cutover failed: not begun, so neither node_start nor end
        applier.cutover.step_began(change.address)
        host = applier.host_of(change)
        events.emit(
            "node_start",
            address=change.address,
            kind=change.kind,
            action=change.action.value,
            vm=Address.parse(change.address).name,
            **({"host": host} if host else {}),
        )
        began = time.monotonic()
        try:
            applier.run(node)
        except BaseException as exc:
            applier.cutover.step_ended(change.address, exc)
            seconds = round(time.monotonic() - began, 3)
            events.emit(
                "node_end",
                address=change.address,
                outcome="failed",
                error=str(exc) if isinstance(exc, FerryError) else step_error(exc),
                seconds=seconds,
            )
            if applier.ctx.store.outage is not None:
                state_lost()
            raise
        applier.cutover.step_ended(change.address, None)
        seconds = round(time.monotonic() - began, 3)
        events.emit("node_end", address=change.address, outcome="done", seconds=seconds)

    return run


def _context(
    spec: dict[str, Any],
    si: Any,
    location: StateLocation,
    events: Events,
    *,
    verify: bool = False,  # made with --verify: every VM's copies over the whole disk
) -> Context:
    hosts = spec.get("conversion_hosts") or []
    if spec["destination"].get("output") == "image":
        hosts = []  # disks are written into files on this machine: no conversion host
    elif not hosts:
        raise UserError("the spec names no conversion_hosts: volumes are written on one")
    first: dict[str, Any] = hosts[0] if hosts else {}
    sources, devices = host_seams(spec, first, si)
    remote = _remote(spec)
    conn = connect_destination(spec["destination"])
    host = compute.conversion_server(conn, first["name"]) if first else None
    if first and host is None and not first.get("create") and (remote is None or len(hosts) < 2):
        # with agents and other hosts, its VMs are re-placed (Applier.host_for)
        raise UserError(f"conversion host {first['name']!r} is not a server in the cloud")
    return Context(
        si,
        conn,
        location.open(),  # last: a spec or cloud the apply cannot use leaves no state behind
        sources,
        devices,
        host.id if host is not None else "",  # booted by its host.<name> node first
        verify,
        log_dir=location.log_dir,
        events=events,
        remote=remote,
        conversion_host_name=str(first.get("name", "")),
        host_ids=_host_ids(conn, hosts) if remote is not None else {},
    )


def _host_ids(conn: Any, hosts: list[dict[str, Any]]) -> dict[str, str]:
    """Server id of each conversion host that exists (one the plan boots is added by its
    host.<name> node), by name: where the agents' syncs attach volumes."""
    found = {str(h["name"]): compute.conversion_server(conn, h["name"]) for h in hosts}
    return {name: str(server.id) for name, server in found.items() if server is not None}


def host_seams(spec: dict[str, Any], conversion_host: dict[str, Any], si: Any) -> tuple[Any, Any]:
    """(Sources, Devices) of a conversion host as the spec configures them: where its disks
    are read from (`si`: a vCenter session, which the https reader authenticates with) and
    where its attached volumes appear. Raises UserError when the spec gives no way to read
    disks."""
    source = spec["source"]
    target = target_from_spec(source["vcenter"], dict(os.environ))
    sources = _sources(spec, target, si)
    devices: Any = ByIdDevices()
    if conversion_host.get("devices") == "connection-info":
        lab_dir = source.get("lab_dir")
        devices = LabDevices(Path(lab_dir)) if lab_dir else ConnectionInfoDevices()
    return sources, devices


def _remote(spec: dict[str, Any]) -> Remote | None:
    """The agents' broker when the spec sets execution.broker (checked reachable), else None:
    syncs run in this process."""
    broker = broker_from_spec(spec, os.environ)
    if broker is None:
        return None
    app = make_app(broker)
    try:
        check_broker(app)
    finally:
        app.close()
    return Remote(broker, agent_digests(spec))


def _sources(spec: dict[str, Any], target: VCenterTarget, si: Any) -> Sources:
    """Where disks are read from, as `source.reader` says (spec.validate.reader_of); a reader
    the spec lacks the settings for is one line saying which setting."""
    source = spec["source"]
    vcenter = source["vcenter"]
    reader = reader_of(spec)
    if reader == "https":
        https = HttpsSources(target, si)
        return LabFaultSources(https, Path(source["lab_dir"])) if source.get("lab_dir") else https
    if reader == "vddk":
        if not vcenter.get("vddk_libdir"):
            raise UserError(
                "source.reader vddk needs source.vcenter.vddk_libdir (where VDDK is unpacked); "
                "or read disks with source.reader: https"
            )
        return VddkSources(target, Path(vcenter["vddk_libdir"]))
    if source.get("lab_dir"):
        return LabSources(Path(source["lab_dir"]))
    if vcenter.get("datastore_path"):
        return DatastorePathSources(Path(vcenter["datastore_path"]), si)
    raise UserError(
        "source.reader datastore_path needs source.vcenter.datastore_path (where the datastores "
        "are mounted); or read disks with source.reader: https"
    )


def _changes_per_vm(plan: Plan) -> Counter[str]:
    """How many changes the apply makes for each VM (its status line's total)."""
    addresses = [Address.parse(c.address) for c in plan.changes if c.action is not Action.NOOP]
    return Counter(a.name for a in addresses if a.kind == "vm")


def _graph(plan: Plan) -> Any:
    graph = nx.DiGraph()
    graph.add_nodes_from(c.address for c in plan.changes if c.action is not Action.NOOP)
    graph.add_edges_from(plan.edges)
    return graph


def run_plan(
    plan: Plan,
    spec: dict[str, Any],
    location: StateLocation,
    parallelism: int | None,
    shown: tuple[Console, HumanView | JsonView],
) -> int:
    """Apply the plan (it has changes) under the state's lock, events to a new log in the
    state's log_dir and to the view. Exit code: 0 all done, 1 a step failed or a VM blocked,
    130 stopped by a signal. Raises UserError when the spec's vCenter, cloud or conversion host
    cannot be used (nothing was changed)."""
    console, view = shown
    events = Events(log_path(location.log_dir), (view,))
    began = time.monotonic()
    with (
        session(target_from_spec(spec["source"]["vcenter"], dict(os.environ))) as si,
        nullcontext(_context(spec, si, location, events, verify=plan.verify)) as ctx,
        ctx.store.locked("apply"),
        view,
    ):
        store = ctx.store
        check_state_unchanged(plan, store.read(), location)  # now that no one else writes it
        applier = Applier(plan, ctx)
        _check_volumes_owned(applier)
        changes = _changes_per_vm(plan)
        copies = any(".disk[" in c.address and c.action is not Action.NOOP for c in plan.changes)
        if copies and ctx.remote is None:  # an agent checks its own when it starts
            found = applier.ctx.sources.check()  # before anything is touched
            if found:
                console.print(escape(found))
        events.emit(
            "apply_start",
            state=location.identity,  # whose log: states may share a log_dir (PostgreSQL's)
            summary=planfile.to_json(plan)["summary"],
            vms=[
                {
                    "name": v.name,
                    "target": v.target_name,
                    "mode": v.mode,
                    "changes": changes.get(v.name, 0),
                    "concerns": [f"{c.level.value}: {c.message}" for c in v.concerns],
                }
                for v in plan.vms
            ],
        )
        walker = _walker(plan, spec, applier, parallelism)
        walker.run = _observed(applier, events, walker.stop)  # a state lost for good stops it
        applier.ctx.release = walker.release
        check()  # a signal before the walk that a library swallowed: no step starts
        with _stop_on_signals(
            walker, applier.ctx.stop, events, console, applier.unsettled, applier.cutover.gate
        ):
            try:
                result = walker.walk()
            finally:
                applier.cleanup()
                # powered back on, or said why not: each line said once, as a step
                applier.cutover.settle_sources()
    _say_what_did_not_run(result, events, console)
    lost = state_lost_line(store, applier.unwritten)
    if lost:
        events.emit("state_not_written", message=lost, addresses=applier.unwritten)
        console.print(f"[red]error: {escape(lost)}[/]")
    stats = list(applier.ctx.copied.values())
    read, zeroed = sum(s.bytes_read for s in stats), sum(s.bytes_zeroed for s in stats)
    skipped = sum(s.bytes_skipped for s in stats)
    done = sum(o is Outcome.DONE for o in result.outcomes.values())
    blocked = blocked_line(plan)
    counts = (done, len(result.errors), len(result.skipped_because))
    ended = time.monotonic() - began
    fields = apply_end_fields(
        plan, result.ok and not blocked, counts, (read, zeroed, skipped), ended
    )
    events.emit("apply_end", **fields)
    events.close()
    store.close()
    console.print(summary_line(result.ok, done, len(result.outcomes), (read, zeroed, skipped)))
    if blocked:
        console.print(f"[red]{escape(blocked)}[/]")
    if result.ok:
        return 1 if blocked or lost else 0
    return STOPPED if applier.ctx.stop.is_set() else 1


def _check_volumes_owned(applier: Applier) -> None:
    """A plan is refused whole when a volume it deletes or writes is managed by another ferry
    state now (taken over with --adopt-lineage since the plan was made: break-it 12e item 3, a
    saved destroy deleted the other state's replica, a saved delta wrote it and took it back);
    the state's serial does not show it (the other state wrote only its own state and the
    volume's metadata). Read under the state's lock, before anything is touched.

    Raises UserError (the first such volume, and how many)."""
    lines = handed_since(applier.ctx.conn, applier.plan)
    if lines:
        more = f" (and {len(lines) - 1} more such volume(s))" if len(lines) > 1 else ""
        raise UserError(
            f"the plan is stale: {lines[0]}{more}: nothing applied; run `ferry plan` again "
            "(a new plan never deletes or writes it)"
        )


def default_parallelism(spec: dict[str, Any], agents: bool) -> int:
    """Steps at once when --parallelism is not given: every slot of the conversion hosts the
    apply writes on (each host's `max_parallel`, 2 by default: all hosts with agents, the
    first one in-process), twice with agents (a copy gives its slot back once its bytes are
    written and detaches beside the next one: the agent runs 2x max_parallel tasks), plus 2 for
    the steps beside the copies, at least 4 (break-it 14: a fixed 4 ran 4 copies across 3
    hosts of 2 slots, one host idle while the plan gave it the biggest VM)."""
    hosts = spec.get("conversion_hosts") or [{}]
    if not agents:
        return max(4, int(hosts[0].get("max_parallel", 2)) + 2)
    return max(4, 2 * sum(int(h.get("max_parallel", 2)) for h in hosts) + 2)


def _walker(plan: Plan, spec: dict[str, Any], applier: Applier, parallelism: int | None) -> Walker:
    """The plan's walk (its node function set by the caller), bounded by the slot pools. The
    VM of a step that needs its conversion host (a copy, a conversion, the snapshot that
    checks it first) is re-placed before it when its host is gone: on the walk's preparing
    thread (Applier.to_place asks the agents: seconds), neither in its scheduling thread (no
    step would start meanwhile) nor in a step's (it would hold a slot)."""
    pools, pools_of = _slot_pools(spec, applier, agents=applier.ctx.remote is not None)

    def prepare(node: Any) -> Callable[[], object] | None:
        change = applier.changes[str(node)]
        snapshot = change.kind == "source_snapshot" and change.action is not Action.DELETE
        if not snapshot and change.kind not in ("volume", "conversion"):
            return None
        return applier.to_place(Address.parse(change.address).name)

    if parallelism is None:
        parallelism = default_parallelism(spec, applier.ctx.remote is not None)

    left_off = applier.cutover.left_off_before()

    def urgent(node: Any) -> bool:
        """Every step of a VM whose source is off by ferry (this apply powered it off, or an
        earlier one left it off): it runs at once, never behind other VMs' copies (break-it
        12o H1: 101 s of db01's downtime waiting for two replicas' slots; 12p F1: its disks
        and conversion were urgent, then its server boot waited 6 min for replicas)."""
        name = Address.parse(str(node)).name
        return name in applier.cutover.powered_off or name in left_off

    return Walker(
        _graph(plan),
        lambda _: None,
        parallelism=parallelism,
        pools=pools,
        pools_of=pools_of,
        prepare=prepare,
        urgent=urgent,
    )


def _slot_pools(
    spec: dict[str, Any], applier: Applier, *, agents: bool
) -> tuple[dict[str, int], Callable[[Any], list[str]]]:
    """The walker's slot pools (each conversion host's `max_parallel`, each ESXi host's
    `reads_per_esxi_host`) and which a node holds: a disk copy a slot of its VM's conversion
    host and one of its ESXi host's reads; a conversion a slot of its VM's conversion host.
    With agents a host's pool is its agent's tasks (agent_concurrency: 2x max_parallel, of
    which max_parallel move bytes at once, the agent's own slots), so that the next copy's
    volume create, dispatch and attach run beside the copies that move bytes."""
    hosts = spec.get("conversion_hosts") or [{}]
    esxi = applier.hosts()

    def slots(entry: dict[str, Any]) -> int:
        return agent_concurrency(entry) if agents else int(entry.get("max_parallel", 2))

    pools = {"conversion": slots(hosts[0])}
    pools |= {f"conversion:{h['name']}": slots(h) for h in hosts[1:]}
    reads = int(spec["source"]["vcenter"].get("reads_per_esxi_host", ESXI_READS))
    pools |= {f"esxi:{h}": reads for h in esxi.values()}

    def pools_of(node: Any) -> list[str]:
        if str(node).endswith(".conversion"):
            return [applier.slot_pool(Address.parse(str(node)).name)]
        if ".disk[" not in str(node):
            return []
        vm = Address.parse(str(node)).name
        esxi_host = esxi.get(vm)
        return [applier.slot_pool(vm), *([f"esxi:{esxi_host}"] if esxi_host else [])]

    return pools, pools_of


def state_lost_line(store: StateStore, unwritten: list[str]) -> str:
    """The apply's line on a state it could not write to the end (its connection lost and not
    made again in time, or its lock taken by another ferry meanwhile): the state, the cause,
    and the records it lacks (the sources' own lines, said before, tell their power); "" when
    every record was written."""
    outage = store.outage
    if outage is None and not unwritten:
        return ""
    cause = one_line(str(outage)) if outage is not None else f"state {store.display}"
    listed = ", ".join(unwritten[:8]) + (
        f" and {len(unwritten) - 8} more" if len(unwritten) > 8 else ""
    )
    missing = f"not written: {listed}" if unwritten else "nothing left unwritten"
    return (
        f"{cause}; {missing} (the next plan reads the cloud and vCenter again: what this apply "
        "did is found, the rest planned again)"
    )


def _say_what_did_not_run(result: WalkResult, events: Events, console: Console) -> None:
    """Each step that failed, stopped or was skipped (after which one), one line each. What
    the cutover's settling did with each source (powered back on, left off, and why) it said
    as a step already: printed again here, each of its lines showed twice on the console."""
    for node, error in result.errors.items():
        if isinstance(error, StoppedError):
            console.print(f"[yellow]stopped: {node}: {escape(one_line(str(error)))}[/]")
        else:
            console.print(f"[red]failed: {node}: {escape(step_error(error))}[/]")
    for node, cause in result.skipped_because.items():
        events.emit("node_skipped", address=str(node), after=str(cause))
        # a step Ctrl-C/SIGTERM stopped did not fail: its dependents say so (break-it 16b L3)
        ended = "stopped" if isinstance(result.errors.get(cause), StoppedError) else "failed"
        console.print(f"[yellow]skipped: {node} (after {cause} {ended})[/]")


def summary_line(ok: bool, done: int, total: int, moved: tuple[int, int, int]) -> str:
    """Apply's last line: changes done, and what the copies did with the disks' bytes —
    `moved` is (data read and written, zeros written, holes and zeros skipped) in bytes, which
    together cover every byte the copies went over, e.g. 'Apply complete: 3 of 3 changes done;
    41.9 MiB of data copied, 0 B of zeros written, 2.0 GiB of holes skipped'."""
    read, zeroed, skipped = moved
    return (
        f"Apply {'complete' if ok else 'INCOMPLETE'}: {done} of {total} changes done; "
        f"{human(read)} of data copied, {human(zeroed)} of zeros written, "
        f"{human(skipped)} of holes skipped"
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _end_at_once(name: str, left: list[str], events: Events) -> NoReturn:
    """End ferry now (exit 130, as a kill: no cleanup runs), after one line on stderr (fd 2:
    /dev/null once the terminal hung up) saying what is left as it is, and the same event
    when the event log is free (the signal may have come while this thread writes it)."""
    said = "; ".join(left) if left else "nothing of a source left as it is"
    line = (
        f"stopped at once ({name} again): {said}; the next apply resumes from the last "
        "checkpoints\n"
    )
    with suppress(OSError):
        os.write(2, line.encode())
    lock = getattr(events, "lock", None)
    if lock is None or not lock.locked():
        events.emit("stopped_at_once", signal=name, left=left)
    os._exit(STOPPED)


GONE = (errno.EPIPE, errno.EIO)  # a closed pipe (`| head`), a terminal that hung up


class _Survivable:
    """sys.stdout or sys.stderr during the walk: when its reader has gone (a write fails with
    EPIPE or EIO), the terminal's descriptors go to /dev/null (_detach_terminal) and the write
    is done there, so no step of the apply fails on its output (break-it 12c item 17: `ferry
    apply … | grep -m1 …` failed a cutover after the power-off with the error "1"). The event
    log and the VMs' logs are files: they keep everything."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        return int(self._survive(self._inner.write, text))

    def flush(self) -> None:
        self._survive(self._inner.flush)

    def _survive(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except OSError as exc:
            if exc.errno not in GONE:
                raise
            _detach_terminal()
            return call(*args)  # the buffer is written to /dev/null now

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, …: the stream's own
        return getattr(self._inner, name)


def _detach_terminal() -> None:
    """stdout and stderr (file descriptors 1 and 2) to /dev/null: their terminal is gone."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
    finally:
        os.close(devnull)


INSIST_AFTER = 10.0  # seconds after the first stop: a second Ctrl-C/TERM then is insistence


def _no_stake() -> tuple[list[str], list[str]]:
    return [], []


@contextmanager
def _stop_on_signals(
    walker: Walker,
    stop: threading.Event,
    events: Events,
    console: Console,
    unsettled: Callable[[], tuple[list[str], list[str]]] = _no_stake,
    gate: AbstractContextManager[Any] | None = None,
) -> Iterator[None]:
    """SIGINT, SIGTERM or SIGHUP: start no new step and let the running ones end at a
    checkpoint (a copy flushes what it wrote and records where it got to; a conversion is ended
    and rolled back to its protection snapshots; a source ferry powered off is powered back on).
    SIGHUP is a closed terminal (an SSH session dropped mid-cutover): the terminal's output
    goes to /dev/null from then on (writing to it would fail the steps that put production
    back), the event log and the VMs' logs are still written.

    Later signals (the rule, break-it 12d item 3: systemd-logind ending a session sends SIGTERM
    and at once SIGHUP, a dropped SSH session SIGHUP twice, and a second signal ended ferry
    with the source off and nothing said): SIGHUP never ends ferry (no user is there to
    insist). A second SIGINT or SIGTERM ends ferry at once, as a kill would (the next apply
    resumes from the last checkpoint) — unless a source ferry powered off is not back yet
    (`unsettled()`'s first list): then only a third one, or a second one INSIST_AFTER seconds
    or more after the first, ends it, and putting the source back (bounded: seconds) goes on
    until then. Ending at once writes to stderr what it leaves: each source left off and
    each snapshot of ferry's left on a source (`unsettled()`, one line each).

    The first signal sets `stop` under `gate` (the cutover's stop gate, Cutover.go_ahead): a
    step about to power a source off either sees the stop and powers nothing off, or has
    recorded the power-off (in what `unsettled()` reads) before the stop is set."""
    first: list[float] = []  # monotonic seconds of the first stop signal
    insisted: list[int] = []  # SIGINT/SIGTERM received after it

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if signum == signal.SIGHUP:
                _detach_terminal()
                return
            insisted.append(signum)
            off, snapshots = unsettled()
            waited = time.monotonic() - (first[0] if first else 0.0)
            if off and len(insisted) < 2 and waited < INSIST_AFTER:
                console.print(
                    f"[yellow]{name} again: still putting back the source ferry powered off "
                    f"({'; '.join(off)}): seconds; once more to stop at once and leave it "
                    "off[/]"
                )
                return
            _end_at_once(name, [*off, *snapshots], events)
        if signum == signal.SIGHUP:
            _detach_terminal()
        first.append(time.monotonic())
        with gate or nullcontext():
            stop.set()
        walker.stop()
        events.emit("stopping", signal=name)
        console.print(
            "[yellow]stopping: no new steps; copies end at their next checkpoint, uploads to "
            "Glance at their next chunk, a running conversion is ended and rolled back, a "
            "source ferry powered off is powered back on (unless on_failure: leave_off) "
            "(Ctrl-C again to stop at once; while a source is being put back, a third time)[/]"
        )

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Survivable(sys.stdout), _Survivable(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        for signum, old in previous.items():
            signal.signal(signum, old)
