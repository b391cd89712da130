"""The chaos run in CI (issue 12): a bounded set of seeds of tests/integration/chaos.py on the
lab, the seeds printed; the harness catching a planted fault; and every failing seed found so
far as a fixed regression (a seed and its minimised steps). `scripts/chaos --seeds N` runs more."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.lab.lab import Lab
from tests.integration.chaos import DEFAULT_OPS, describe, generate, run_steps

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("new_cloud_objects")]

CI_SEEDS = (1, 2, 3, 4, 5)
CI_STEPS = 12


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_chaos_seed(lab: Lab, tmp_path: Path, seed: int) -> None:
    steps = generate(seed, CI_STEPS, DEFAULT_OPS)
    print(
        f"\nchaos seed {seed} ({CI_STEPS} steps, ops {','.join(DEFAULT_OPS)}): {json.dumps(steps)}"
    )
    result = run_steps(lab, steps, seed, tmp_path / f"seed-{seed}")
    print(describe(result))
    assert result.ok, describe(result)


def test_the_oracle_catches_a_volume_byte_changed_behind_ferry(lab: Lab, tmp_path: Path) -> None:
    """A planted fault (one byte of a synced volume flipped, as a write the executor skipped
    would leave): the next completed apply's oracle names the volume."""
    steps = [
        {"op": "apply"},
        {"op": "corrupt", "vm": "build-old", "disk": 2000, "offset": 4096},
        {"op": "apply"},
    ]
    result = run_steps(lab, steps, 0, tmp_path / "planted")
    print(describe(result))
    assert result.failed_at == 2, describe(result)
    assert "vm.build-old.disk[2000]: volume" in result.error
    assert "differs from the source at its last sync's snapshot" in result.error
