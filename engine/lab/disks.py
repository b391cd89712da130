"""Lab disk bytes: live sparse raw files, the change journal, frozen snapshot copies.

The layout is shared with the vCenter's CBT extension (engine/lab/vcsim/ferry_cbt.go)::

    <disks>/<instanceUuid>/disk-<key>.raw          live disk (sparse; thick disks fully allocated)
    <disks>/<instanceUuid>/disk-<key>.journal      one "offset length" line per guest write
    <disks>/<instanceUuid>/snapshots/<moref>/disk-<key>.raw  the disk as a snapshot froze it

A guest write changes the live file and appends to the journal under flock(2) on the journal, the
same lock the extension holds while it freezes a snapshot, so a snapshot sees a write whole or not.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import UserError
from engine.lab.estate import LabDisk, LabVM, MiB
from engine.units import human


@dataclass(frozen=True)
class WriteResult:
    vm: str
    disk: int
    offset: int
    length: int
    sequence: int  # the journal line this write became


def vm_dir(disks: Path, vm: LabVM) -> Path:
    return disks / vm.instance_uuid


def live_path(disks: Path, vm: LabVM, key: int) -> Path:
    return vm_dir(disks, vm) / f"disk-{key}.raw"


def journal_path(disks: Path, vm: LabVM, key: int) -> Path:
    return vm_dir(disks, vm) / f"disk-{key}.journal"


def snapshot_path(disks: Path, vm: LabVM, snapshot_moref: str, key: int) -> Path:
    """The frozen copy of disk `key` in snapshot `snapshot_moref` (e.g. "snapshot-42")."""
    return snapshot_file(disks, vm.instance_uuid, snapshot_moref, key)


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed from `parts` (Python's hash() is salted per process)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8])


# A write is generated and written in pieces of at most this many bytes (random.randbytes cannot
# make 1 GiB at once, and memory stays bounded).
PIECE = 64 * MiB


def pattern_pieces(seed: int, length: int) -> Iterator[tuple[int, bytes]]:
    """A write's deterministic pseudo-random bytes as (offset within the write, bytes) pieces of
    at most PIECE bytes: the first from `seed`, piece i from a seed derived from (seed, i)."""
    for index, at in enumerate(range(0, length, PIECE)):
        piece_seed = seed if index == 0 else seed_of(seed, "piece", index)
        yield at, random.Random(piece_seed).randbytes(min(PIECE, length - at))


def pattern(seed: int, length: int) -> bytes:
    """Deterministic pseudo-random bytes for a write (all pieces joined)."""
    return b"".join(piece for _, piece in pattern_pieces(seed, length))


def check_extent(vm: LabVM, disk: LabDisk, offset: int, length: int) -> None:
    if length <= 0:
        raise UserError(f"length must be positive, not {length}")
    if offset < 0 or offset + length > disk.capacity:
        raise UserError(
            f"extent {offset}+{length} is outside disk {disk.key} of {vm.name!r} "
            f"(capacity {human(disk.capacity)})"
        )


def guest_write(
    disks: Path, vm: LabVM, key: int, offset: int, length: int, *, seed: int | None = None
) -> WriteResult:
    """Write `length` deterministic bytes at `offset` of the live disk and journal the extent."""
    disk = vm.disk(key)
    if disk is None:
        keys = ", ".join(str(d.key) for d in vm.disks)
        raise UserError(f"VM {vm.name!r} has no disk {key} (its disks: {keys})")
    live = live_path(disks, vm, key)
    if live.exists() and live.stat().st_size > disk.capacity:  # the disk was grown in vCenter
        disk = replace(disk, capacity=live.stat().st_size)
    check_extent(vm, disk, offset, length)
    if not live.exists():
        raise UserError(f"disk {key} of {vm.name!r} has no content yet: is the lab up?")
    with journal_path(disks, vm, key).open("a+") as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)
        journal.seek(0)
        sequence = sum(1 for _ in journal)
        if seed is None:
            seed = seed_of(vm.instance_uuid, key, sequence)
        for at, piece in pattern_pieces(seed, length):
            _pwrite_all(live, offset + at, piece)
        journal.write(f"{offset} {length}\n")
        journal.flush()
    return WriteResult(vm.name, key, offset, length, sequence)


def data_extents(path: Path) -> list[tuple[int, int]]:
    """Where a sparse file holds data (SEEK_DATA / SEEK_HOLE), as (offset, length)."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            offset = end
    finally:
        os.close(fd)
    return out


def install_image(disks: Path, vm: LabVM, key: int, image: Path) -> int:
    """Replace a live disk's content with a raw image (a real guest), journaling every extent
    that changed (the old data and the new), so CBT reports the swap like guest writes.
    Returns the bytes of data the image holds."""
    disk = vm.disk(key)
    if disk is None:
        raise UserError(f"VM {vm.name!r} has no disk {key}")
    if image.stat().st_size > disk.capacity:
        raise UserError(f"{image} is larger than disk {key} of {vm.name!r}")
    live = live_path(disks, vm, key)
    with journal_path(disks, vm, key).open("a+") as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)
        old = data_extents(live)
        new = data_extents(image)
        with live.open("r+b") as out:
            out.truncate(0)
            out.truncate(disk.capacity)
        with image.open("rb") as src:
            for offset, length in new:
                for at in range(offset, offset + length, 8 * MiB):
                    src.seek(at)
                    _pwrite_all(live, at, src.read(min(8 * MiB, offset + length - at)))
        journal.seek(0, os.SEEK_END)
        journal.writelines(f"{o} {n}\n" for o, n in sorted(old + new))
        journal.flush()
    return sum(n for _, n in new)


def _pwrite_all(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


def initial_extents(vm: LabVM, disk: LabDisk) -> list[tuple[int, int]]:
    """Where a fresh lab disk holds data: a boot-sector-like head plus scattered runs."""
    rng = random.Random(seed_of(vm.instance_uuid, disk.key, "layout"))
    target = int(disk.capacity * disk.fill)
    extents = [(0, MiB)]
    total = MiB
    while total < target:
        length = rng.choice((64, 256, 1024, 4096)) * 1024
        offset = rng.randrange(0, disk.capacity - length, 4096)
        extents.append((offset, length))
        total += length
    return extents


def create_disk(disks: Path, vm: LabVM, disk: LabDisk) -> None:
    """Make the live raw file with its deterministic initial content and an empty journal."""
    live = live_path(disks, vm, disk.key)
    live.parent.mkdir(parents=True, exist_ok=True)
    with live.open("wb") as out:
        out.truncate(disk.capacity)
        if not disk.thin:
            os.posix_fallocate(out.fileno(), 0, disk.capacity)
    for i, (offset, length) in enumerate(initial_extents(vm, disk)):
        _pwrite_all(
            live, offset, pattern(seed_of(vm.instance_uuid, disk.key, "initial", i), length)
        )
    journal_path(disks, vm, disk.key).write_text("")


def snapshot_file(disks: Path, instance_uuid: str, snapshot_moref: str, key: int) -> Path:
    """The frozen copy of disk `key` in a snapshot, by the VM's instance UUID."""
    return disks / instance_uuid / "snapshots" / snapshot_moref / f"disk-{key}.raw"
