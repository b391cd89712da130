"""The digest a verify compares: a hash list of a disk's bytes, cheap over holes.

The bytes (a whole disk, or its areas merged and in order) are split into consecutive pieces
of PIECE bytes (the last one shorter); the digest is the sha256 of the concatenation of each
piece's sha256 digest, in order, as hex. It is a function of the bytes alone (their layout,
holes or written zeros, does not change it), and finding two byte strings with the same one
takes a sha256 collision. Unlike a plain sha256 of the disk, a piece known to be zeros (a hole
or zero run by NBD block status, a file's hole by SEEK_HOLE, or read and compared with zeros)
is not hashed: its digest is known. A 2 GiB thin disk holding 200 MiB costs ~200 MiB of
hashing, not 2 GiB per side. The construction is ovirt-imageio's blkhash (Nir Soffer's
`blksum`: "hash of block hashes" with zero blocks skipped), with 4 MiB pieces.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from engine.errors import StoppedError

PIECE = 4 * 1024**2  # bytes per piece
_ZEROS = bytes(PIECE)
_ZERO_PIECE = hashlib.sha256(_ZEROS).digest()


class Cancel(Protocol):
    """What a digest checks to stop early: a threading.Event, or any with its `is_set`."""

    def is_set(self) -> bool: ...


class AnyOf:
    """Set when any of `events` is (a Cancel): a verify's two reads stop on the apply's stop
    and on each other's failure."""

    def __init__(self, *events: Cancel) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class Hasher:
    """The running digest of a byte stream fed in order by `update` (bytes read) and `zeros`
    (a count of zero bytes, not read); `cancel` set: StoppedError at the next call (a verify
    of a big disk takes minutes, a stop must not wait for it)."""

    def __init__(self, cancel: Cancel | None = None) -> None:
        self.cancel = cancel
        self.outer = hashlib.sha256()
        self.piece = hashlib.sha256()
        self.filled = 0  # bytes of the current piece hashed so far

    def update(self, data: Any) -> None:
        """Add `data` (bytes-like): whole pieces that are all zeros are not hashed."""
        self._check()
        data = data if isinstance(data, bytes | bytearray) else bytes(data)
        at, end = 0, len(data)
        while at < end:
            take = min(PIECE - self.filled, end - at)
            chunk = data[at : at + take]
            if take == PIECE and chunk == _ZEROS:  # memcmp: ~10x faster than sha256
                self.outer.update(_ZERO_PIECE)
            else:
                self.piece.update(chunk)
                self.filled += take
                if self.filled == PIECE:
                    self._close()
            at += take

    def zeros(self, count: int) -> None:
        """Add `count` zero bytes: only the parts of pieces that are not wholly zero are hashed."""
        self._check()
        if self.filled and count:
            take = min(PIECE - self.filled, count)
            self.piece.update(memoryview(_ZEROS)[:take])
            self.filled += take
            count -= take
            if self.filled == PIECE:
                self._close()
        whole, rest = divmod(count, PIECE)
        for _ in range(whole):
            self.outer.update(_ZERO_PIECE)
        if rest:
            self.piece.update(memoryview(_ZEROS)[:rest])
            self.filled = rest

    def hexdigest(self) -> str:
        """The digest of the bytes added so far (more may be added after)."""
        outer = self.outer.copy()
        if self.filled:
            outer.update(self.piece.digest())
        return outer.hexdigest()

    def _close(self) -> None:
        self.outer.update(self.piece.digest())
        self.piece = hashlib.sha256()
        self.filled = 0

    def _check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise StoppedError("stopped while verifying: the next apply verifies again")


def bytes_digest(data: bytes) -> str:
    """The digest of `data` (the reference: every piece hashed)."""
    outer = hashlib.sha256()
    for at in range(0, len(data), PIECE):
        outer.update(hashlib.sha256(data[at : at + PIECE]).digest())
    return outer.hexdigest()
