"""Where a verify failure points: the first differing byte between an nbdkit export and a file,
against real nbdkit and libnbd (no lab needed)."""

from __future__ import annotations

from pathlib import Path

from engine.dataplane.copy import first_difference
from engine.dataplane.nbdkit import FileDiskSource, NbdkitServer

MiB = 1024**2
SIZE = 16 * MiB


def test_first_difference_names_the_first_differing_byte(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    for path in (src, dst):
        with path.open("wb") as f:
            f.truncate(SIZE)
            f.seek(3 * MiB)
            f.write(bytes(range(256)) * 4096)  # 1 MiB of data amid holes
    with NbdkitServer(FileDiskSource(src)) as server:
        assert first_difference(server.uri, dst, SIZE) is None  # equal
        with dst.open("r+b") as f:
            f.seek(9 * MiB + 4097)  # in a hole of the source, past a 4 KiB block boundary
            f.write(b"\x01")
            f.seek(13 * MiB)
            f.write(b"\x02")
        assert first_difference(server.uri, dst, SIZE, chunk=MiB) == 9 * MiB + 4097
        assert first_difference(server.uri, dst, SIZE, areas=[(12 * MiB, 2 * MiB)]) == 13 * MiB
        assert first_difference(server.uri, dst, SIZE, areas=[(0, 9 * MiB)]) is None
        with dst.open("r+b") as f:
            f.truncate(4 * MiB)  # a shorter file reads as zeros past its end
        assert first_difference(server.uri, dst, SIZE) is None
