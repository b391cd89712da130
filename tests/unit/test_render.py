"""The human view of a plan: objects shared by the spec's VMs (a network or flavor ferry makes
for them) are not listed as "no longer in the spec" (issue 13, item 4)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from engine.cli.plan import render
from engine.cli.show import markdown
from engine.diagnostics import Diagnostic, Severity
from engine.model.plan import Plan
from engine.planner.planfile import from_json

CASES = Path(__file__).parents[1] / "cases"


def _plan(case: str) -> Plan:
    data = json.loads((CASES / case / "expected.json").read_text())
    data.pop("exit_code")
    return from_json(data | {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64})


def test_a_network_made_for_the_vms_is_shared_not_departed() -> None:
    plan = _plan("network-create")
    out = io.StringIO()
    render(plan, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "network.net-new (shared by the spec's VMs)" in text, text
    assert "no longer in the spec" not in text
    assert "`network.net-new` (shared by the spec's VMs)" in markdown(plan)


def test_a_destroy_plan_says_what_is_no_longer_needed() -> None:
    out = io.StringIO()
    render(_plan("destroy-cutover"), Console(file=out, width=200, color_system=None))
    assert "(no longer needed)" in out.getvalue()


def test_markdown_lists_warnings_apart_from_blocking_errors() -> None:
    plan = _plan("network-create")
    warned = replace(
        plan,
        diagnostics=(Diagnostic(Severity.WARNING, "vms[1] may select vm.gone (a folder)"),),
    )
    text = markdown(warned)
    assert "**Blocking errors:**" not in text
    assert "**Warnings:**\n\n- " in text and "may select vm.gone" in text


def test_the_terminal_and_markdown_plans_head_each_vm_with_the_same_facts() -> None:
    """Each VM's heading in `ferry show --md` (the CI gate's pull-request comment) says what the
    terminal plan says: the downtime estimate, the verification, the reader its disks are read
    through, in the same order (break-it 15 F8: the reader was missing from the Markdown)."""
    plan = _plan("network-create")
    vm = replace(plan.vms[0], reader="https", downtime_seconds=65.0)
    plan = replace(plan, vms=(vm, *plan.vms[1:]))
    out = io.StringIO()
    render(plan, Console(file=out, width=300, color_system=None))
    terminal = next(line for line in out.getvalue().splitlines() if line.startswith(vm.address))
    heading = next(line for line in markdown(plan).splitlines() if f"`{vm.address}`" in line)
    for fact in ("estimated cutover downtime ~1 min 5 s", "disks read via https"):
        assert fact in terminal and fact in heading, (terminal, heading)
    assert terminal.index("downtime") < terminal.index("via https")
    assert heading.index("downtime") < heading.index("via https")
