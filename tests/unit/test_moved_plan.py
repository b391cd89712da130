"""A plan with moves, as people and programs see it: the human view says who moved where and
counts the moves, `--detailed-exitcode` calls a moves-only plan a change, `show --md` lists them,
and the saved plan reads back whole."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.console import Console

from engine.cli.plan import exit_code, render, summary
from engine.cli.show import markdown
from engine.model.plan import Action, Plan
from engine.planner import planfile
from engine.planner.make import make_plan
from engine.spec.validate import validate_text
from tests.unit.test_planner_cases import CASES, hydrate


def swap_plan() -> Plan:
    case = yaml.safe_load((CASES / "renamed-swap" / "case.yaml").read_text())
    loaded = validate_text(yaml.safe_dump(case["spec"]), "case.yaml", {})
    return make_plan(loaded.data, *hydrate(case))


def test_moves_are_shown_counted_and_a_change(tmp_path: Path) -> None:
    plan = swap_plan()
    assert {c.action for c in plan.changes} == {Action.MOVE, Action.NOOP}
    console = Console(record=True, width=240, highlight=False)
    render(plan, console)
    text = console.export_text()
    assert "-> vm.app-b move  vm.app-a has moved to vm.app-b: the same VM" in text
    assert "-> vm.app-a move  vm.app-b has moved to vm.app-a" in text
    assert summary(plan) == "Plan: 0 to create, 0 to update, 0 to destroy, 2 to move; 0 B to copy."
    assert exit_code(plan, detailed=True) == 2
    assert exit_code(plan, detailed=False) == 0
    assert "| `->` | `vm.app-b` | move |" in markdown(plan)
    planfile.save(plan, tmp_path / "p.plan", tmp_path / "spec.yaml", {})
    assert planfile.load(tmp_path / "p.plan", {}).plan == plan
    assert json.loads((tmp_path / "p.plan").read_text())["summary"]["move"] == 2
