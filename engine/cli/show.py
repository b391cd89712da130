"""`ferry show PLANFILE [--json | --md]`: a saved plan, for people (the same view as `plan`), for
programs (plan.v1 JSON) or for a pull-request comment (Markdown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.addresses import Address
from engine.cli.console import make_console
from engine.cli.plan import (
    group_heading,
    host_lines,
    render,
    summary,
    vm_facts,
)
from engine.model.plan import SYMBOLS, Action, Change, Plan
from engine.planner import planfile
from engine.units import human


def show(
    plan_file: Annotated[Path, typer.Argument(help="A plan saved with `ferry plan --out`.")],
    as_json: Annotated[bool, typer.Option("--json", help="The plan as plan.v1 JSON.")] = False,
    as_md: Annotated[
        bool, typer.Option("--md", help="Markdown, for a pull-request comment.")
    ] = False,
) -> None:
    """Show a saved plan: what `ferry apply PLANFILE` will do."""
    saved = planfile.load(plan_file)
    plan = saved.plan
    if as_json:
        data = planfile.to_json(plan) | {"integrity": {"sha256": saved.sha256}}
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif as_md:
        typer.echo(markdown(plan, saved.spec_file, saved.seal_line()), nl=False)
    else:
        render(plan, make_console())
        typer.echo(saved.seal_line())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(change: Change) -> str:
    size = ""
    if change.bytes is not None:
        size = f"{'~' if change.estimate else ''}{human(change.bytes)}"
        if change.zeros:
            size += f" + {human(change.zeros)} zeros"
    return (
        f"| `{SYMBOLS[change.action]}` | `{_cell(change.address)}` | {change.action.value} "
        f"| {size} | {_cell(change.reason)} |"
    )


def markdown(plan: Plan, spec_file: str = "", seal: str = "") -> str:
    """The plan as a pull-request comment: summary (and the saved plan's seal), errors first,
    then one table per VM."""
    lines = [f"### ferry plan{f' of `{spec_file}`' if spec_file else ''}", "", summary(plan), ""]
    lines += [f"`{seal}`", ""] if seal else []
    errors = [d.render() for d in plan.diagnostics if d.severity.value == "error"]
    warnings = [d.render() for d in plan.diagnostics if d.severity.value != "error"]
    errors += [
        f"{v.name}: {c.message}" for v in plan.vms for c in v.concerns if c.level.value == "error"
    ]
    if errors:
        lines += ["**Blocking errors:**", "", *[f"- {_cell(e)}" for e in errors], ""]
    if warnings:
        lines += ["**Warnings:**", "", *[f"- {_cell(w)}" for w in warnings], ""]
    by_vm: dict[str, list[Change]] = {}
    for change in plan.changes:
        if change.action is not Action.NOOP:
            by_vm.setdefault(str(Address.parse(change.address).vm), []).append(change)
    for vm in plan.vms:
        flavor = f", flavor {vm.flavor}" if vm.flavor else ""
        downtime = "".join(f", {fact}" for fact in vm_facts(vm, bool(plan.hosts)))
        lines.append(f"#### `{_cell(vm.address)}` → {_cell(vm.target_name)} ({vm.mode}{flavor}"
                     f"{downtime}){' — **blocked**' if vm.blocked else ''}")  # fmt: skip
        lines += [f"- {c.level.value}: {_cell(c.message)}" for c in vm.concerns]
        changes = by_vm.pop(vm.address, [])
        if changes:
            lines += ["", "| | address | action | bytes | why |", "|-|-|-|-|-|"]
            lines += [_row(c) for c in changes]
        elif not vm.blocked:
            lines.append("- no changes")
        lines.append("")
    for address, changes in by_vm.items():
        lines += [f"#### `{_cell(address)}` ({group_heading(address, plan)})", ""]
        lines += ["| | address | action | bytes | why |", "|-|-|-|-|-|", *map(_row, changes), ""]
    if plan.hosts:
        lines += ["#### Conversion hosts", "", *[f"- {_cell(line)}" for line in host_lines(plan)]]
    return "\n".join(lines)
