"""What both state stores share: the lock's description and refusal, and the lock as a
context manager."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from engine.errors import StateLockedError
from engine.model.state import LockInfo, ResourceRecord, State

FORMAT_VERSION = 1


def my_lock(operation: str) -> LockInfo:
    return LockInfo(f"ferry {operation}", os.getpid(), socket.gethostname(), time.time(), operation)


def state_of(
    meta: Mapping[str, str], resources: Mapping[str, ResourceRecord], lock: LockInfo | None
) -> State:
    """The State both stores read: their meta rows, resources and lock."""
    return State(int(meta["format_version"]), meta["lineage"], int(meta["serial"]), resources, lock)


def locked_error(display: str, held: LockInfo, hint: str) -> StateLockedError:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.acquired_at))
    return StateLockedError(
        f"state {display} is locked by {held.holder} (pid {held.pid} on {held.host} "
        f"since {since}); {hint}"
    )


class _Lockable(Protocol):
    def acquire(self, operation: str) -> LockInfo: ...

    def release(self) -> None: ...


@contextmanager
def holding(store: _Lockable, operation: str) -> Iterator[LockInfo]:
    info = store.acquire(operation)
    try:
        yield info
    finally:
        store.release()
