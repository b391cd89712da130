"""Fault drills on the lab's disks: `<lab>/faults.json` maps "<instanceUuid>/<disk key>" to
- `read_error_rate`: the lab's disk source puts nbdkit's error filter (EIO) in front of the disk;
- `read_delay_ms`: nbdkit's delay filter holds every read that long (a slow, distant ESXi host);
- `read_rate_mib`: nbdkit's rate filter caps the disk's reads at that many MiB/s, all
  connections together, with bursts of at most RATE_BURST seconds (an NFC stream: ~160 MB/s,
  152.6 MiB/s, per disk; benchmarks/scale_out.py reads every disk this way);
- `device_full`: the lab's device seam hands the copy /dev/full for that disk's volume, where
  every write fails with ENOSPC (a conversion host whose device is full);
- `device_lossy`: the device seam hands the copy /dev/null, which acknowledges every write and
  keeps none (a device that loses writes): the copy succeeds, verification fails."""

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
    """Fail `rate` (e.g. "1%", "100%") of the reads of one disk; None clears every fault."""
    if rate is not None and not RATE.match(rate):
        raise UserError(f"read error rate {rate!r} is not a percentage like 1% or 100%")
    _set(lab_dir, f"{instance_uuid}/{key}", None if rate is None else {"read_error_rate": rate})


def set_read_delay(lab_dir: Path, instance_uuid: str, key: int, milliseconds: int) -> None:
    """Every read of this disk waits `milliseconds` before it is answered."""
    if not 0 < milliseconds <= 60_000:
        raise UserError(f"read delay {milliseconds} ms is not between 1 and 60000 ms")
    _set(lab_dir, f"{instance_uuid}/{key}", {"read_delay_ms": milliseconds})


RATE_BURST = 0.1  # seconds of reads the rate filter lets through at once (its default is 2 s)
MAX_RATE_MIB = 100_000.0


def set_read_rate(lab_dir: Path, instance_uuid: str, key: int, mib: float) -> None:
    """This disk's reads go at most `mib` MiB/s, until the faults are cleared. Raises
    UserError for a rate not above 0 or above MAX_RATE_MIB."""
    check_read_rate(mib)
    _set(lab_dir, f"{instance_uuid}/{key}", {"read_rate_mib": mib})


def check_read_rate(mib: float) -> None:
    """Raises UserError for a read rate (MiB/s) not above 0 or above MAX_RATE_MIB."""
    if not 0 < mib <= MAX_RATE_MIB:
        raise UserError(
            f"read rate {mib:g} MiB/s is not above 0 and at most {MAX_RATE_MIB:g} MiB/s"
        )


def set_device_full(lab_dir: Path, instance_uuid: str, key: int) -> None:
    """Writes to this disk's volume fail with ENOSPC until the faults are cleared."""
    _set(lab_dir, f"{instance_uuid}/{key}", {"device_full": True})


def set_device_lossy(lab_dir: Path, instance_uuid: str, key: int) -> None:
    """Writes to this disk's volume are acknowledged and lost until the faults are cleared."""
    _set(lab_dir, f"{instance_uuid}/{key}", {"device_lossy": True})


def _set(lab_dir: Path, name: str, fields: dict[str, Any] | None) -> None:
    faults = read_faults(lab_dir)
    if fields is None:
        faults.pop(name, None)
    else:
        faults[name] = {**faults.get(name, {}), **fields}
    faults_file(lab_dir).write_text(json.dumps(faults, indent=2) + "\n")
