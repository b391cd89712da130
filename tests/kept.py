"""Child processes a test starts on purpose for later tests too, which the leftover check of
tests/conftest.py (`_no_leftover_processes`) leaves alone."""

from __future__ import annotations

from engine.proc import live_processes

KEPT: set[tuple[int, int]] = set()  # (pid, start time): a PID is reused only with another


def outlives_test(pid: int) -> None:
    """Mark the live process `pid` (an agent a drill restarts in place of its module fixture's)
    as one that outlives the test that started it."""
    KEPT.update((p.pid, p.started) for p in live_processes() if p.pid == pid)
