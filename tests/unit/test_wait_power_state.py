"""wait_power_state keeps the spec's power_off.timeout: its backoff (0.1 s doubling) used to
overshoot it, so with a 2 s timeout a guest that went off at 3 s counted as a graceful shutdown
within it (found with the lab's slow-shutdown guest). A fake clock; no vCenter."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.errors import VSphereError
from engine.providers.vsphere import power


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.polls: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(power.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(power.time, "sleep", fake.sleep)
    return fake


def goes_off_at(clock: Clock, at: float) -> Any:
    def state(_si: Any, _vm: Any) -> str:
        clock.polls.append(clock.now)
        return power.POWERED_OFF if clock.now >= at else power.POWERED_ON

    return state


CASES = [(3.0, 2.0, False), (1.9, 2.0, True), (2.0, 2.0, True), (40.0, 30.0, False)]


@pytest.mark.parametrize(("off_at", "timeout", "within"), CASES)
def test_the_wait_ends_at_its_timeout_and_polls_there_once_more(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, off_at: float, timeout: float, within: bool
) -> None:
    monkeypatch.setattr(power, "power_state", goes_off_at(clock, off_at))
    assert power.wait_power_state(None, None, power.POWERED_OFF, timeout) is within
    assert max(clock.polls) <= timeout + 1e-9
    assert clock.polls[-1] == pytest.approx(timeout) or within


class VM:
    """A VM whose Tools accept a shutdown that never ends; a hard power-off is recorded."""

    _moId = "vm-42"  # noqa: N815 (pyVmomi's attribute)

    def __init__(self) -> None:
        self.hard = 0

    def ShutdownGuest(self) -> None:  # noqa: N802 (vSphere's method name)
        pass

    def PowerOffVM_Task(self) -> None:  # noqa: N802
        self.hard += 1


def test_a_stop_during_the_graceful_wait_never_powers_off_hard(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12f F5: Ctrl-C during the graceful wait went on waiting (300 s by default),
    then powered production off hard (force_after) for an apply that was stopping."""
    monkeypatch.setattr(power, "power_state", goes_off_at(clock, 1e9))
    stop, vm = threading.Event(), VM()
    monkeypatch.setattr(stop, "wait", clock.sleep)
    policy = power.PowerOffPolicy(timeout=300, force_after=True)
    with pytest.raises(VSphereError, match=r"stopped while vm-42 shut down gracefully: no hard"):
        power.power_off(None, vm, policy, stop.set, stop)  # the stop comes with the ask
    assert vm.hard == 0
    assert clock.now < 1  # the wait ended at once, not at the 300 s timeout


class AskedVM(VM):
    """A VM whose guest is still going off from a shutdown asked before: asking again fails
    the test."""

    def ShutdownGuest(self) -> None:  # noqa: N802 (vSphere's method name)
        raise AssertionError("ShutdownGuest asked again")


def test_a_guest_still_going_off_from_ferrys_shutdown_is_waited_for_not_asked_again(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 12f F3: the re-run of a cutover whose apply was killed during the graceful
    wait asked the guest again; it only waits (and `requested` is not called: the caller
    keeps the first ask)."""
    monkeypatch.setattr(power, "power_state", goes_off_at(clock, 6.5))
    vm, requested = AskedVM(), threading.Event()
    policy = power.PowerOffPolicy(timeout=60)
    assert power.power_off(None, vm, policy, requested.set, asked=True) == "graceful"
    assert not requested.is_set() and vm.hard == 0
    assert 6.5 <= clock.now < 60  # went off at 6.5 s: the wait ended there (its backoff)


def test_a_guest_still_going_off_past_the_timeout_fails_as_a_first_ask_does(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same wait, past power_off.timeout without force_after: the VM is left on, said."""
    monkeypatch.setattr(power, "power_state", goes_off_at(clock, 1e9))
    vm = AskedVM()
    with pytest.raises(VSphereError, match=r"did not shut down within 5 s"):
        power.power_off(None, vm, power.PowerOffPolicy(timeout=5), asked=True)
    assert vm.hard == 0
