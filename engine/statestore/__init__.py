"""State stores: where ferry records what it created, with lineage, serial and a lock.

The embedded default is SQLite (`statestore.sqlite`); every store offers the same operations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from engine.model.state import LockInfo, ResourceRecord, State

DEFAULT_PATH = Path("state") / "ferry.db"


class StateStore(Protocol):
    def read(self) -> State:
        """The whole state as of now."""
        ...

    def write(self, puts: list[ResourceRecord], deletes: list[str]) -> int:
        """Apply puts and deletes in one transaction; returns the new serial."""
        ...

    def acquire(self, operation: str) -> LockInfo:
        """Take the lock or raise StateLockedError naming the holder."""
        ...

    def release(self) -> None:
        """Drop our own lock."""
        ...

    def force_unlock(self) -> LockInfo | None:
        """Remove whatever lock is held (the user's decision); returns what was removed."""
        ...


def default_path() -> Path:
    return Path(os.environ.get("FERRY_STATE") or DEFAULT_PATH)
