"""Sizes, rates and times: parsing what users type (4096, 64K, 1M, 2GiB) and printing them for
people in one unit system: bytes in binary units (B, KiB, MiB, GiB, TiB; 1 decimal above B),
rates in MiB/s, times in s, min or h. Every human line of ferry prints through these."""

from __future__ import annotations

import re

from engine.errors import UserError

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4096' → 4096, '64K' / '64KiB' → 65536, '1G' → 1073741824 (binary units)."""
    match = _SIZE.match(text)
    if match is None:
        raise UserError(f"not a size: {text!r} (use bytes or a K/M/G/T suffix, e.g. 64K)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def human(size: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


MiB = 1024**2
GiB = 1024**3


def exact(size: int) -> str:
    """A size to the byte, in binary units, for where human()'s rounding would hide the
    difference (a disk grown by 1 MiB): 2147483648 → '2 GiB', 2148532224 → '2 GiB + 1 MiB',
    1536 → '1 KiB + 512 B', 0 → '0 B'."""
    parts = []
    for unit, scale in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024), ("B", 1)):
        whole, size = divmod(size, scale)
        if whole:
            parts.append(f"{whole} {unit}")
    return " + ".join(parts) or "0 B"


def rate(bytes_per_second: float) -> str:
    """A transfer rate, always in MiB/s: 47185920.0 → '45.0 MiB/s', 1024 → '0.0 MiB/s'."""
    return f"{bytes_per_second / MiB:.1f} MiB/s"


def duration(seconds: float) -> str:
    """Seconds for people: 0.24 → '0.2 s', 75 → '1 min 15 s', 5400 → '1 h 30 min'."""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


_DURATION = re.compile(r"^\s*(?:(\d+) h)?\s*(?:(\d+) min)?\s*(?:(\d+(?:\.\d+)?) s)?\s*$")


def parse_duration(text: str) -> float:
    """What duration() printed, back in seconds: '1 min 15 s' → 75.0, '0.2 s' → 0.2.

    Raises UserError for anything else."""
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise UserError(f"not a duration: {text!r} (e.g. 12.5 s, 1 min 15 s, 2 h 5 min)")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
