"""The plan's last line never says "No changes: the destination matches the spec" when the plan
has errors (a missing datacenter printed its error, then that line, exit 1; issue 13 item 4/6)."""

from __future__ import annotations

from engine.cli.plan import summary
from tests.unit.test_planner_cases import _plan_of


def test_a_plan_with_errors_and_no_changes_says_there_is_no_plan() -> None:
    plan = _plan_of("datacenter-missing", ())
    assert [d.summary for d in plan.diagnostics] == [
        "no datacenter 'DC9' in vCenter (datacenters: /DC0, /Region-A/DC1)"
    ]
    assert summary(plan) == (
        "No plan: 1 error(s) above; fix them and plan again (nothing was changed)."
    )


def test_a_plan_without_errors_and_changes_is_in_sync() -> None:
    assert summary(_plan_of("rerun-no-changes", ())) == (
        "No changes: the destination matches the spec."
    )
