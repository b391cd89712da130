"""The verify digest (engine.dataplane.blkhash): a function of the bytes alone, whichever way
they are fed (read, zero counts, any split), equal to the reference over every piece; holes
and zero pieces are not hashed."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from engine.dataplane.blkhash import PIECE, Hasher, bytes_digest
from engine.dataplane.copy import file_digest
from engine.errors import StoppedError


def _data(seed: int) -> bytes:
    """~3.5 pieces: data, a whole zero piece, zero runs across piece boundaries."""
    rng = random.Random(seed)
    out = bytearray(PIECE * 3 + PIECE // 2 + 123)
    for _ in range(20):
        at = rng.randrange(0, len(out) - 70_000)
        if not PIECE <= at < 2 * PIECE + 70_000:  # piece 1 stays zeros
            out[at : at + 70_000] = rng.randbytes(70_000)
    return bytes(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_split_of_reads_and_zero_counts_gives_the_reference(seed: int) -> None:
    data = _data(seed)
    rng = random.Random(seed)
    h = Hasher()
    at = 0
    while at < len(data):
        n = min(rng.choice([1, 511, 65536, PIECE - 7, PIECE, 2 * PIECE + 3]), len(data) - at)
        part = data[at : at + n]
        if any(part):
            h.update(part if rng.random() < 0.5 else memoryview(part))
        else:
            h.zeros(n)
        at += n
    assert h.hexdigest() == bytes_digest(data)


def test_it_is_of_the_bytes_not_a_plain_sha256_and_differs_with_one_byte() -> None:
    data = _data(4)
    flipped = bytearray(data)
    flipped[PIECE + 5] ^= 1  # inside the zero piece
    assert bytes_digest(data) != bytes_digest(bytes(flipped))
    assert bytes_digest(data) != bytes_digest(data + b"\0")  # the length counts


def test_a_file_with_holes_digests_as_its_bytes(tmp_path: Path) -> None:
    data = _data(5)
    sparse = tmp_path / "sparse.raw"
    with sparse.open("wb") as f:
        f.truncate(len(data))
        for at in range(0, len(data), 65536):
            part = data[at : at + 65536]
            if any(part):
                f.seek(at)
                f.write(part)
    dense = tmp_path / "dense.raw"
    dense.write_bytes(data)
    assert file_digest(sparse) == file_digest(dense) == bytes_digest(data)
    assert file_digest(sparse, 2 * PIECE + 9) == bytes_digest(data[: 2 * PIECE + 9])
    areas = [(PIECE - 100, 300), (3 * PIECE, 4096)]
    want = bytes_digest(data[PIECE - 100 : PIECE + 200] + data[3 * PIECE : 3 * PIECE + 4096])
    assert file_digest(sparse, areas=areas) == want


def test_a_set_cancel_stops_it() -> None:
    stop = threading.Event()
    h = Hasher(stop)
    h.zeros(PIECE)
    stop.set()
    with pytest.raises(StoppedError, match="stopped while verifying"):
        h.update(b"x")
