"""`--target` on a VM in cutover mode (break-it pass 12b, item 7): a selection that keeps the
source's power-off but neither the server nor the conversion (a disk) used to plan the power-off,
the final sync of that disk and the power-on: production down for a sync that boots nothing. It
is refused with one line naming the targets that make sense; the whole cutover, its conversion
(a rehearsal up to converted volumes, the source powered back on after) and the parts that need
no power-off still plan."""

from __future__ import annotations

import pytest

from engine.addresses import Address
from engine.errors import UserError
from tests.unit.test_planner_cases import _plan_of


@pytest.mark.parametrize("target", ["vm.web01.disk[2000]", "vm.web01.snapshot"])
def test_a_part_of_a_cutover_that_powers_the_source_off_is_refused(target: str) -> None:
    with pytest.raises(UserError) as raised:
        _plan_of("new-nic-cutover", (Address.parse(target),))
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(f"--target {target}: web01 is in cutover mode")
    assert "target vm.web01 for the whole cutover" in line
    assert "vm.web01.conversion to rehearse it" in line
    assert "a part that needs no power-off (vm.web01.port[1])" in line
    assert "set its mode: replicate" in line


@pytest.mark.parametrize(
    ("target", "planned"),
    [
        ("vm.web01", {"snapshot", "disk[2000]", "port[1]", "conversion", "server"}),
        ("vm.web01.server", {"snapshot", "disk[2000]", "port[1]", "conversion", "server"}),
        ("vm.web01.conversion", {"snapshot", "disk[2000]", "port[1]", "conversion"}),
        ("vm.web01.port[1]", {"port[1]"}),
    ],
)
def test_the_whole_cutover_and_parts_without_the_power_off_still_plan(
    target: str, planned: set[str]
) -> None:
    plan = _plan_of("new-nic-cutover", (Address.parse(target),))
    got = {c.address.removeprefix("vm.web01.") for c in plan.changes if c.action.value != "no-op"}
    assert planned <= got
    if target.endswith("port[1]"):
        assert not any(c.kind == "source_snapshot" for c in plan.changes)
