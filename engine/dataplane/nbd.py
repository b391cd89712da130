"""A thin wrapper over libnbd (Debian's python3-libnbd, `import nbd`): connect read-only with
base:allocation, ask block status over a range, and map nbd.Error to DataplaneError."""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator, Sequence
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
    return runs_for(handle, [(offset, length)])


def runs_for(handle: Any, areas: Sequence[tuple[int, int]]) -> list[Run]:
    """Block status of sorted, disjoint areas as data/zero runs. Each answer covers up to 1 GiB
    from where it was asked and serves every area inside it, so thousands of small changed areas
    cost a few round trips, not one each. All data when the server has no block status."""
    if not handle.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        return [Run(o, n, True) for o, n in areas if n > 0]
    size = handle.get_size()
    out: list[Run] = []
    known = _Known()
    for offset, length in areas:
        position, end = offset, min(offset + length, size)
        while position < end:
            if not known.covers(position):
                known.load(position, _status(handle, position, min(STATUS_CHUNK, size - position)))
            extent_end, data = known.at(position)
            step = min(extent_end, end) - position
            _append(out, Run(position, step, data))
            position += step
    return out


class _Known:
    """The last block status answer: extent boundaries and whether each holds data."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.data: list[bool] = []

    def load(self, position: int, entries: list[int]) -> None:
        self.starts, self.ends, self.data = [], [], []
        for i in range(0, len(entries), 2):
            if entries[i] <= 0:
                break
            self.starts.append(position)
            position += entries[i]
            self.ends.append(position)
            self.data.append(not (entries[i + 1] & ZERO))
        if not self.starts:
            raise DataplaneError(f"the server answered an empty block status at {position}")

    def covers(self, position: int) -> bool:
        return bool(self.starts) and self.starts[0] <= position < self.ends[-1]

    def at(self, position: int) -> tuple[int, bool]:
        i = bisect.bisect_right(self.starts, position) - 1
        return self.ends[i], self.data[i]


def _append(out: list[Run], run: Run) -> None:
    last = out[-1] if out else None
    if last is not None and last.data == run.data and last.offset + last.length == run.offset:
        out[-1] = Run(last.offset, last.length + run.length, run.data)
    else:
        out.append(run)
