"""The line that says which VMs a plan blocked carries their error concerns when the caller did
not print the plan (the Ansible modules: break-it 16 F4, an AAP job log said only "blocked by
errors: vm.db01 (see their concerns above)", and there was no above)."""

from __future__ import annotations

from engine.cli.apply import blocked_line
from engine.model.desired import Concern, ConcernLevel
from engine.model.plan import Plan, VMPlan

SHORT = "needs 1.1 GiB in work_dir /w (output: image), 500.0 MiB free there"


def _plan() -> Plan:
    concerns = (
        Concern(ConcernLevel.WARNING, "cbt-off", "CBT is off"),
        Concern(ConcernLevel.ERROR, "work-dir-short", SHORT),
    )
    db01 = VMPlan("vm.db01", "db01", "u1", "db01", "replicate", None, "", concerns, True)
    web01 = VMPlan("vm.web01", "web01", "u2", "web01", "replicate", None, "", (), False)
    return Plan("d" * 64, "", 1, (db01, web01), (), ())


def test_the_reasons_ride_in_the_line_when_asked() -> None:
    assert blocked_line(_plan()) == (
        "Not applied, blocked by errors: vm.db01 (see their concerns above)."
    )
    assert blocked_line(_plan(), reasons=True) == (
        f"Not applied, blocked by errors: vm.db01: {SHORT}."
    )
