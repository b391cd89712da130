"""A cutover of a guest whose VMware Tools do not run: the plan says what the power-off will
do (break-it 12o L4: "a graceful shutdown will time out then power off", where vSphere refuses
the shutdown at once and the apply powered off hard at once)."""

from __future__ import annotations

from engine.planner.desired import _no_tools


def test_with_force_after_the_plan_says_hard_at_once() -> None:
    said = _no_tools({"power_off": {"policy": "graceful", "force_after": 300}})
    assert "powered off hard at once" in said and "time out" not in said


def test_without_force_after_the_plan_says_the_cutover_fails_with_the_vm_on() -> None:
    said = _no_tools({})
    assert said.endswith("the cutover fails at the power-off, the VM stays on")
