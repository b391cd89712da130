"""`ferry graph`: DOT and Mermaid of a saved plan name every change that does something and
every edge of its graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.planner import planfile
from engine.planner.graphviz import to_dot, to_mermaid

CASE = Path(__file__).parents[1] / "cases" / "new-nic-cutover" / "expected.json"


def saved_plan(tmp_path: Path) -> Path:
    data = json.loads(CASE.read_text())
    data.pop("exit_code")
    data |= {"created_at": "2026-01-01T00:00:00Z", "spec_digest": "0" * 64, "spec_file": "x.yaml"}
    data["integrity"] = {"sha256": planfile.seal_digest(data)}
    path = tmp_path / "p.plan"
    path.write_text(json.dumps(data))
    return path


def test_dot_and_mermaid(tmp_path: Path) -> None:
    plan = planfile.load(saved_plan(tmp_path)).plan
    dot = to_dot(plan)
    assert dot.startswith("digraph plan {") and dot.rstrip().endswith("}")
    assert '"vm.web01.conversion" -> "vm.web01.server";' in dot
    assert '"vm.web01.port[0]"' not in dot, "no-ops are not nodes"
    assert dot.count(" -> ") == len(plan.edges)
    mermaid = to_mermaid(plan)
    assert mermaid.startswith("flowchart LR")
    assert mermaid.count(" --> ") == len(plan.edges)
    assert '["+ vm.web01.server"]:::create' in mermaid


def test_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "graph",
            str(saved_plan(tmp_path)),
            "--format",
            "mermaid",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.startswith("flowchart LR")
    bad = subprocess.run(
        [sys.executable, "-m", "engine.cli", "graph", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        bad.returncode == 1
        and "is not a ferry plan" in bad.stderr
        and "Traceback" not in bad.stderr
    )
