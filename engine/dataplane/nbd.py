"""A thin wrapper over libnbd (Debian's python3-libnbd, `import nbd`): connect read-only with
base:allocation, ask block status over a range, and map nbd.Error to DataplaneError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import nbd

from engine.errors import DataplaneError

ZERO = 2  # NBD_STATE_ZERO
STATUS_CHUNK = 1 << 30  # ask block status at most 1 GiB at a time (servers may cap below 4 GiB)


@dataclass(frozen=True)
class Run:
    """A run of the source disk: `data` False means it reads as zeros (a hole or zero run)."""

    offset: int
    length: int
    data: bool


@contextmanager
def connect(uri: str) -> Iterator[Any]:
    """A connected libnbd handle with base:allocation; shut down at the end."""
    handle = nbd.NBD()
    try:
        handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        handle.connect_uri(uri)
    except nbd.Error as exc:
        raise DataplaneError(f"cannot connect to {uri}: {exc.string}") from exc
    try:
        yield handle
    finally:
        with contextlib.suppress(nbd.Error):
            handle.shutdown()


def _status(handle: Any, offset: int, count: int) -> list[int]:
    """One block status call: the flat [length, flags, ...] list of base:allocation."""
    got: list[int] = []

    def extent(context: str, start: int, entries: list[int], err: Any) -> int:
        if context == nbd.CONTEXT_BASE_ALLOCATION:
            got.extend(entries)
        return 0

    try:
        handle.block_status(count, offset, extent)
    except nbd.Error as exc:
        raise DataplaneError(f"block status at {offset} failed: {exc.string}") from exc
    if not got:
        raise DataplaneError(f"the server answered no block status at {offset}")
    return got


def runs(handle: Any, offset: int, length: int) -> list[Run]:
    """Block status of [offset, offset+length) as data/zero runs (all data if unsupported)."""
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        return [Run(offset, length, True)]
    out: list[Run] = []
    end = offset + length
    position = offset
    while position < end:
        got = _status(handle, position, min(STATUS_CHUNK, end - position))
        for i in range(0, len(got), 2):
            size = min(got[i], end - position)
            data = not (got[i + 1] & ZERO)
            if out and out[-1].data == data and out[-1].offset + out[-1].length == position:
                out[-1] = Run(out[-1].offset, out[-1].length + size, data)
            else:
                out.append(Run(position, size, data))
            position += size
            if position >= end:
                break
    return out
