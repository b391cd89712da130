"""Copy throughput: ferry's libnbd engine vs nbdcopy vs qemu-img convert, side by side.

Source: a sparse raw disk (default 4 GiB with 1 GiB of data in 251 extents) served by nbdkit's
file plugin on a unix socket, optionally behind the delay filter to model a remote ESXi
(`--rdelay-ms`); destination: a fresh sparse file (so every tool may skip zeros).
Every tool makes its copy durable (ferry fsyncs; nbdcopy --flush; qemu-img -t writeback, as
its convert default 'unsafe' never flushes), and the page cache is synced before each run.
The tools take turns (round after round, so page-cache and disk state favour none of them);
prints each tool's best of `--runs` seconds and its ratio to ferry.
Usage: .venv/bin/python benchmarks/copy_throughput.py [--size-gib 4] [--data-gib 1] [--rdelay-ms 0]
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

from engine.dataplane.copy import CopyOptions, copy, file_digest
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer

MiB = 1024**2
GiB = 1024**3


def make_source(path: Path, size: int, data: int, extents: int = 251) -> None:
    rng = random.Random(42)
    chunk = data // extents
    with path.open("wb") as f:
        f.truncate(size)
        for i in range(extents):
            f.seek(i * (size // extents))
            f.write(rng.randbytes(chunk))


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
    args = parser.parse_args()
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)
    with tempfile.TemporaryDirectory(prefix="ferry-copy-bench-", dir="/var/tmp") as tmp:
        src, dst = Path(tmp) / "src.raw", Path(tmp) / "dst.raw"
        make_source(src, size, data)
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


def human(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


if __name__ == "__main__":
    main()
