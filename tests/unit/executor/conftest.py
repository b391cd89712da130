"""Fixtures the executor's unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.statestore.sqlite import SqliteStateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    """An empty SQLite state store in the test's directory (a test file may override it with
    one holding its records)."""
    opened = SqliteStateStore(tmp_path / "ferry.db")
    yield opened
    opened.close()
