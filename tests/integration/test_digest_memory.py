"""A verify's digest keeps its memory bounded by its reads in flight, not by the disk (issue 15:
benchmarks/delta_sync.py peaked near 10 GB). python3-libnbd 1.14 keeps a reference to every
Buffer given to aio_pread; digest() allocated one per 4 MiB read, so hashing a disk held all of
it. Against real nbdkit (its pattern plugin: every byte data), no lab; one subprocess so its
peak RSS is the digest's alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

MiB = 1024**2
SIZE = 512 * MiB

PROGRAM = textwrap.dedent(
    """
    import resource
    from engine.dataplane.copy import digest
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest("nbd+unix:///?socket=" + __import__("sys").argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024)
    """
)


def test_a_digest_holds_its_reads_in_flight_not_the_disk(tmp_path: Path) -> None:
    socket = tmp_path / "nbd.sock"
    server = subprocess.Popen(
        ["nbdkit", "-f", "-U", str(socket), "--exit-with-parent", "pattern", f"size={SIZE}"]
    )
    try:
        for _ in range(100):
            if socket.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        done = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(socket)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=Path(__file__).parents[2],
        )
    finally:
        server.terminate()
        server.wait(10)
    grown = int(done.stdout.split()[-1])
    # 17 buffers of 4 MiB (68 MiB) and the libraries; the old code grew by the disk (> 512 MiB)
    assert grown < 160, f"digest of {SIZE // MiB} MiB grew the process by {grown} MiB"
