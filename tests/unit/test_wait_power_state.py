"""wait_power_state keeps the spec's power_off.timeout: its backoff (0.1 s doubling) used to
overshoot it, so with a 2 s timeout a guest that went off at 3 s counted as a graceful shutdown
within it (found with the lab's slow-shutdown guest). A fake clock; no vCenter."""

from __future__ import annotations

from typing import Any

import pytest

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
