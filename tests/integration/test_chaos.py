"""The chaos run in CI (issue 12): a bounded set of seeds of tests/integration/chaos.py on the
lab (the seeds and their steps printed), the harness catching a planted fault, and each failing
run found so far as a regression: a seed and its minimised steps, marked xfail (strict) while
the fault is open, so the mark must go when the fix lands. `scripts/chaos --seeds N` runs more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.lab.lab import Lab
from tests.integration.chaos import DEFAULT_OPS, describe, generate, run_steps

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]

# 5 seeds x 12 steps took 363-430 s a seed on this 2-core machine shared by six labs (load ~12),
# 144-154 s idle; with the four regressions below and the planted fault the chaos file took ~3
# min a test. CI's whole suite must stay under 90 min on 2 cores: 3 seeds x 6 steps here (the
# same first 5 steps, then the final apply); `scripts/chaos --seeds N --steps M` runs more.
CI_SEEDS = (1, 2, 3)
CI_STEPS = 6


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_chaos_seed(lab: Lab, tmp_path: Path, seed: int) -> None:
    steps = generate(seed, CI_STEPS, DEFAULT_OPS)
    print(f"\nchaos seed {seed} ({CI_STEPS} steps, ops {','.join(DEFAULT_OPS)})")
    print(json.dumps(steps))
    result = run_steps(lab, steps, seed, tmp_path / f"seed-{seed}")
    print(describe(result))
    assert result.ok, describe(result)


def test_the_oracle_catches_a_volume_byte_changed_behind_ferry(lab: Lab, tmp_path: Path) -> None:
    """A planted fault (one byte of a synced volume flipped, as a write the executor skipped
    would leave): the next completed apply's oracle names the volume."""
    steps = [
        {"op": "apply", "plan": False},
        {"op": "corrupt", "vm": "build-old", "disk": 2000, "offset": 4096},
        {"op": "apply", "plan": True},
    ]
    result = run_steps(lab, steps, 0, tmp_path / "planted")
    print(describe(result))
    assert result.failed_at == 2, describe(result)
    assert "vm.build-old.disk[2000]: volume" in result.error
    assert "differs from the source at its last sync's snapshot" in result.error


def write(vm: str, disk: int, offset: int, length: int, seed: int) -> dict[str, Any]:
    return {"op": "write", "vm": vm, "disk": disk, "offset": offset, "length": length, "seed": seed}


MiB = 1024**2
# Failing runs the chaos run found (or the faults in its terms), minimised: seed (it picks
# each VM's `verify`), steps, and the fault of issue 12 they show; OPEN lists those not fixed on
# this branch (xfail, strict: the entry must leave OPEN when its fix lands). Seed 0: verify false.
REGRESSIONS: dict[str, tuple[int, list[dict[str, Any]], str]] = {
    "resumed-full-copy-loses-a-write-below-its-checkpoint": (
        0,
        [
            write("web01", 2000, 1024 * MiB, 96 * MiB, 1),
            write("web01", 2000, 1152 * MiB, 96 * MiB, 2),
            {"op": "stop", "full": True, "signal": "SIGINT", "at": "copy",
             "on": "vm.web01.disk[2000]", "after_ms": 5000, "slow": ["web01", 2000, 1000]},
            write("web01", 2000, 0, MiB, 99),
            {"op": "apply", "plan": True},
        ],
        "fault 1: a resumed full copy loses guest writes below its checkpoint",
    ),
    "rename-deletes-the-replica": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "rename", "vm": "web01", "renamed": True},
            {"op": "apply", "plan": True},
        ],
        "fault 4: a rename plans deletes and adopts of the same volumes",
    ),
    "grown-disk-is-ignored": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "grow", "vm": "web01", "disk": 2001, "by": 1024 * MiB},
            {"op": "apply", "plan": True},
        ],
        "fault 5: a grown disk is not extended",
    ),
    "ctrl-c-after-the-power-off-leaves-the-source-off": (
        0,
        [
            {"op": "apply", "plan": False},
            {"op": "cutover", "vm": "web01"},
            {"op": "stop", "signal": "SIGINT", "at": "source_off", "after_ms": 0},
            {"op": "apply", "plan": True},
        ],
        "fault 9: Ctrl-C after the source's power-off leaves it off without a word",
    ),
}  # fmt: skip


OPEN: set[str] = set()  # every regression above is fixed on main


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_chaos_regression(lab: Lab, tmp_path: Path, name: str, request: Any) -> None:
    seed, steps, fault = REGRESSIONS[name]
    if name in OPEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"issue 12 {fault}: open"))
    result = run_steps(lab, steps, seed, tmp_path / name)
    print(describe(result))
    assert result.ok, describe(result)
