"""Delta sync: ferry's pipelined libnbd engine vs vmware-migration-kit's loop, side by side.

Source: a 4 GiB sparse disk whose CBT changed areas are ≥ 2,000 scattered extents (4-256 KiB),
served by nbdkit's file plugin behind the delay filter (default 1 ms per read, a remote ESXi).
Both copy exactly the changed areas into a destination holding the old content:
- ferry: `engine.dataplane.copy.copy(uri, dst, areas, ...)` (4 connections x 8 reads in flight);
- plain aio: the peer issue 15 cites, a plain libnbd aio loop on one connection with 16 reads in
  flight (`--depth`), buffers reused, each read written when it completes, one fsync at the end;
- baseline: what vmware-migration-kit does per changed area: split into ≤ 64 MiB chunks, a new
  buffer per chunk, a synchronous `pread` on one handle, then a write at the same offset.
Prints seconds (best of `--runs`: the tools take turns, so a loaded machine slows all of them
alike), changed extents per second, each tool's time over ferry's and over the plain aio loop's,
and the load average before and after (the ratios move with the load: ferry and the plain loop
are bound by CPU, the baseline by the read delay).
Then what `verify` costs after that delta: the whole disk on both sides (`verify: true`) vs only
the changed areas (`verify: changed`), both through the same nbdkit server and destination file.
Prints the benchmark's peak memory (RSS), which must stay under 1 GiB.
Usage: .venv/bin/python benchmarks/delta_sync.py [--extents 2500] [--rdelay-ms 1] [--depth 16]
       [--runs 5] [--no-verify]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path

import nbd
from copy_throughput import timed

from engine.dataplane.cbt import merge_extents, total_bytes
from engine.dataplane.copy import CopyOptions, copy, digest, file_digest
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer

MiB = 1024**2
GiB = 1024**3
CHUNK = 64 * MiB  # vmware-migration-kit's largest read


def changed_areas(size: int, count: int, seed: int = 7) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    areas = []
    for _ in range(count):
        length = rng.choice((4, 16, 64, 256)) * 1024
        areas.append((rng.randrange(0, size - length, 4096), length))
    return merge_extents(areas)


def make_old(path: Path, size: int) -> None:
    """The replica before the sync: a sparse disk with some old data around (64 MiB), so the
    disks are not trivially empty. Written afresh each time: copying it (shutil.copyfile) made
    a fully allocated file, which the whole-disk verify then read over NBD as 4 GiB of data."""
    rng = random.Random(1)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
        for i in range(64):
            f.seek(i * (size // 64))
            f.write(rng.randbytes(MiB))


def make_disks(src: Path, size: int, areas: list[tuple[int, int]]) -> None:
    """`src` is the old replica plus the changed areas."""
    make_old(src, size)
    rng = random.Random(2)
    with src.open("r+b") as f:
        for offset, length in areas:
            f.seek(offset)
            f.write(rng.randbytes(length))


def baseline(uri: str, dst: Path, areas: list[tuple[int, int]]) -> None:
    handle = nbd.NBD()
    handle.connect_uri(uri)
    fd = os.open(dst, os.O_WRONLY)
    try:
        for offset, length in areas:
            for at in range(offset, offset + length, CHUNK):
                n = min(CHUNK, offset + length - at)
                buf = bytearray(n)  # a new buffer per chunk, as the Go code allocates
                buf[:] = handle.pread(n, at)
                os.pwrite(fd, buf, at)
        os.fsync(fd)
    finally:
        os.close(fd)
        handle.shutdown()


def plain_aio(uri: str, dst: Path, areas: list[tuple[int, int]], depth: int = 16) -> None:
    """A plain libnbd aio loop: one connection, `depth` reads in flight into reused buffers,
    each written when it completes (in libnbd's completion callback), fsync at the end."""
    handle = nbd.NBD()
    handle.connect_uri(uri)
    handle.set_pread_initialize(False)
    fd = os.open(dst, os.O_WRONLY)
    try:
        largest = max(min(n, CHUNK) for _, n in areas)
        free = [memoryview(bytearray(largest)) for _ in range(depth)]
        queue = deque(
            (at, min(CHUNK, o + n - at)) for o, n in areas for at in range(o, o + n, CHUNK)
        )

        def written(offset: int, buf: nbd.Buffer, slot: memoryview) -> Callable[[object], int]:
            def done(err: object) -> int:
                os.pwrite(fd, buf.to_buffer(), offset)
                free.append(slot)
                return 1

            return done

        while queue or handle.aio_in_flight():
            while queue and free:
                offset, n = queue.popleft()
                slot = free.pop()
                buf = nbd.Buffer.from_buffer(slot[:n])
                handle.aio_pread(buf, offset, completion=written(offset, buf, slot))
            handle.poll(-1)
        os.fsync(fd)
    finally:
        os.close(fd)
        handle.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--extents", type=int, default=2500)
    parser.add_argument("--rdelay-ms", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--depth", type=int, default=16, help="the plain aio loop's reads in flight"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the verify timings")
    args = parser.parse_args()
    size = int(args.size_gib * GiB)
    areas = changed_areas(size, args.extents)
    with tempfile.TemporaryDirectory(prefix="ferry-delta-bench-", dir="/var/tmp") as tmp:
        src, dst = Path(tmp) / "src.raw", Path(tmp) / "dst.raw"
        make_disks(src, size, areas)
        want = file_digest(src)
        filters = (["delay"], [f"rdelay={args.rdelay_ms}ms"]) if args.rdelay_ms else ([], [])

        def reset() -> None:
            make_old(dst, size)

        with NbdkitServer(FileDiskSource(src), filters=filters[0], filter_args=filters[1]) as srv:
            tools: dict[str, Callable[[], None]] = {
                "ferry (pipelined)": lambda: copy(srv.uri, dst, areas, CopyOptions()) and None,
                f"plain aio (depth {args.depth})": lambda: plain_aio(
                    srv.uri, dst, areas, args.depth
                ),
                "vmware-migration-kit loop": lambda: baseline(srv.uri, dst, areas),
            }
            results = {name: float("inf") for name in tools}
            load_before = os.getloadavg()
            for _ in range(args.runs):  # the tools take turns, each on a fresh old replica
                for name, action in tools.items():
                    reset()
                    results[name] = min(results[name], timed(action))
                    assert file_digest(dst) == want, f"{name} produced a different disk"
            load_after = os.getloadavg()
            verify = None if args.no_verify else verify_times(srv.uri, dst, size, areas, args.runs)
    print(
        f"delta: {len(areas)} changed extents, {total_bytes(areas) / MiB:.1f} MiB, "
        f"read delay {args.rdelay_ms} ms"
    )
    base, peer = results["ferry (pipelined)"], results[f"plain aio (depth {args.depth})"]
    for name, seconds in results.items():
        print(
            f"{name:<26} {seconds:7.2f} s  {len(areas) / seconds:8.0f} extents/s  "
            f"ratio to ferry {seconds / base:6.2f}  to plain aio {seconds / peer:6.2f}"
        )
    print(f"load average: {_load(load_before)} before, {_load(load_after)} after the copies")
    if verify is not None:
        whole, changed = verify["whole disk"], verify["changed areas"]
        print(
            f"verify after the delta: whole disk {whole:.2f} s, changed areas {changed:.2f} s "
            f"(ratio {whole / changed:.1f})"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    nbdkit = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(f"peak memory: {peak} MiB (nbdkit {nbdkit} MiB)")


def _load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def verify_times(
    uri: str, dst: Path, size: int, areas: list[tuple[int, int]], runs: int
) -> dict[str, float]:
    """Best seconds of each verify scope: source digest over NBD + destination file digest."""
    scopes: dict[str, list[tuple[int, int]] | None] = {"whole disk": None, "changed areas": areas}
    best = {name: float("inf") for name in scopes}
    for _ in range(runs):
        for name, scope in scopes.items():
            _uncache(dst)  # the destination is read from the disk, as a volume would be
            seconds = timed(lambda s=scope: _same(uri, dst, size, s))
            best[name] = min(best[name], seconds)
    return best


def _uncache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _same(uri: str, dst: Path, size: int, areas: list[tuple[int, int]] | None) -> None:
    assert digest(uri, areas=areas) == file_digest(dst, size, areas=areas), "verify differs"


if __name__ == "__main__":
    main()
