"""A copy's progress starts when the copy does (issue 13 items 5, 6), against real nbdkit (its
delay filter: every read waits 1 s), no lab: the first progress call is 0 of N before the first
read returns, so a plain progress line's rate and 'done in' time the whole copy (they timed it
from the first read's return: 10.2 MiB/s and 'done in 6.1 s' for a copy of 9.1 s, beside the
sync line's 6.8 MiB/s)."""

from __future__ import annotations

import time
from pathlib import Path

from engine.cli.progress import CopyLines
from engine.dataplane.copy import CopyOptions, copy
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer

MiB = 1024**2


def test_progress_starts_with_the_copy_and_lines_time_all_of_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "disk.raw", tmp_path / "volume.raw"
    with src.open("wb") as f:
        f.write(b"\x5a" * 4 * MiB)
        f.truncate(64 * MiB)
    dst.write_bytes(b"")
    calls: list[tuple[float, int, int]] = []
    lines: list[str] = []
    shown = CopyLines(lines.append, every=3600)  # only the end's line
    began = time.monotonic()

    def on_bytes(done: int, total: int) -> None:
        calls.append((time.monotonic() - began, done, total))
        shown.copy("vm.x.disk[2000]", done, total)

    with NbdkitServer(
        FileDiskSource(src), filters=["delay"], filter_args=["delay-read=1000ms"]
    ) as server:
        began = time.monotonic()
        stats = copy(server.uri, dst, None, CopyOptions(dst_is_zero=True, on_bytes=on_bytes))
    took = time.monotonic() - began
    assert stats.bytes_read == 4 * MiB
    first_at, first_done, total = calls[0]
    assert (first_done, total) == (0, 4 * MiB) and first_at < 0.9, calls[:3]
    assert calls[-1][1:] == (4 * MiB, 4 * MiB)
    said = float(lines[-1].rsplit("done in ", 1)[1].removesuffix(" s"))
    assert took - 0.5 <= said <= took + 0.05, (lines[-1], took)  # printed to 0.1 s
