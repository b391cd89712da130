"""`ferry lab write` of 1 GiB and more: generated and written in pieces (random.randbytes cannot
make 1 GiB at once: OverflowError), journaled as one guest write."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.lab import disks as lab_disks
from engine.lab.estate import GiB, MiB, find_vm


def test_a_write_of_1_gib_lands_whole_in_pieces_and_is_journaled_once(tmp_path: Path) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    disk = vm.disks[0]
    lab_disks.create_disk(tmp_path, vm, disk)
    offset = 512 * MiB + 4096
    done = lab_disks.guest_write(tmp_path, vm, disk.key, offset, GiB, seed=5)
    assert (done.offset, done.length, done.sequence) == (offset, GiB, 0)
    assert lab_disks.journal_path(tmp_path, vm, disk.key).read_text() == f"{offset} {GiB}\n"
    expected, written = hashlib.sha256(), hashlib.sha256()
    pieces = 0
    with lab_disks.live_path(tmp_path, vm, disk.key).open("rb") as f:
        f.seek(offset)
        for at, piece in lab_disks.pattern_pieces(5, GiB):
            assert at == pieces * lab_disks.PIECE and len(piece) <= lab_disks.PIECE
            expected.update(piece)
            written.update(f.read(len(piece)))
            pieces += 1
    assert pieces == GiB // lab_disks.PIECE
    assert written.hexdigest() == expected.hexdigest()


def test_pieces_are_distinct_and_a_short_write_keeps_its_bytes() -> None:
    first, second = (p for _, p in lab_disks.pattern_pieces(1, 2 * lab_disks.PIECE))
    assert first != second
    assert lab_disks.pattern(1, 64) == first[:64]  # a short write's bytes did not change
