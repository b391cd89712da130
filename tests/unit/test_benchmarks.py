"""Every benchmark still starts: its imports resolve and its options parse (`--help`). They are
run by hand, not in CI (they measure, nothing asserts a speed), so a broken import would
otherwise go unnoticed until someone wants numbers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert {p.name for p in BENCHMARKS} >= {"copy_throughput.py", "delta_sync.py"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_a_benchmark_starts(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_scale_out_runs_ferry_in_its_run_directory_not_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """break-it 14c F7: scale_out.py's `ferry apply` ran with cwd = the checkout, so its event
    and VM logs went to the checkout's state/logs, mixed with other sessions'. It runs in the
    run's own directory now, this checkout's engine still the one imported."""
    spec = importlib.util.spec_from_file_location("scale_out", ROOT / "benchmarks" / "scale_out.py")
    assert spec is not None and spec.loader is not None
    scale_out = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "scale_out", scale_out)
    spec.loader.exec_module(scale_out)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = scale_out.ferry(env, tmp_path, "--version")  # from there, this checkout's engine
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = {}

    def run(argv: list[str], **kwargs: Any) -> Any:
        seen.update(kwargs)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(scale_out.subprocess, "run", run)
    scale_out.ferry(env, tmp_path, "apply", "x.yaml")
    assert seen["cwd"] == tmp_path
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
