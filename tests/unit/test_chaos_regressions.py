"""The chaos run's regressions (tests/integration/chaos.py REGRESSIONS) run in `scripts/chaos
--regressions`, not in CI: each names the dedicated lab test CI runs for the same fault, and this
check fails when that test is renamed or removed, so no fault the chaos run found loses its test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.chaos import REGRESSIONS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_a_chaos_regression_is_covered_by_a_lab_test(name: str) -> None:
    _seed, steps, fault, covered_by = REGRESSIONS[name]
    path, _, test = covered_by.partition("::")
    source = (ROOT / path).read_text()
    assert f"\ndef {test}(" in source, f"{name} ({fault}): {covered_by} does not exist"
    assert steps and steps[-1]["op"] == "apply", f"{name}: a regression ends with a checked apply"
