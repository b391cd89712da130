"""Graceful shutdown needs VMware Tools (issue 12): the lab's vCenter faults ShutdownGuest with
ToolsUnavailable unless tools run in the guest (web01 and db01 have them), so each power-off path
runs for real: graceful, no tools then a hard power-off (force_after), no tools and no
force_after (a clear error, the VM stays on)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyVmomi import vim

from engine.errors import VSphereError
from engine.providers.vsphere.power import PowerOffPolicy, power_off, power_on, power_state
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
