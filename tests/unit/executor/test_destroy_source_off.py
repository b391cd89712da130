"""--destroy of a VM whose source ferry powered off (break-it 12e item 5): a server an interrupted
apply booted and never confirmed is not a cutover, so the destroy that deletes it powers the source
back on (before: deleted, the source left off, neither ran, exit 0); a confirmed cutover's source
stays off. A real SQLite state store; the server delete and the vSphere power-on recorded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from engine.executor import cutover as module
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, Status
from engine.statestore.sqlite import SqliteStateStore
from tests.unit.executor import fakes

OFF = {"source_power": "poweredOn", "powered_off": "hard", "powered_off_at": 1796075717.0}
SERVER = "vm.web01.server"
CONVERSION = "vm.web01.conversion"


def destroy(store: SqliteStateStore, server: Status, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The destroy's server delete, then its conversion delete (the graph's order): what was
    deleted, powered on and said."""
    store.write(
        [
            ResourceRecord(CONVERSION, "conversion", Status.READY, OFF),
            ResourceRecord(SERVER, "server", server, {"server_id": "srv-1", "name": "web01"}),
        ],
        [],
    )
    power = fakes.Power().install(monkeypatch)
    seen = SimpleNamespace(deleted=[], said=[])
    monkeypatch.setattr(module.compute, "delete_server", lambda _c, i: seen.deleted.append(i))
    changes = [
        Change(SERVER, "server", Action.DELETE, "--destroy", {"server_id": "srv-1"}, None),
        Change(CONVERSION, "conversion", Action.DELETE, "--destroy", dict(OFF), None),
    ]
    cutover = fakes.cutover(store, seen.said, changes)
    for change in changes:
        getattr(cutover, change.kind)(change)
    assert store.read().resources == {}
    seen.powered = power.powered_on  # the VMs powered on, in order
    return seen


def test_a_never_confirmed_server_deleted_powers_the_source_back_on(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = destroy(store, Status.IN_PROGRESS, monkeypatch)
    assert seen.deleted == ["srv-1"]
    assert seen.powered == ["ref-web01"]
    assert seen.said == [
        "vm.web01: source powered back on (ferry powered it off at 21:55:17 UTC; the server an "
        "interrupted apply booted, never confirmed, was deleted)"
    ]


def test_a_confirmed_cutover_keeps_its_source_off(
    store: SqliteStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = destroy(store, Status.READY, monkeypatch)
    assert seen.deleted == ["srv-1"]
    assert seen.powered == []
