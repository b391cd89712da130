"""An apply checks, right after taking the state's lock, that the state is still the one its
plan was made from (break-it 12k M1: an `apply SPEC` that refreshed while another apply ran
then applied what it planned from the state before that apply's writes). A real SQLite store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.cli.apply import check_state_unchanged
from engine.errors import UserError
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore


def test_a_state_written_since_the_refresh_is_refused_a_fresh_one_applies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ferry.db"
    store = SqliteStateStore(path)
    location: Any = SimpleNamespace(display=str(path), identity=str(path))
    empty = store.read()
    plan: Any = SimpleNamespace(state_serial=empty.serial, state_lineage=empty.lineage)
    check_state_unchanged(plan, store.read(), location)  # made on the empty state: applies
    record = ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, {"volume_id": "v"})
    store.write([record], [])
    with pytest.raises(UserError, match=r"the state changed since this plan was made \(serial"):
        check_state_unchanged(plan, store.read(), location)  # another apply wrote meanwhile
    now = store.read()
    fresh: Any = SimpleNamespace(state_serial=now.serial, state_lineage=now.lineage)
    check_state_unchanged(fresh, now, location)
    store.close()
