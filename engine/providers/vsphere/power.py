"""Powering the source VM off before its final snapshot (graceful through VMware Tools, hard
only when the spec allows it) and back on after a failed cutover."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim, vmodl

from engine.errors import VSphereError
from engine.providers.vsphere.read import fetch_property
from engine.providers.vsphere.tasks import describe_fault, wait_task

POWERED_OFF = "poweredOff"
POWERED_ON = "poweredOn"
SUSPENDED = "suspended"


@dataclass(frozen=True)
class PowerOffPolicy:
    graceful: bool = True  # shut the guest down through VMware Tools first
    timeout: float = 300.0  # seconds a graceful shutdown may take
    force_after: bool = False  # then power off hard; without it a timeout is a failure

    @staticmethod
    def from_spec(settings: dict[str, Any] | None) -> PowerOffPolicy:
        settings = settings or {}
        return PowerOffPolicy(
            graceful=settings.get("policy", "graceful") == "graceful",
            timeout=float(settings.get("timeout", 300)),
            force_after=bool(settings.get("force_after", False)),
        )


def power_state(si: Any, vm: Any) -> str:
    return str(fetch_property(si, vm, "runtime.powerState"))


def disk_change_ids(si: Any, vm: Any) -> dict[int, str | None]:
    """Each virtual disk's changeId now ({device key: changeId}, None for a disk without
    changed block tracking): the backing's `changeId`, "the change ID of the virtual disk for
    the corresponding snapshot or virtual machine" (vSphere API, VirtualDiskFlatVer2BackingInfo).
    It moves at a power cycle (and a snapshot): a source powered on, written and powered off
    again is the same power state but not the same changeIds. Raises VSphereError when the VM
    is gone."""
    devices = fetch_property(si, vm, "config.hardware.device") or []
    return {
        int(dev.key): getattr(dev.backing, "changeId", None) or None
        for dev in devices
        if isinstance(dev, vim.vm.device.VirtualDisk)
    }


# A guest that runs again: powered on by anyone (DRS's own event is a subclass that vCenter
# logs under its own type id) or resumed from suspension (vSphere API reference, VmEvent types)
POWER_ON_EVENTS = ("VmPoweredOnEvent", "DrsVmPoweredOnEvent", "VmResumingEvent")


def vcenter_now(si: Any) -> datetime:
    """vCenter's clock now (ServiceInstance.CurrentTime): the time its events are stamped in,
    whatever the clock of the machine running ferry says. Raises VSphereError."""
    try:
        now = si.CurrentTime()
    except vmodl.MethodFault as exc:
        raise VSphereError(f"reading vCenter's time failed: {describe_fault(exc)}") from exc
    return now if isinstance(now, datetime) else datetime.fromisoformat(str(now))


def powered_on_since(si: Any, vm: Any, since: datetime) -> list[datetime]:
    """When the VM was powered on or resumed at `since` or later (vCenter's clock), oldest
    first, from vCenter's event history (EventManager.QueryEvents filtered by entity, time and
    POWER_ON_EVENTS): the one record that a guest ran which does not need changed block
    tracking (a disk without CBT has no changeId to move). Raises VSphereError."""
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
        time=vim.event.EventFilterSpec.ByTime(beginTime=since),
        eventTypeId=list(POWER_ON_EVENTS),
        maxCount=100,
    )
    try:
        events = si.content.eventManager.QueryEvents(spec) or []
    except vmodl.MethodFault as exc:
        raise VSphereError(
            f"reading the power events of {vm._moId} failed: {describe_fault(exc)}"
        ) from exc
    return sorted(e.createdTime for e in events if e.createdTime >= since)


def guest_state(si: Any, vm: Any) -> str:
    """The guest's operation mode as VMware Tools report it (`guest.guestState`: 'running',
    'shuttingDown', 'resetting', 'standby', 'notRunning' or 'unknown'); 'unknown' when unset."""
    return str(fetch_property(si, vm, "guest.guestState") or "unknown")


def wait_power_state(
    si: Any, vm: Any, state: str, timeout: float, stop: threading.Event | None = None
) -> bool:
    """Poll until the VM reports `state` (backoff 0.1 s doubling to 5 s, the last wait cut to
    the deadline, polled once more there); False when `timeout` seconds passed first, or at
    once when `stop` is set (a Ctrl-C: checked between polls). (The
    backoff used to overshoot: a spec's 2 s timeout waited 3.1 s, and a guest that went off
    at 3 s counted as a graceful shutdown within it.)"""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while power_state(si, vm) != state:
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return False
        if stop is not None:
            stop.wait(min(delay, left))
        else:
            time.sleep(min(delay, left))
        delay = min(delay * 2, 5.0)
    return True


def _nothing() -> None:
    """No one to tell."""


def power_off(
    si: Any,
    vm: Any,
    policy: PowerOffPolicy,
    requested: Callable[[], None] = _nothing,
    stop: threading.Event | None = None,
    *,
    asked: bool = False,
) -> str:
    """Power the VM off; returns how: 'already', 'graceful' or 'hard'.

    `stop` (set on Ctrl-C) ends the graceful wait at once, and a stopped wait never goes on to
    a hard power-off (break-it 12f F5: a Ctrl-C during the wait hard-powered production off at
    the timeout, force_after, then the settle powered it back on).

    `requested` is called once the guest accepted the graceful shutdown (ShutdownGuest returns
    at once on vSphere; the guest goes on shutting down after a timeout here, so a caller that
    records it can tell a guest still going off from one powered on by someone).

    `asked`: the guest is still going off from a graceful shutdown ferry asked for earlier (an
    apply killed or timed out during its wait; the caller read guest.guestState): with a
    graceful policy it is only waited for, not asked again (break-it 12f F3), and `requested`
    is not called.

    The power state is read first: a suspended VM is powered off hard with `force_after`, else
    refused. Graceful first when the policy says so (ShutdownGuest through VMware Tools, waiting
    up to `policy.timeout` seconds), then hard only with `policy.force_after`. Raises
    VSphereError when the graceful shutdown faults (e.g. ToolsUnavailable) or times out without
    force_after (the VM is left on), or the hard power-off fails."""
    state = power_state(si, vm)  # read now, right before the final snapshot
    if state == POWERED_OFF:
        return "already"
    if state == SUSPENDED:  # no guest runs to shut down: hard, or not at all
        if not policy.force_after:
            raise VSphereError(
                f"{vm._moId} is suspended: a graceful shutdown cannot run in a suspended guest, "
                "and the spec does not allow a hard power-off (power_off.force_after)"
            )
        _hard_off(si, vm)
        return "hard"
    if policy.graceful:
        how = "asked" if asked else _ask_shutdown(vm, policy, requested)
        if how == "already":
            return how
        if how == "asked" and _shut_down(si, vm, policy, stop):
            return "graceful"
    _hard_off(si, vm)
    return "hard"


def _ask_shutdown(vm: Any, policy: PowerOffPolicy, requested: Callable[[], None]) -> str:
    """Ask VMware Tools to shut the guest down (ShutdownGuest): 'asked' (`requested()` called),
    'already' (off by then), or 'hard' (the ask failed and force_after allows a hard power-off).
    Raises VSphereError when the ask failed and it does not."""
    try:
        vm.ShutdownGuest()
    except vim.fault.ToolsUnavailable as exc:  # no tools: only a hard power-off can do it
        if not policy.force_after:
            raise VSphereError(
                f"graceful shutdown of {vm._moId} failed: VMware Tools are not running in "
                "the guest, and the spec does not allow a hard power-off "
                "(power_off.force_after); the VM stays on"
            ) from exc
        return "hard"
    except vim.fault.InvalidPowerState:
        return "already"
    except vmodl.MethodFault as exc:  # the guest or the server refused
        if not policy.force_after:
            raise VSphereError(
                f"graceful shutdown of {vm._moId} failed: {describe_fault(exc)}"
            ) from exc
        return "hard"
    requested()
    return "asked"


def _shut_down(si: Any, vm: Any, policy: PowerOffPolicy, stop: threading.Event | None) -> bool:
    """Wait for the guest the VM's Tools were asked to shut down: True when it went off within
    `policy.timeout`, False when a hard power-off may follow (force_after). Raises VSphereError
    when it may not: no force_after, or a stop during the wait (never a hard power-off then)."""
    if wait_power_state(si, vm, POWERED_OFF, policy.timeout, stop):
        return True
    if stop is not None and stop.is_set():
        raise VSphereError(
            f"stopped while {vm._moId} shut down gracefully: no hard power-off after a stop; "
            "the guest may still be going off"
        )
    if not policy.force_after:
        raise VSphereError(
            f"{vm._moId} did not shut down within {policy.timeout:.0f} s and the spec does not "
            "allow a hard power-off (power_off.force_after); the guest may still be shutting "
            "down"
        )
    return False


def _hard_off(si: Any, vm: Any) -> None:
    try:
        wait_task(si, vm.PowerOffVM_Task(), f"powering off {vm._moId}")
    except VSphereError:
        if power_state(si, vm) != POWERED_OFF:
            raise


def power_on(si: Any, vm: Any) -> bool:
    """Power the VM back on (after a failed cutover); already on is fine. Returns whether
    this call powered it on (False: someone had already)."""
    if power_state(si, vm) == POWERED_ON:
        return False
    try:
        wait_task(si, vm.PowerOnVM_Task(), f"powering on {vm._moId}")
    except vmodl.MethodFault as exc:
        raise VSphereError(f"powering on {vm._moId}: {describe_fault(exc)}") from exc
    return True
