"""Graceful shutdown needs VMware Tools (issue 12): the lab's vCenter faults ShutdownGuest with
ToolsUnavailable unless tools run in the guest (web01 and db01 have them), so each power-off path
runs for real: graceful, no tools then a hard power-off (force_after), no tools and no
force_after (a clear error, the VM stays on). A guest given a shutdown time (extraConfig
ferry.lab.shutdown_seconds) goes off that long after ShutdownGuest returned, as on vSphere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyVmomi import vim

from engine.errors import VSphereError
from engine.providers.vsphere.power import (
    PowerOffPolicy,
    guest_state,
    power_off,
    power_on,
    power_state,
    powered_on_since,
    vcenter_now,
    wait_power_state,
)
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.tasks import wait_task
from tests.integration.test_cutover import power_events, vm_ref

pytestmark = pytest.mark.lab


@pytest.fixture
def powered_on_after(si: Any) -> Iterator[list[str]]:
    """Names of VMs a test powers off: powered on again after it."""
    names: list[str] = []
    yield names
    for name in names:
        power_on(si, vm_ref(si, name))


def test_graceful_shutdown_through_tools(si: Any, powered_on_after: list[str]) -> None:
    ref = vm_ref(si, "db01")
    assert fetch_property(si, ref, "guest.toolsRunningStatus") == "guestToolsRunning"
    powered_on_after.append("db01")
    started = si.CurrentTime()
    assert power_off(si, ref, PowerOffPolicy(timeout=30, force_after=False)) == "graceful"
    assert "VmGuestShutdownEvent" in power_events(si, ref, started)
    assert fetch_property(si, ref, "guest.toolsRunningStatus") == "guestToolsNotRunning"


def test_no_tools_then_force_after_powers_off_hard(si: Any, powered_on_after: list[str]) -> None:
    ref = vm_ref(si, "Reporting Ünit 1")
    assert fetch_property(si, ref, "guest.toolsRunningStatus") == "guestToolsNotRunning"
    with pytest.raises(vim.fault.ToolsUnavailable):
        ref.ShutdownGuest()
    assert power_state(si, ref) == "poweredOn"
    powered_on_after.append("Reporting Ünit 1")
    started = si.CurrentTime()
    assert power_off(si, ref, PowerOffPolicy(timeout=30, force_after=True)) == "hard"
    assert power_state(si, ref) == "poweredOff"
    assert "VmGuestShutdownEvent" not in power_events(si, ref, started)


def test_no_tools_without_force_after_is_a_clear_error_and_the_vm_stays_on(si: Any) -> None:
    ref = vm_ref(si, "win-app01")
    with pytest.raises(VSphereError) as failed:
        power_off(si, ref, PowerOffPolicy(timeout=30, force_after=False))
    message = str(failed.value)
    assert "VMware Tools are not running" in message and "force_after" in message
    assert "\n" not in message
    assert power_state(si, ref) == "poweredOn"


def test_a_suspended_source_is_powered_off_hard_only_with_force_after(
    si: Any, powered_on_after: list[str]
) -> None:
    ref = vm_ref(si, "Reporting Ünit 1")
    powered_on_after.append("Reporting Ünit 1")
    wait_task(si, ref.SuspendVM_Task(), "suspend")
    with pytest.raises(VSphereError, match=r"is suspended.*force_after"):
        power_off(si, ref, PowerOffPolicy(timeout=30, force_after=False))
    assert power_state(si, ref) == "suspended"
    assert power_off(si, ref, PowerOffPolicy(timeout=30, force_after=True)) == "hard"
    assert power_state(si, ref) == "poweredOff"


def shutdown_seconds(si: Any, ref: Any, seconds: float) -> None:
    """Give the VM's guest a shutdown time (0: the simulator's instant shutdown)."""
    option = vim.option.OptionValue(key="ferry.lab.shutdown_seconds", value=f"{seconds:g}")
    wait_task(si, ref.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=[option])), "shutdown time")


def test_a_slow_guest_goes_off_after_a_timed_out_shutdown_unless_power_cycled(
    si: Any, powered_on_after: list[str]
) -> None:
    """Break-it 12e item 6 needs a guest slower to shut down than power_off.timeout: the
    shutdown times out (the VM still on, its guest shuttingDown), then the guest goes off by
    itself. A power cycle during a slow shutdown ends it (the guest booted again stays on)."""
    ref = vm_ref(si, "db01")
    powered_on_after.append("db01")
    shutdown_seconds(si, ref, 3)
    try:
        began = time.monotonic()
        with pytest.raises(VSphereError, match=r"did not shut down within 1 s.*still be"):
            power_off(si, ref, PowerOffPolicy(timeout=1, force_after=False))
        assert power_state(si, ref) == "poweredOn"
        assert guest_state(si, ref) == "shuttingDown"
        assert wait_power_state(si, ref, "poweredOff", 30)
        assert time.monotonic() - began >= 3
        assert guest_state(si, ref) == "notRunning"
        power_on(si, ref)
        assert guest_state(si, ref) == "running"
        ref.ShutdownGuest()  # returns at once; then a power cycle before the guest is off
        wait_task(si, ref.PowerOffVM_Task(), "power off")
        power_on(si, ref)
        time.sleep(4)
        assert power_state(si, ref) == "poweredOn" and guest_state(si, ref) == "running"
        shutdown_seconds(si, ref, 0)  # set back: instant again (break-it 12f F6: it kept 3 s)
        began = time.monotonic()
        assert power_off(si, ref, PowerOffPolicy(timeout=5, force_after=False)) == "graceful"
        assert time.monotonic() - began < 2.5
    finally:
        shutdown_seconds(si, ref, 0)


def test_vcenters_events_show_a_power_cycle_since_a_time_of_its_clock(
    si: Any, powered_on_after: list[str]
) -> None:
    """What the cutover's boot checks read for a source without CBT (no changeId moves): the
    power-ons vCenter logged since a time of its own clock, for that VM only."""
    ref = vm_ref(si, "Reporting Ünit 1")  # CBT off
    other = vm_ref(si, "db01")
    powered_on_after.append("Reporting Ünit 1")
    since = vcenter_now(si)
    assert powered_on_since(si, ref, since) == []
    wait_task(si, ref.PowerOffVM_Task(), "power off")
    assert powered_on_since(si, ref, since) == []  # a power-off is not a run
    power_on(si, ref)
    ons = powered_on_since(si, ref, since)
    assert len(ons) == 1 and ons[0] >= since
    assert powered_on_since(si, other, since) == []
    assert powered_on_since(si, ref, vcenter_now(si)) == []
