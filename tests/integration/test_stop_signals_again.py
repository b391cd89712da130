"""Two stop signals at once right after the power-off (break-it 12d item 3: systemd-logind
ending a session sends SIGTERM and at once SIGHUP): the second one ended ferry with os._exit,
the source stayed poweredOff with ferry's snapshot on it, nothing said. Now the walk winds down
and the source is powered back on and the snapshot removed; the rule is unit-tested in
tests/unit/test_apply_signals_again.py, this shows it on the lab's vCenter, once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from engine.lab.lab import Lab
from engine.providers.vsphere.power import power_state
from engine.providers.vsphere.read import fetch_property
from tests.integration.cli import until_line
from tests.integration.converge import records
from tests.integration.test_cutover import spec_with, vm_ref
from tests.integration.test_cutover_safety import (  # noqa: F401 (a fixture)
    clean_destination,
    replicated,
    start,
)

pytestmark = pytest.mark.lab
MiB = 1024**2


def test_sigterm_and_sighup_at_once_after_the_power_off_put_the_source_back(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    state = replicated(lab, tmp_path)
    cutover = spec_with(tmp_path, "web01", "mode: cutover\nconvert: false")
    lab.write("web01", 2000, 300 * MiB, 64 * MiB, seed=12)  # a final delta, read slowly
    lab.read_delay("web01", 2000, 1000)
    try:
        proc = start(lab, cutover, state)

        def term_and_hangup() -> None:
            os.killpg(proc.pid, signal.SIGTERM)
            os.killpg(proc.pid, signal.SIGHUP)  # at once, as logind does

        seen = until_line(proc, "source powered off", term_and_hangup)
        rest, _ = proc.communicate(timeout=120)
    finally:
        lab.read_errors("web01", 2000, None)
    out = seen + rest
    assert proc.returncode == 130, out
    vm = vm_ref(si, "web01")
    assert power_state(si, vm) == "poweredOn", out
    assert fetch_property(si, vm, "snapshot") is None, out  # ferry's snapshot removed
    assert "powered_off_at" not in records(state).get("vm.web01.conversion", {})
    log = max((tmp_path / "logs").glob("apply-*.jsonl"))
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "source_on" in events and "stopped_at_once" not in events, events
