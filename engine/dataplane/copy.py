"""The copy engine: NBD source → destination device (or file), extent-aware and pipelined.

- What to copy: the whole disk (a full copy) or given areas (CBT changed areas for a delta).
  Inside them, NBD block status splits data from holes/zero runs; holes and zero runs are never
  read. They are not written either when the destination is known to read as zeros (a fresh,
  unencrypted volume); otherwise they are zeroed explicitly (punched on a file, BLKZEROOUT on a
  block device, else written), so an encrypted volume or a delta never keeps stale bytes.
- How: requests of at most `request_size` bytes (VDDK's limit is 2 MiB), `in_flight` at once
  with libnbd's aio into buffers each connection allocates once and reuses; each completed read
  is written with pwrite; data that reads as all zeros on a zero destination is not written.
- Writeback: each write is handed to the kernel's writeback at once (sync_file_range), and
  once `writeback_window` bytes are written after it, waited for and dropped from the page
  cache. Writeback overlaps the copy (the final fsync is short) and a big disk does not fill the
  conversion host's memory with dirty pages. Ends with fsync.
- Resumable: requests are issued in offset order and `checkpoint(offset)` is called at least
  every `checkpoint_interval` seconds with an offset below which everything is written; a copy
  started again with `start_at` continues from there.
- Stoppable: once `cancel` is set, no read is issued; those in flight are written, the
  destination flushed, a last checkpoint given, and `StoppedError` raised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import math
import os
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbd

from engine.dataplane import nbd as nbd_client
from engine.dataplane.blkhash import Cancel, Hasher
from engine.dataplane.cbt import Extent, merge_extents
from engine.errors import DataplaneError, StoppedError
from engine.units import human

MiB = 1024**2
DEFAULT_REQUEST = 2 * MiB
DEFAULT_IN_FLIGHT = 8
DEFAULT_WRITEBACK_WINDOW = 64 * MiB
WRITEBACK_BATCH = 4 * MiB  # bytes written between two starts of writeback
_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device
_SYNC_START = 2  # SYNC_FILE_RANGE_WRITE
_SYNC_WAIT = 1 | 2 | 4  # SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


MOVED = ("bytes_read", "bytes_written", "bytes_zeroed", "bytes_skipped", "retries")


@dataclass
class CopyStats:
    bytes_read: int = 0  # data read from the source
    bytes_written: int = 0  # data written to the destination
    bytes_zeroed: int = 0  # zero runs zeroed explicitly (destination not known zero)
    bytes_skipped: int = 0  # holes and zero runs not read, left alone (zero destination)
    requests: int = 0
    retries: int = 0  # reads that failed and were issued again
    seconds: float = 0.0
    checkpoints: list[int] = field(default_factory=list)

    def moved(self) -> dict[str, int]:
        """The byte counts (and retries) as StoppedError.moved carries them."""
        return {k: int(getattr(self, k)) for k in MOVED}

    @classmethod
    def of_stop(cls, error: StoppedError) -> CopyStats:
        """What a stopped copy moved before it stopped (zeros when it said nothing)."""
        got = {k: int(error.moved.get(k, 0)) for k in MOVED}
        return cls(
            bytes_read=got["bytes_read"],
            bytes_written=got["bytes_written"],
            bytes_zeroed=got["bytes_zeroed"],
            bytes_skipped=got["bytes_skipped"],
            retries=got["retries"],
        )

    @property
    def throughput(self) -> float:
        """Bytes of the disk covered per second (data read + zeros handled)."""
        covered = self.bytes_read + self.bytes_zeroed + self.bytes_skipped
        return covered / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class CopyOptions:
    dst_is_zero: bool = False
    request_size: int = DEFAULT_REQUEST
    in_flight: int = DEFAULT_IN_FLIGHT  # reads in flight per connection
    connections: int = 4  # NBD connections, each on its own thread
    start_at: int = 0
    checkpoint: Callable[[int], None] | None = None
    checkpoint_interval: float = 2.0
    on_bytes: Callable[[int, int], None] | None = None  # (data read, data to read), ~2 per s
    retries: int = 5  # a failed read is issued again up to this many times, with backoff
    backoff: float = 0.05  # seconds before the first retry; doubles each time, at most 2 s
    writeback_window: int = DEFAULT_WRITEBACK_WINDOW  # written bytes kept in the page cache
    cancel: threading.Event | None = None  # set: stop at the next checkpoint (StoppedError)


class _Writeback:
    """Starts writeback of the written bytes every `batch` bytes (one sync_file_range over the
    span of that batch's writes); once `window` bytes were written after a batch, waits for its
    span to be on the device and drops it from the page cache. Shared by the connections'
    threads; the syscalls happen outside the lock. Batches, not single writes: a delta's
    thousands of small areas cost three syscalls each (30% of the copy's CPU for 2,390 areas of
    4-256 KiB). A scattered batch's span covers older dirty pages too; writing them earlier
    than the final fsync would is harmless."""

    def __init__(self, fd: int, path: Path, window: int, batch: int = WRITEBACK_BATCH) -> None:
        self.fd, self.path, self.window, self.batch = fd, path, window, max(1, min(batch, window))
        self.lock = threading.Lock()
        self.ranges: deque[tuple[int, int, int]] = deque()  # started: (offset, span, bytes)
        self.lo, self.hi, self.pending = -1, -1, 0  # the batch being gathered
        self.ahead = 0
        self.enabled = True

    def written(self, offset: int, length: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            lo = offset if self.lo < 0 else min(self.lo, offset)
            self.lo, self.hi = lo, max(self.hi, offset + length)
            self.pending += length
            if self.pending < self.batch:
                return
            start, span, n = self.lo, self.hi - self.lo, self.pending
            self.lo, self.hi, self.pending = -1, -1, 0
        if not self._sync(start, span, _SYNC_START):
            return
        old = []
        with self.lock:
            self.ranges.append((start, span, n))
            self.ahead += n
            while self.ahead > self.window:
                old.append(self.ranges.popleft())
                self.ahead -= old[-1][2]
        for start, span, _ in old:
            self._settle(start, span)

    def _settle(self, offset: int, length: int) -> None:
        if self._sync(offset, length, _SYNC_WAIT):
            os.posix_fadvise(self.fd, offset, length, os.POSIX_FADV_DONTNEED)

    def _sync(self, offset: int, length: int, flags: int) -> bool:
        """sync_file_range; False (and off from now on) where the fd does not support it."""
        if _libc.sync_file_range(self.fd, ctypes.c_long(offset), ctypes.c_long(length), flags) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ESPIPE, errno.ENOSYS, errno.EOPNOTSUPP):
            self.enabled = False
            return False
        raise DataplaneError(f"writing {self.path} at {offset}: {os.strerror(code)}")


class _Destination:
    """The destination fd: pwrite, zeroing (punch on files, BLKZEROOUT on block devices, else
    writes), fsync."""

    def __init__(self, path: Path, writeback_window: int = DEFAULT_WRITEBACK_WINDOW) -> None:
        try:
            self.fd = os.open(path, os.O_WRONLY)
        except OSError as exc:
            raise DataplaneError(f"cannot open destination {path}: {exc.strerror}") from exc
        self.path = path
        mode = os.fstat(self.fd).st_mode
        self.is_file, self.is_block = stat.S_ISREG(mode), stat.S_ISBLK(mode)
        self._zeros = bytes(DEFAULT_REQUEST)
        self._writeback = _Writeback(self.fd, path, writeback_window)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        view, position = memoryview(data), offset
        try:
            while view:
                n = os.pwrite(self.fd, view, position)
                view, position = view[n:], position + n
        except OSError as exc:
            raise DataplaneError(f"writing {self.path} at {position}: {exc.strerror}") from exc
        self._writeback.written(offset, len(data))

    def zero(self, offset: int, length: int) -> None:
        """Make [offset, offset+length) read as zeros: a hole punched in a file, BLKZEROOUT on a
        block device (the device zeroes or unmaps it, without the bytes crossing the bus),
        else zeros written."""
        if self.is_file and _fallocate(self.fd, _FALLOC_PUNCH, offset, length):
            return
        if self.is_block and self._zeroout(offset, length):
            return
        end = offset + length
        while offset < end:
            n = min(len(self._zeros), end - offset)
            self.write(memoryview(self._zeros)[:n], offset)
            offset += n

    def _zeroout(self, offset: int, length: int) -> bool:
        """BLKZEROOUT over a 512-byte aligned range; False when unaligned or not supported
        (the caller writes zeros). Written pages of the range are dropped by the kernel."""
        if offset % 512 or length % 512:
            return False
        try:
            fcntl.ioctl(self.fd, _BLKZEROOUT, struct.pack("QQ", offset, length))
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
                self.is_block = False  # not for this device: write zeros from now on
                return False
            raise DataplaneError(f"zeroing {self.path} at {offset}: {exc.strerror}") from exc
        return True

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EROFS):
                raise DataplaneError(f"flushing {self.path}: {exc.strerror}") from exc
        finally:
            os.close(self.fd)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    return int(_libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length))) == 0


def plan_requests(runs: Sequence[nbd_client.Run], request_size: int) -> list[tuple[int, int, bool]]:
    """Runs → (offset, length, data) requests of at most request_size, in offset order."""
    out = []
    for run in runs:
        position, end = run.offset, run.offset + run.length
        while position < end:
            n = min(request_size, end - position) if run.data else end - position
            out.append((position, n, run.data))
            position += n
    return out


def copy(
    uri: str,
    destination: Path,
    areas: Sequence[Extent] | None,
    options: CopyOptions,
    data: Sequence[Extent] | None = None,
) -> CopyStats:
    """Copy `areas` (None: the whole disk) of the NBD export at `uri` into `destination`.

    Where the source holds data comes from its block status, or from `data` when given (a
    reader without block status: CBT's allocated areas): only there is it read; the rest of
    `areas` is zeros, skipped on a zero destination (counted as skipped) or zeroed, so read +
    zeroed + skipped covers `areas` from `start_at` whatever the reader.

    Requests are dealt round-robin to `options.connections` connections, each pumped by its own
    thread (libnbd and pwrite release the GIL), so reads and writes overlap.

    Raises StoppedError (`options.cancel` set: at a flushed checkpoint; its `moved` says what
    was read and written until then), DataplaneError.
    """
    began = time.monotonic()
    dst = _Destination(destination, options.writeback_window)
    try:
        with nbd_client.connect(uri) as handle:
            runs = _runs(handle, areas, options.start_at, data)
            requests = plan_requests(runs, options.request_size)
            size = handle.get_size()
        shares = [requests[i :: options.connections] for i in range(options.connections)]
        progress = _Progress(options, len(shares), sum(n for _, n, data in requests if data))
        for i, share in enumerate(shares):
            if not share:
                progress.marks[i] = math.inf
        if progress.total:  # 0 of N now: progress lines time the copy from its start
            progress.add(0)
        results = [CopyStats() for _ in shares]
        errors: list[BaseException] = []
        job = _Job(uri, dst, options, progress, errors)
        threads = [
            threading.Thread(target=_worker, args=(job, i, share, results[i]), daemon=True)
            for i, share in enumerate(shares)
            if share
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        progress.add(0, final=True)
    finally:
        dst.close()
    if options.cancel is not None and options.cancel.is_set() and progress.low() != math.inf:
        progress.emit(int(progress.low()))  # flushed above: everything below it is on the device
        raise StoppedError(
            f"stopped at {human(progress.low())} of the {human(size)} disk (every byte to copy "
            "below that offset is written); resumes from there",
            _merge(results, progress.emitted).moved(),
        )
    if requests:
        progress.emit(requests[-1][0] + requests[-1][1])
    stats = _merge(results, progress.emitted)
    stats.seconds = time.monotonic() - began
    return stats


def _runs(
    handle: Any, areas: Sequence[Extent] | None, start_at: int, data: Sequence[Extent] | None
) -> list[nbd_client.Run]:
    clipped = [(max(o, start_at), o + n) for o, n in _within(areas, handle.get_size())]
    wanted = [(lo, hi - lo) for lo, hi in clipped if hi > lo]
    if data is not None:
        return data_runs(wanted, data)
    return nbd_client.runs_for(handle, wanted)


def _merge(results: list[CopyStats], checkpoints: list[int]) -> CopyStats:
    total = CopyStats(checkpoints=checkpoints)
    for r in results:
        total.bytes_read += r.bytes_read
        total.bytes_written += r.bytes_written
        total.bytes_zeroed += r.bytes_zeroed
        total.bytes_skipped += r.bytes_skipped
        total.requests += r.requests
        total.retries += r.retries
    return total


class _Progress:
    """Each connection's lowest unfinished offset; their minimum is the copy's checkpoint."""

    def __init__(self, options: CopyOptions, workers: int, total: int = 0) -> None:
        self.options = options
        self.marks = [float(options.start_at)] * workers
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.emitted: list[int] = []
        self.total = total
        self.covered = 0
        self.reported = 0.0

    def add(self, n: int, *, final: bool = False) -> None:
        """Data bytes read (holes and zero runs take no time worth showing)."""
        if self.options.on_bytes is None:
            return
        with self.lock:
            self.covered += n
            now = time.monotonic()
            if not final and now - self.reported < 0.5:
                return
            self.reported = now
            covered = self.covered
        self.options.on_bytes(covered, self.total)

    def update(self, worker: int, mark: float) -> None:
        with self.lock:
            self.marks[worker] = mark
            now = time.monotonic()
            if (
                self.options.checkpoint is None
                or now - self.last < self.options.checkpoint_interval
            ):
                return
            self.last = now
            low = min(self.marks)
        if low != math.inf:
            self.emit(int(low))

    def low(self) -> float:
        """The offset below which everything is written (inf: all of it)."""
        with self.lock:
            return min(self.marks, default=math.inf)

    def emit(self, mark: int) -> None:
        self.emitted.append(mark)
        if self.options.checkpoint is not None:
            self.options.checkpoint(mark)


@dataclass(frozen=True)
class _Job:
    """What every connection's thread shares."""

    uri: str
    dst: _Destination
    options: CopyOptions
    progress: _Progress
    errors: list[BaseException]


def _worker(job: _Job, index: int, requests: list[tuple[int, int, bool]], stats: CopyStats) -> None:
    try:
        with nbd_client.connect(job.uri) as handle:
            largest = max((n for _, n, data in requests if data), default=0)
            pump = _Pump(handle, job, stats, largest)
            pump.run(requests, lambda mark: job.progress.update(index, mark))
    except BaseException as exc:  # handed to the main thread, which raises it
        job.errors.append(exc)


class _Pump:
    """One connection's reads: at most `in_flight` at once, each written when it completes.

    Every read in flight has a buffer of its own, allocated once and reused: no allocation (and
    page faults) per request; each as big as the largest read this connection makes (`largest`
    bytes, at most the request size: a delta's small areas do not fault in 2 MiB buffers).
    Buffers are not zeroed before each read (libnbd's default does):
    a buffer's contents are only used when its read succeeded.
    """

    def __init__(self, handle: Any, job: _Job, stats: CopyStats, largest: int = 0) -> None:
        self.handle, self.job, self.stats = handle, job, stats
        self.options = job.options
        self.outstanding: dict[int, int] = {}  # offset → length of reads in flight
        self.failures: list[str] = []
        self.retry = _Retries(job.options)
        size = min(job.options.request_size, largest) if largest > 0 else job.options.request_size
        self.free = [memoryview(bytearray(size)) for _ in range(job.options.in_flight)]
        handle.set_pread_initialize(False)

    def run(self, requests: list[tuple[int, int, bool]], report: Callable[[float], None]) -> None:
        """Read and write `requests`, reporting the offset below which all is written (inf
        when all is); when cancelled, the reads in flight are written and the rest left."""
        queue, retry = deque(requests), self.retry
        cancel = self.options.cancel
        while queue or self.outstanding or retry.pending:
            stopping = cancel is not None and cancel.is_set()
            if not stopping:
                self._issue(queue)
            if self.outstanding and not self.failures:
                self.handle.poll(-1)
            elif retry.pending and not queue and not stopping:
                retry.wait()
            # Checked before any report: a failed read or write is not below a checkpoint.
            if self.failures:
                _drain(self.handle)
                raise DataplaneError("; ".join(self.failures[:3]))
            # Everything below the lowest read in flight (or waiting) is written.
            waiting = [*self.outstanding, *retry.offsets(), *([queue[0][0]] if queue else [])]
            report(min(waiting, default=math.inf))
            if stopping and not self.outstanding:
                return
        report(math.inf)

    def _issue(self, queue: deque[tuple[int, int, bool]]) -> None:
        retry, options = self.retry, self.options
        while (queue or retry.ready()) and len(self.outstanding) < options.in_flight:
            offset, length, data = retry.pop() if retry.ready() else queue.popleft()
            if not data:  # not counted as progress: it would inflate throughput and skew the ETA
                _zero_run(self.job.dst, offset, length, options, self.stats)
                continue
            slot = self.free.pop()
            buf = nbd.Buffer.from_buffer(slot[:length])
            self.outstanding[offset] = length
            self.stats.requests += 1
            try:
                self.handle.aio_pread(buf, offset, completion=self._completion(offset, buf, slot))
            except nbd.Error as exc:
                raise DataplaneError(f"read at {offset} failed: {exc.string}") from exc

    def _completion(self, offset: int, buf: Any, slot: memoryview) -> Callable[[Any], int]:
        def done(err: Any) -> int:
            try:
                self._done(offset, buf, err.value)
            finally:
                self.free.append(slot)
            return 1

        return done

    def _done(self, offset: int, buf: Any, error: int) -> None:
        stats, options = self.stats, self.options
        self.outstanding.pop(offset, None)
        if error:
            if self.retry.again(offset, buf.size()):
                stats.retries += 1
            else:
                self.failures.append(
                    f"read at {offset} failed after {options.retries + 1} attempts: "
                    f"{os.strerror(error)}"
                )
            return
        stats.bytes_read += buf.size()
        self.job.progress.add(buf.size())
        if options.dst_is_zero and buf.is_zero():  # counted once: read, not also skipped
            return  # (break-it 15 F6: a CBT-off whole extent counted 3 GiB read + 2.8 skipped)
        try:
            self.job.dst.write(buf.to_buffer(), offset)  # a view of the slot: no copy
        except DataplaneError as exc:
            self.failures.append(str(exc))
            return
        stats.bytes_written += buf.size()


class _Retries:
    """Failed reads waiting to be issued again, each after its own backoff."""

    def __init__(self, options: CopyOptions) -> None:
        self.options = options
        self.attempts: dict[int, int] = {}
        self.waiting: list[tuple[float, int, int]] = []  # (not before, offset, length)

    @property
    def pending(self) -> bool:
        return bool(self.waiting)

    def again(self, offset: int, length: int) -> bool:
        """Schedule a failed read again; False when it has no attempts left."""
        attempt = self.attempts.get(offset, 0) + 1
        if attempt > self.options.retries:
            return False
        self.attempts[offset] = attempt
        delay = min(self.options.backoff * 2 ** (attempt - 1), 2.0)
        self.waiting.append((time.monotonic() + delay, offset, length))
        self.waiting.sort()
        return True

    def ready(self) -> bool:
        return bool(self.waiting) and self.waiting[0][0] <= time.monotonic()

    def pop(self) -> tuple[int, int, bool]:
        _, offset, length = self.waiting.pop(0)
        return offset, length, True

    def wait(self) -> None:
        time.sleep(max(0.0, self.waiting[0][0] - time.monotonic()))

    def offsets(self) -> list[int]:
        return [offset for _, offset, _ in self.waiting]


def _zero_run(
    dst: _Destination, offset: int, length: int, options: CopyOptions, stats: CopyStats
) -> None:
    if options.dst_is_zero:
        stats.bytes_skipped += length
    else:
        dst.zero(offset, length)
        stats.bytes_zeroed += length


def _drain(handle: Any) -> None:
    while handle.aio_in_flight():
        handle.poll(-1)


def check_source_size(uri: str, capacity: int, what: str) -> None:
    """Raises DataplaneError unless the NBD export at `uri` holds at least `capacity` bytes (the
    disk's): copy and digest read only what lies inside the export, so a source shorter than the
    disk (a wrong or empty file behind a URL) would "copy" in silence what it lacks. `what`
    names the source in the message."""
    with nbd_client.connect(uri) as handle:
        size = int(handle.get_size())
    if size < capacity:
        raise DataplaneError(
            f"{what} holds {human(size)} ({size} B), less than the disk's {human(capacity)} "
            f"({capacity} B): it is not this disk's data; nothing was copied"
        )


def digest(
    uri: str,
    length: int | None = None,
    chunk: int = 4 * MiB,
    in_flight: int = 16,
    *,
    areas: Sequence[Extent] | None = None,
    data: Sequence[Extent] | None = None,
    cancel: Cancel | None = None,
) -> str:
    """The digest (engine.dataplane.blkhash: a hash list of 4 MiB pieces) of an NBD export (or
    its first `length` bytes; or of its `areas`' bytes, merged and in order — what
    `file_digest` with the same areas gives for a file holding the same).

    Holes and zero runs (block status) are neither read nor hashed; `data` (byte
    extents) says instead where the export holds data, for a reader without block status (the
    https reader: CBT's allocated areas), the rest taken as zeros unread. Data is read
    `in_flight` chunks ahead with aio and hashed in order, into `in_flight` + 1 buffers reused
    round-robin: python3-libnbd 1.14 (Debian 12) keeps a reference to every Buffer given to
    aio_pread, so a new buffer per read held the whole disk (a verify of 1 GiB peaked at 1.1 GiB
    of memory). A failed read is read again synchronously, with the copy's retries and backoff.
    `cancel` set: StoppedError.
    """
    h = Hasher(cancel)
    slots = [memoryview(bytearray(chunk)) for _ in range(in_flight + 1)]
    with nbd_client.connect(uri) as handle:
        handle.set_pread_initialize(False)
        size = handle.get_size() if length is None else min(length, handle.get_size())
        wanted = _within(areas, size)
        runs = nbd_client.runs_for(handle, wanted) if data is None else data_runs(wanted, data)
        requests = plan_requests(runs, chunk)
        ahead: deque[tuple[int, int, Any, int]] = deque()  # (offset, length, buffer, cookie)
        hashed = reads = 0
        for offset, n, is_data in requests:
            if is_data:
                # in_flight + 1 slots: the one reused here was hashed (popped) already
                buf = nbd.Buffer.from_buffer(slots[reads % len(slots)][:n])
                reads += 1
                ahead.append((offset, n, buf, handle.aio_pread(buf, offset)))
            else:
                ahead.append((offset, n, None, 0))
            while len(ahead) > in_flight or (ahead and ahead[0][2] is None):
                hashed += _hash_next(handle, h, ahead)
        while ahead:
            hashed += _hash_next(handle, h, ahead)
        expected = sum(n for _, n in wanted)
        if hashed != expected:
            raise DataplaneError(f"block status covered {human(hashed)} of {human(expected)}")
    return h.hexdigest()


def data_runs(wanted: Sequence[Extent], data: Sequence[Extent]) -> list[nbd_client.Run]:
    """Sorted, disjoint `wanted` areas as runs: data where they meet `data` (any extents),
    zeros elsewhere; they cover `wanted` exactly."""
    merged = merge_extents(data)
    out: list[nbd_client.Run] = []
    for offset, length in wanted:
        position, end = offset, offset + length
        for start, n in merged:
            if start + n <= position or start >= end:
                continue
            if start > position:
                out.append(nbd_client.Run(position, start - position, False))
            stop = min(start + n, end)
            out.append(nbd_client.Run(max(start, position), stop - max(start, position), True))
            position = stop
        if position < end:
            out.append(nbd_client.Run(position, end - position, False))
    return out


def _within(areas: Sequence[Extent] | None, size: int) -> list[Extent]:
    """`areas` (None: the whole disk) merged, sorted and clipped to `size`."""
    merged = merge_extents(areas if areas is not None else [(0, size)])
    return [(o, min(o + n, size) - o) for o, n in merged if o < size]


def _hash_next(handle: Any, h: Hasher, ahead: deque[tuple[int, int, Any, int]]) -> int:
    """Hash the oldest request (waiting for its read); the bytes hashed."""
    offset, n, buf, cookie = ahead.popleft()
    if buf is None:
        h.zeros(n)
        return n
    try:
        while not handle.aio_command_completed(cookie):
            handle.poll(-1)
        h.update(buf.to_buffer())
    except nbd.Error:
        h.update(_pread(handle, n, offset))
    return n


def _pread(handle: Any, length: int, offset: int, options: CopyOptions | None = None) -> bytes:
    """A synchronous read, retried with backoff like the copy's reads."""
    options = options or CopyOptions()
    for attempt in range(options.retries + 1):
        try:
            return bytes(handle.pread(length, offset))
        except nbd.Error as exc:
            if attempt == options.retries:
                raise DataplaneError(
                    f"read at {offset} failed after {attempt + 1} attempts: {exc.string}"
                ) from exc
            time.sleep(min(options.backoff * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def file_digest(
    path: Path,
    length: int | None = None,
    chunk: int = 8 * MiB,
    *,
    areas: Sequence[Extent] | None = None,
    cancel: Cancel | None = None,
) -> str:
    """The digest (engine.dataplane.blkhash) of a file or device (or its first `length` bytes;
    or of its `areas`' bytes, merged and in order, as `digest`). A regular file's holes
    (SEEK_HOLE) are not read. Stops early at the end of a shorter file. `cancel` set:
    StoppedError."""
    h = Hasher(cancel)
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)  # a shorter file: the digest of what it holds
        end = end if length is None else min(length, end)
        regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
        for offset, n in _within(areas, end):
            for at, count, is_data in _file_runs(f.fileno(), offset, n, regular):
                if is_data:
                    _hash_read(f, h, (at, count), chunk)
                else:
                    h.zeros(count)
    return h.hexdigest()


def _hash_read(f: Any, h: Hasher, extent: Extent, chunk: int) -> None:
    """Read `extent` of the open file `f` in reads of at most `chunk` bytes into `h`."""
    at, left = extent
    f.seek(at)
    while left > 0:
        data = f.read(min(chunk, left))
        if not data:
            return
        h.update(data)
        left -= len(data)


def _file_runs(fd: int, offset: int, length: int, regular: bool) -> list[tuple[int, int, bool]]:
    """[offset, offset+length) as (offset, length, is_data) runs: a regular file's holes by
    SEEK_DATA/SEEK_HOLE, else (a device, or a file system without them) one data run."""
    end = offset + length
    if not regular:
        return [(offset, length, True)]
    runs: list[tuple[int, int, bool]] = []
    at = offset
    while at < end:
        try:
            data = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data from here to the file's end
                runs.append((at, end - at, False))
                break
            return [(offset, length, True)]  # SEEK_DATA not supported
        if data > at:
            runs.append((at, min(data, end) - at, False))
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        runs.append((data, hole - data, True))
        at = hole
    return runs


def first_difference(
    uri: str,
    path: Path,
    length: int,
    chunk: int = 4 * MiB,
    *,
    areas: Sequence[Extent] | None = None,
    cancel: threading.Event | None = None,
) -> int | None:
    """The first byte offset (within `areas`, None: the whole `length` bytes) where an NBD
    export and a file or device differ, or None when they are equal there (a short file reads
    as zeros past its end). Reads both sides synchronously in `chunk`s: for saying *where* after
    the digests of `digest` and `file_digest` differed. `cancel` set: StoppedError."""
    with nbd_client.connect(uri) as handle, path.open("rb") as f:
        size = min(length, handle.get_size())
        for offset, n in _within(areas, size):
            for start in range(offset, offset + n, chunk):
                if cancel is not None and cancel.is_set():
                    raise StoppedError("stopped while looking for the first difference")
                count = min(chunk, offset + n - start)
                want = handle.pread(count, start)
                f.seek(start)
                got = f.read(count).ljust(count, b"\0")
                if got != want:
                    return start + _first_unequal(got, want)
    return None


def _first_unequal(a: bytes, b: bytes, block: int = 4096) -> int:
    """The first index where two unequal byte strings of one length differ."""
    at = next(i for i in range(0, len(a), block) if a[i : i + block] != b[i : i + block])
    return next(i for i in range(at, min(at + block, len(a))) if a[i] != b[i])
