"""Pure extent arithmetic for changed block tracking: extents are (offset, length) in bytes."""

from __future__ import annotations

from collections.abc import Iterable

Extent = tuple[int, int]


def merge_extents(extents: Iterable[Extent]) -> list[Extent]:
    """Sorted union of `extents`: overlapping or touching extents become one; empty ones vanish.

    vSphere answers QueryChangedDiskAreas in windows and splits an area that crosses a window's
    end, so a client must merge what it collects across windows.
    """
    merged: list[Extent] = []
    for start, length in sorted(e for e in extents if e[1] > 0):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_length = merged[-1]
            merged[-1] = (last_start, max(last_start + last_length, start + length) - last_start)
        else:
            merged.append((start, length))
    return merged


def total_bytes(extents: Iterable[Extent]) -> int:
    return sum(length for _, length in extents)
