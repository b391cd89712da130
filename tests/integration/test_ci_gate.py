"""The CI gate example (examples/ci/ferry-gate, which both pipeline files run) against the lab,
with the state in the lab's PostgreSQL as a CI runner that starts empty would have it: plan
(summary for the pull request, has_changes) → apply the saved plan → plan again (nothing to do);
a cutover estimated over max_downtime blocks the gate; a second apply while one runs fails fast
naming the holder of the PostgreSQL lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.statestore import postgres_at
from tests.integration.cli import ROOT
from tests.integration.test_report_numbers import _drop_volumes

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]
GATE = ROOT / "examples" / "ci" / "ferry-gate"
FERRY = Path(sys.executable).parent / "ferry"


def write_spec(path: Path, schema: str, name: str = "build-old", **vm: object) -> Path:
    spec = yaml.safe_load((ROOT / "plans" / "demo.yaml").read_text())
    spec["vms"] = [{"name": name, **vm}]
    spec["state"] = {"backend": "postgres", "dsn_env": "FERRY_STATE_DSN", "schema": schema}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def gate(lab: Lab, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The gate as a runner runs it: an empty working directory, state in PostgreSQL."""
    env = {
        **os.environ,
        **lab.env(),
        "FERRY": str(FERRY),
        "FERRY_GATE_OUT": str(workdir / "out"),
        "FERRY_STATE_DSN": lab.postgres.dsn(),
        "COLUMNS": "200",
    }
    env.pop("GITHUB_OUTPUT", None)
    return subprocess.run(
        [str(GATE), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def outputs(workdir: Path) -> list[str]:
    return (workdir / "out" / "outputs").read_text().split()


def test_ci_gate_plans_applies_and_blocks(lab: Lab, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "migration.yaml", "ci_gate")
    vm = find_vm("build-old")
    assert vm is not None and vm.instance_uuid
    _drop_volumes(lab, vm.instance_uuid)  # another test's state's: its plan would not adopt them
    runner = tmp_path / "runner"
    runner.mkdir()

    planned = gate(lab, runner, "plan", str(spec))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert outputs(runner) == ["has_changes=true"]
    summary = (runner / "out" / "summary.md").read_text()
    assert "| `vm.build-old.disk[2000]` |" in summary and summary.count("\n#### ") == 1
    counts = json.loads((runner / "out" / "plan.json").read_text())["summary"]
    assert counts["create"] >= 1

    applied = gate(lab, runner, "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    log = (runner / "out" / "apply.jsonl").read_text()
    events = [json.loads(line) for line in log.splitlines()]
    assert events[-1]["event"] == "apply_end" and events[-1]["ok"] is True
    assert "build-old" in (runner / "out" / "report.md").read_text()
    state = postgres_at(lab.postgres.dsn(), "ci_gate").open(create=False).read()
    assert state.resources["vm.build-old.disk[2000]"].attributes["volume_id"]

    again = tmp_path / "runner2"  # the next pipeline, on another empty runner
    again.mkdir()
    replanned = gate(lab, again, "plan", str(spec))
    assert replanned.returncode == 0, replanned.stderr
    assert outputs(again) == ["has_changes=false"]
    assert "No changes" in (again / "out" / "summary.md").read_text()

    over = write_spec(
        tmp_path / "cutover.yaml", "ci_gate", mode="cutover", limits={"max_downtime": 1}
    )
    blocked = gate(lab, again, "plan", str(over))
    assert blocked.returncode == 1
    text = (again / "out" / "summary.md").read_text()
    assert "blocked" in text and "exceeds max_downtime 1 s" in text
    assert "Traceback" not in blocked.stderr


def test_a_second_apply_on_postgres_state_fails_fast_naming_the_holder(
    lab: Lab, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "migration.yaml", "ci_lock", "db01")  # 3 disks: seconds
    env = {**os.environ, **lab.env(), "FERRY_STATE_DSN": lab.postgres.dsn()}
    holder = subprocess.Popen(
        [str(FERRY), "apply", str(spec), "--auto-approve", "--json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        for line in holder.stdout:  # the first event is written with the lock held
            if json.loads(line)["event"] == "apply_start":
                break
        began = time.monotonic()
        second = subprocess.run(
            [str(FERRY), "apply", str(spec), "--auto-approve"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        seconds = time.monotonic() - began
        assert second.returncode == 1
        assert f"locked by ferry apply (pid {holder.pid}" in second.stderr
        assert "schema ci_lock" in second.stderr and "password" not in second.stderr
        assert seconds < 10, f"fails fast: {seconds:.1f} s"
        _, err = holder.communicate(timeout=300)
        assert holder.returncode == 0, err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
