"""Fault drills on the lab's disk reads: `<lab>/faults.json` maps "<instanceUuid>/<disk key>" to
a read error rate, which the lab's disk source turns into nbdkit's error filter (EIO)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.errors import UserError

RATE = re.compile(r"^(100|\d{1,2}(\.\d+)?)%$")


def faults_file(lab_dir: Path) -> Path:
    return lab_dir / "faults.json"


def read_faults(lab_dir: Path) -> dict[str, dict[str, Any]]:
    path = faults_file(lab_dir)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def set_read_errors(lab_dir: Path, instance_uuid: str, key: int, rate: str | None) -> None:
    """Fail `rate` (e.g. "1%", "100%") of the reads of one disk; None clears it."""
    if rate is not None and not RATE.match(rate):
        raise UserError(f"read error rate {rate!r} is not a percentage like 1% or 100%")
    faults = read_faults(lab_dir)
    name = f"{instance_uuid}/{key}"
    if rate is None:
        faults.pop(name, None)
    else:
        faults[name] = {"read_error_rate": rate}
    faults_file(lab_dir).write_text(json.dumps(faults, indent=2) + "\n")
