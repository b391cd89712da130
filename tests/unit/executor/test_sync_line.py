"""The line an apply prints per sync (issue 13 item 6): the step's wall time, the data read and
its rate, zeros and holes apart, in binary units."""

from __future__ import annotations

from engine.dataplane.copy import CopyStats
from engine.executor.volume_steps import sync_line, verify_line

MiB, GiB = 1024**2, 1024**3


def test_a_sparse_full_copy_says_the_steps_time_and_counts_no_hole_as_moved() -> None:
    stats = CopyStats(bytes_read=42 * MiB, bytes_skipped=20 * GiB - 42 * MiB, seconds=0.2)
    line = sync_line("vm.web01.disk[2000]", "full", stats, step=16.04)
    assert line == (
        "vm.web01.disk[2000]: full copy in 16.0 s: 42.0 MiB read (210.0 MiB/s while copying), "
        "0 B zeroed, 20.0 GiB of holes skipped"
    )


def test_a_delta_of_nothing_has_no_rate() -> None:
    line = sync_line("vm.db01.disk[2001]", "delta", CopyStats(seconds=0.01), step=75)
    assert line == "vm.db01.disk[2001]: delta copy in 1 min 15 s: 0 B read, 0 B zeroed"


def test_a_verified_sync_says_it_was_found_equal() -> None:
    """Break-it 12o L5: `apply --verify` printed no verify outcome per disk."""
    line = verify_line("vm.web01.disk[2000]", "whole disk", "9f2c04d1e2ab" + "0" * 52)
    assert line == (
        "vm.web01.disk[2000]: verified: equal to the source disk at its snapshot over the whole "
        "disk (sha256 hash list 9f2c04d1e2ab…)"
    )
