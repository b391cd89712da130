"""Copy throughput: ferry's libnbd engine vs nbdcopy vs qemu-img convert, side by side.

Source: a sparse raw disk (default 4 GiB with 1 GiB of data in 251 extents) served by nbdkit's
file plugin on a unix socket, optionally behind the delay filter to model a remote ESXi
(`--rdelay-ms`); destination: a fresh sparse file (so every tool may skip zeros).
Every tool makes its copy durable (ferry fsyncs; nbdcopy --flush; qemu-img -t writeback, as
its convert default 'unsafe' never flushes), and the page cache is synced before each run.
The tools take turns (round after round, so page-cache and disk state favour none of them);
prints each tool's best of `--runs` seconds and its ratio to ferry.
Then the readers on the same disk: ferry reading the file (nbdkit's file plugin) and over HTTPS
(the https reader: nbdkit's curl plugin, session cookie, TLS verified, against a local /folder
stand-in, folder_server.py), both copying the disk's data areas (what a full copy reads: HTTP
has no block status, so the areas come from CBT), directly and behind `--https-rdelay-ms` per
read, with `--connections` NBD connections (each one HTTP connection), printing https/file.
Usage: .venv/bin/python benchmarks/copy_throughput.py [--size-gib 4] [--data-gib 1] [--rdelay-ms 0]
       [--readers-only] [--https-rdelay-ms 2] [--connections 4]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from folder_server import FolderServer

from engine.dataplane.copy import CopyOptions, copy, file_digest
from engine.dataplane.nbdkit import DiskSource, FileDiskSource, HttpsDiskSource, NbdkitServer

MiB = 1024**2
GiB = 1024**3


def make_source(path: Path, size: int, data: int, extents: int = 251) -> list[tuple[int, int]]:
    """A sparse disk with `data` bytes in `extents` evenly spread runs; returns the runs."""
    rng = random.Random(42)
    chunk = data // extents
    areas = []
    with path.open("wb") as f:
        f.truncate(size)
        for i in range(extents):
            f.seek(i * (size // extents))
            f.write(rng.randbytes(chunk))
            areas.append((i * (size // extents), chunk))
    return areas


def fresh(path: Path, size: int) -> Path:
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


def timed(action: Callable[[], None]) -> float:
    """Seconds `action` takes, after a page-cache sync."""
    os.sync()
    began = time.monotonic()
    action()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--data-gib", type=float, default=1)
    parser.add_argument("--rdelay-ms", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--readers-only", action="store_true", help="skip nbdcopy, qemu-img")
    parser.add_argument("--https-rdelay-ms", type=int, default=2)
    parser.add_argument("--connections", type=str, default="4", help="e.g. 1,4,8")
    args = parser.parse_args()
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)
    with tempfile.TemporaryDirectory(prefix="ferry-copy-bench-", dir="/var/tmp") as tmp:
        src, dst = Path(tmp) / "src.raw", Path(tmp) / "dst.raw"
        areas = make_source(src, size, data)
        for count in (int(c) for c in args.connections.split(",")):
            for delay in sorted({0, args.https_rdelay_ms}):
                readers(src, dst, Path(tmp), areas, delay=delay, runs=args.runs, connections=count)
        if args.readers_only:
            return
        filters = (["delay"], [f"rdelay={args.rdelay_ms}ms"]) if args.rdelay_ms else ([], [])
        with NbdkitServer(FileDiskSource(src), filters=filters[0], filter_args=filters[1]) as srv:
            tools: dict[str, Callable[[], None]] = {
                "ferry (libnbd aio)": lambda: (
                    copy(srv.uri, fresh(dst, size), None, CopyOptions(dst_is_zero=True)) and None
                ),
                "nbdcopy": lambda: subprocess.run(
                    ["nbdcopy", "--destination-is-zero", "--flush", srv.uri, str(fresh(dst, size))],
                    check=True,
                ),
                "qemu-img convert": lambda: subprocess.run(
                    [
                        "qemu-img",
                        "convert",
                        "-n",
                        "--target-is-zero",
                        "-t",
                        "writeback",
                        "-f",
                        "raw",
                        "-O",
                        "raw",
                        srv.uri,
                        str(fresh(dst, size)),
                    ],
                    check=True,
                ),
            }
            results = {name: float("inf") for name in tools}
            want = file_digest(src)
            for _ in range(args.runs):
                for name, action in tools.items():
                    results[name] = min(results[name], timed(action))
                    assert file_digest(dst) == want, f"{name} produced a different disk"
    print(f"source: {human(size)} disk, {human(data)} of data, read delay {args.rdelay_ms} ms")
    base = results["ferry (libnbd aio)"]
    for name, seconds in results.items():
        rate = data / seconds / MiB
        print(
            f"{name:<20} {seconds:7.2f} s  {rate:7.0f} MiB/s  ratio to ferry {seconds / base:5.2f}"
        )


def readers(
    src: Path, dst: Path, tmp: Path, areas: list[tuple[int, int]], *, delay: int, runs: int,
    connections: int,
) -> None:  # fmt: skip
    """Best seconds of the file and the https reader copying `areas` of `src`, and the ratio."""
    size, data = src.stat().st_size, sum(n for _, n in areas)
    want = file_digest(src)
    with FolderServer(src, tmp) as folder:
        sources: dict[str, DiskSource] = {
            "file": FileDiskSource(src),
            "https": HttpsDiskSource(folder.url, folder.cookie, folder.cafile),
        }
        best = {name: float("inf") for name in sources}
        options = CopyOptions(dst_is_zero=True, connections=connections)
        filters = (["delay"], [f"rdelay={delay}ms"]) if delay else ([], [])
        for _ in range(runs):
            for name, source in sources.items():
                with NbdkitServer(source, filters=filters[0], filter_args=filters[1]) as srv:
                    seconds = timed(
                        lambda: copy(srv.uri, fresh(dst, size), areas, options) and None
                    )
                best[name] = min(best[name], seconds)
                assert file_digest(dst) == want, f"the {name} reader produced a different disk"
    rates = "  ".join(f"{n} {s:.2f} s ({data / s / MiB:.0f} MiB/s)" for n, s in best.items())
    print(
        f"readers, {human(data)} of data, {connections} connections, read delay {delay} ms: "
        f"{rates}  https/file {best['https'] / best['file']:.2f}",
        flush=True,
    )


def human(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


if __name__ == "__main__":
    main()
