"""Byte sizes: parsing what users type (4096, 64K, 1M, 2GiB) and printing sizes for people."""

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
