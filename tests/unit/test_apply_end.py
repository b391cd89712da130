"""`apply --json`'s last event, apply_end, has the same fields whether or not steps ran: an
apply with no changes whose VMs were all blocked printed only ok/done, so a CI gate (and the
chaos harness) reading `blocked` and `failed` found nothing (chaos seed 42 with all operations:
both VMs held a snapshot someone else took, the https reader refused them)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from engine.cli.apply import nothing_applied
from engine.planner.planfile import from_json

CASE = Path(__file__).parents[1] / "cases" / "adopt-other-state" / "expected.json"
FIELDS = {"ts", "event", "ok", "blocked", "done", "failed", "skipped", "bytes_read",
          "bytes_zeroed", "bytes_skipped", "seconds"}  # fmt: skip


def test_a_blocked_apply_with_no_changes_says_how_many_vms_were_blocked() -> None:
    data = json.loads(CASE.read_text())
    data.pop("exit_code", None)
    data.setdefault("created_at", "2026-11-30T00:00:00Z")
    data.setdefault("spec_digest", "0" * 64)
    plan = from_json(data)
    blocked = sum(v.blocked for v in plan.vms)
    assert blocked == 2  # web01 and app01
    event = nothing_applied(replace(plan, changes=()), blocked=True)
    assert set(event) == FIELDS
    assert event["event"] == "apply_end" and event["ok"] is False
    assert (event["blocked"], event["failed"], event["done"]) == (2, 0, 0)
