from __future__ import annotations

import pytest

from engine.planner.osmigrate import safe_vm_name, volume_name


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("rhel9", "rhel9"),
        ("Reporting Ünit 1", "Reporting_Unit_1"),
        ("a  b--c__d", "a_b-c_d"),
        ("web (prod)", "web_prod"),
        ("x" * 70, "x" * 64),
        ("end-", "end"),
        ("Café_", "Cafe"),
    ],
)
def test_safe_vm_name(name: str, safe: str) -> None:
    assert safe_vm_name(name) == safe


def test_volume_name() -> None:
    assert volume_name("rhel9", 2000) == "rhel9-2000"
