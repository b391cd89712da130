"""Fault drills on the lab (issue: day-one trust). During an apply: cinder-api, neutron and
RabbitMQ each stop for ~20 s and start again; vCenter ends ferry's session; the conversion
host's device fills up (ENOSPC). Each drill: the apply completes (retries are bounded, backed
off and logged) or fails with a one-line message, no traceback; a re-run converges: nothing
duplicated, every volume byte-equal to its disk.

A vcsim restart would not end a session the way a vCenter restart does: it would also forget
the whole simulated inventory. The session drill ends ferry's session the way vCenter does on
restart or idle timeout — SessionManager.TerminateSession from an administrator's session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from engine.errors import VSphereError
from engine.lab.estate import LabVM, find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.read import fetch_property, retrieve
from engine.providers.vsphere.session import session
from engine.providers.vsphere.tasks import wait_task
from tests.integration.cli import ROOT, ferry
from tests.integration.converge import assert_converged, assert_nothing_left

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
OUTAGE = 20.0


@dataclass
class Run:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    fault_at: float = 0.0
    notes: list[str] = field(default_factory=list)


def spec_for(tmp_path: Path, name: str, extra: str = "") -> Path:
    text = (ROOT / "plans" / "demo.yaml").read_text()
    head = text.split("\nvms:")[0]
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"{head}\nvms:\n  - name: {name}\n{extra}")
    return spec


def apply_with_fault(
    lab: Lab,
    spec: Path,
    state: Path,
    when: Callable[[dict[str, Any]], bool],
    fault: Callable[[], None],
) -> Run:
    """`ferry apply --json`; `fault` runs in a thread from the first event `when` accepts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "apply", str(spec), "--auto-approve", "--json",
         "--state", str(state)],
        cwd=ROOT,
        env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    events, drill, began = [], None, time.monotonic()
    for line in proc.stdout:
        event = json.loads(line)
        events.append(event)
        if drill is None and when(event):
            drill = threading.Thread(target=fault, daemon=True)
            drill.start()
            fault_at = time.monotonic() - began
    proc.wait(timeout=600)
    reader.join(timeout=10)
    if drill is not None:
        drill.join(timeout=300)
    assert drill is not None, "the apply ended before the drill could start"
    return Run(proc.returncode, events, "".join(err), fault_at)


def outage(lab: Lab, service: str) -> Callable[[], None]:
    def run() -> None:
        lab.outage(service)
        time.sleep(OUTAGE)
        lab.recover(service)

    return run


def settle(lab: Lab, run: Run, spec: Path, state: Path) -> str:
    """After the drill: either the apply completed, or it failed cleanly and a re-run
    completes; then a plan has nothing left to do. Returns what happened, for the report."""
    assert "Traceback" not in run.stderr, run.stderr
    if run.returncode == 0:
        outcome = "completed during the fault"
    else:
        failures = [e for e in run.events if e.get("outcome") == "failed"]
        assert failures, run.stderr
        assert all("\n" not in e["error"].strip() for e in failures), failures
        again = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
        assert again.returncode == 0, again.stdout + again.stderr
        outcome = f"failed cleanly ({failures[0]['error'][:120]}), re-run converged"
    plan = ferry(lab, "plan", str(spec), "--json", "--state", str(state))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert_nothing_left(json.loads(plan.stdout))
    return outcome


def vm(name: str) -> LabVM:
    found = find_vm(name)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("service", "name", "extra"),
    [
        ("cinder-api", "web01", ""),
        ("rabbitmq", "db01", ""),
        ("neutron-api", "build-old", "    mode: cutover\n    convert: false\n"),
    ],
)
def test_a_service_outage_during_an_apply(
    lab: Lab, tmp_path: Path, service: str, name: str, extra: str
) -> None:
    spec, state = spec_for(tmp_path, name, extra), tmp_path / "ferry.db"
    run = apply_with_fault(
        lab, spec, state, lambda e: e["event"] == "apply_start", outage(lab, service)
    )
    outcome = settle(lab, run, spec, state)
    retried = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    print(f"\ndrill {service} ({name}): {outcome}; {len(retried)} retries logged")
    assert_converged(lab, state, vm(name), server=bool(extra))


def test_vcenter_ends_the_session_mid_apply(lab: Lab, tmp_path: Path) -> None:
    """Through the demo spec's https reader: the sessions end as the first copy starts, so
    its nbdkit's reads and the NBD connections its copy opens meet 401 from /folder until the
    cookie script has ferry log in again."""
    spec, state = spec_for(tmp_path, "web01"), tmp_path / "ferry.db"
    assert "  reader: https" in spec.read_text()
    ended: list[str] = []

    def end_sessions() -> None:
        with session(lab.vcenter_target()) as admin:
            manager = admin.content.sessionManager
            own = manager.currentSession.key
            others = [s.key for s in manager.sessionList if s.key != own]
            manager.TerminateSession(others)
            ended.extend(others)

    run = apply_with_fault(lab, spec, state, lambda e: e["event"] == "copy", end_sessions)
    assert ended, "no session of the apply was found to end"
    assert run.returncode == 0, run.stderr
    assert "ended ferry's session: logged in again" in run.stderr
    end = next(e for e in run.events if e["event"] == "apply_end")
    print(
        f"\ndrill vCenter session (web01, https): {len(ended)} session(s) ended "
        f"{run.fault_at:.1f} s in; the apply completed in {end['seconds']} s, "
        f"{run.stderr.count('logged in again')} re-login(s)"
    )
    settle(lab, run, spec, state)
    assert_converged(lab, state, vm("web01"), server=False)
    assert_reads_after_the_session_ended(lab, "web01")


def assert_reads_after_the_session_ended(lab: Lab, name: str) -> None:
    """Break 15b N1: vCenter answers property reads on an ended session with every property in
    missingSet (NotAuthenticated), no SOAP fault. A read made then, outside any copy (no cookie
    keeper runs), logs in again and gives the live answer, never "unset"; a task wait sees the
    task's end (it read "state None" for 600 s)."""
    with session(lab.vcenter_target()) as si:
        found = retrieve(si, vim.VirtualMachine, ["name"])
        (ref,) = [o.ref for o in found if o.props["name"] == name]
        power = fetch_property(si, ref, "runtime.powerState")
        task = ref.PowerOnVM_Task()  # web01 is on: the task fails, nothing changes
        assert lab.expire_sessions() >= 1
        assert fetch_property(si, ref, "runtime.powerState") == power == "poweredOn"
        assert lab.expire_sessions() >= 1
        with pytest.raises(VSphereError, match="InvalidPowerState"):
            wait_task(si, task, f"powering on {name}", timeout=30)


def test_a_full_conversion_host_device_fails_clearly_then_converges(
    lab: Lab, tmp_path: Path
) -> None:
    spec, state = spec_for(tmp_path, "web01"), tmp_path / "ferry.db"
    lab.device_full("web01", 2001)
    try:
        done = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    finally:
        lab.read_errors("web01", 2001, None)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "No space left on device" in done.stdout + done.stderr
    assert "vm.web01.disk[2000]" not in done.stdout.split("failed:")[-1]  # only that disk
    again = ferry(lab, "apply", str(spec), "--auto-approve", "--state", str(state))
    assert again.returncode == 0, again.stdout + again.stderr
    assert_converged(lab, state, vm("web01"), server=False)
