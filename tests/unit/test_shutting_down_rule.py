"""The one rule the plan and the apply share for a source still going off from ferry's graceful
shutdown (engine.planner.diff.cutover.shutting_down_since; the executor's CutoverBase._going_off
reads vCenter and applies it): break-it 12f F1 and F3 each took such a source, still poweredOn,
for one powered back on."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model.desired import ConcernLevel
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.cutover import left_off_concerns, shutting_down_since
from engine.planner.diff.departed import destroy_concerns

KILLED = {"powered_off_at": 40.0}  # an apply killed in the graceful wait: the ask unrecorded
TIMED_OUT = {"powered_off_at": 40.0, "shutdown_asked_at": 41.0}  # a wait that timed out

RULE = [
    (KILLED, "poweredOn", "shuttingDown", 40.0),
    (KILLED, "poweredOn", "running", 0.0),  # it runs: powered back on by someone
    (KILLED, "poweredOn", "notRunning", 0.0),  # no ask known: Tools alone do not tell
    (KILLED, "poweredOn", None, 0.0),  # the guest state not read
    (KILLED, "poweredOff", "notRunning", 0.0),  # off: left off, not going
    (TIMED_OUT, "poweredOn", "shuttingDown", 41.0),
    (TIMED_OUT, "poweredOn", "notRunning", 41.0),  # Tools stopped before the power did
    (TIMED_OUT, "poweredOn", "running", 0.0),  # the guest declined the shutdown
    ({}, "poweredOn", "shuttingDown", 0.0),  # not ferry's: someone else shuts it down
]


@pytest.mark.parametrize(("attrs", "power", "guest", "since"), RULE)
def test_going_off_at_ferrys_request(
    attrs: dict[str, Any], power: str, guest: str | None, since: float
) -> None:
    assert shutting_down_since(attrs, power, guest) == since


def test_the_plan_says_a_source_going_off_at_ferrys_request_is_not_running() -> None:
    records = {
        "vm.web01.conversion": ResourceRecord(
            "vm.web01.conversion", "conversion", Status.IN_PROGRESS, KILLED
        )
    }
    (going,) = left_off_concerns(records, "poweredOn", "shuttingDown")
    assert (going.level, going.code) == (ConcernLevel.WARNING, "source-shutting-down")
    assert "source shutting down at ferry's request since 1970-01-01 00:00:40 UTC" in going.message
    (runs,) = left_off_concerns(records, "poweredOn", "running")
    assert runs.code == "source-on-unrecorded"
    (off,) = left_off_concerns(records, "poweredOff", "notRunning")
    assert off.code == "source-off"


def test_a_destroy_says_it_waits_for_a_source_going_off_at_ferrys_request() -> None:
    """Break-it 12f F1 C's plan: 'source powered off by ferry at …' while the guest was still
    shuttingDown; the destroy's power-on waits for it (engine.executor.settle)."""
    records = {
        "vm.web01.conversion": ResourceRecord(
            "vm.web01.conversion", "conversion", Status.IN_PROGRESS, KILLED
        )
    }
    (going,) = destroy_concerns("web01", records, "poweredOn", "shuttingDown")
    assert going.message == (
        "source shutting down at ferry's request since 1970-01-01 00:00:40 UTC (guest "
        "shuttingDown), no server yet: the destroy waits for it to go off, then powers it back on"
    )
    (off,) = destroy_concerns("web01", records, "poweredOff", "notRunning")
    assert off.message.endswith("no server yet: the destroy powers the source back on")
