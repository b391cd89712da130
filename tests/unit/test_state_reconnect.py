"""The PostgreSQL state store across a lost connection (break-it 12c item 6), on a real server:
a terminated session is made again and its advisory lock taken again; another ferry that locked
the state in between stops this store (never two appliers); a write whose COMMIT was applied
before the connection died is not applied twice; a state unreachable for longer than the retry
window is an error naming the state and the cause, and usable again once it is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.errors import StateLockedError, StateUnreachableError, UserError
from engine.model.state import ResourceRecord, Status
from engine.statestore import postgres, postgres_at
from engine.statestore.postgres import PostgresStateStore, retry_seconds
from tests.integration.pgproxy import PgProxy, holder_backend, terminate


def record(address: str, **attrs: object) -> ResourceRecord:
    return ResourceRecord(address, "volume", Status.READY, attrs)


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def test_a_terminated_session_is_made_again_and_its_lock_taken_again(
    postgres_dsn: str, schema: str
) -> None:
    where = postgres_at(postgres_dsn, schema)
    store = where.open()
    store.acquire("apply")
    assert store.write([record("vm.a.disk[2000]", size=1)], []) == 1
    terminate(postgres_dsn, holder_backend(postgres_dsn, schema))
    assert store.write([record("vm.a.disk[2000]", size=2)], []) == 2  # reconnected, retried
    assert store.read().resources["vm.a.disk[2000]"].attributes == {"size": 2}
    other = where.open()
    with pytest.raises(StateLockedError, match="is locked by ferry apply"):
        other.acquire("apply")  # the lock was taken again: still one applier
    store.release()
    other.acquire("apply")
    other.release()
    for s in (store, other):
        s.close()


def test_the_heartbeat_takes_the_lock_again_before_the_next_write(
    postgres_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock held across minutes without a write (a conversion) is not left free for long:
    the store's heartbeat finds the session gone and takes the lock again."""
    monkeypatch.setattr(postgres, "HEARTBEAT_SECONDS", 0.2)
    where = postgres_at(postgres_dsn, schema)
    store = where.open()
    store.acquire("apply")
    first = holder_backend(postgres_dsn, schema)
    terminate(postgres_dsn, first)
    deadline = time.monotonic() + 20
    while holder_backend(postgres_dsn, schema, missing_ok=True) in (0, first):
        assert time.monotonic() < deadline, "the lock was not taken again"
        time.sleep(0.05)
    with pytest.raises(StateLockedError, match="is locked by ferry apply"):
        where.open().acquire("apply")
    store.release()
    store.close()


def test_another_ferry_that_locked_meanwhile_stops_this_one(postgres_dsn: str, schema: str) -> None:
    where = postgres_at(postgres_dsn, schema)
    first = where.open()
    first.acquire("apply")
    first.write([record("vm.a.disk[2000]", size=1)], [])
    terminate(postgres_dsn, holder_backend(postgres_dsn, schema))
    second = where.open()
    second.acquire("apply")  # the state looked free: the first one's session had ended
    with pytest.raises(StateLockedError, match="locked the state: this apply stops writing"):
        first.write([record("vm.a.disk[2000]", size=9)], [])
    with pytest.raises(StateLockedError):  # and every later write, at once
        first.read()
    assert first.outage is not None
    first.release()  # no error: its lock went with its session
    assert second.read().resources["vm.a.disk[2000]"].attributes == {"size": 1}
    with pytest.raises(StateLockedError):
        where.open().check_unlocked()  # the second still holds it
    second.release()
    first.close()
    second.close()


def test_a_write_committed_before_the_connection_died_is_not_applied_twice(
    postgres_dsn: str, schema: str
) -> None:
    """The COMMIT is applied, then the connection dies before its answer is read: the retried
    write finds its own token and is not done again (the serial moves once)."""
    store = postgres_at(postgres_dsn, schema).open()
    assert isinstance(store, PostgresStateStore)
    store.acquire("apply")
    store.write([record("vm.a.disk[2000]", size=1)], [])
    real_tx = store._tx
    died: list[int] = []

    @contextmanager
    def tx_then_lost() -> Iterator[None]:
        with real_tx():
            yield
        if not died:  # committed; now the session ends before the client hears of it
            died.append(holder_backend(postgres_dsn, schema))
            terminate(postgres_dsn, died[0])
            store._db.execute("SELECT 1")  # raises: the connection is gone

    store._tx = tx_then_lost  # type: ignore[method-assign]
    assert store.write([record("vm.b.disk[2000]", size=1)], ["vm.a.disk[2000]"]) == 2
    assert died, "the connection was not lost after the commit"
    state = postgres_at(postgres_dsn, schema).open(create=False).read()
    assert state.serial == 2 and list(state.resources) == ["vm.b.disk[2000]"]
    store.release()
    store.close()


def test_an_unreachable_state_is_an_error_naming_it_then_usable_again(
    postgres_dsn: str, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_STATE_RETRY_SECONDS", "1")
    proxy = PgProxy(postgres_dsn, tmp_path)
    where = postgres_at(proxy.start(), schema)
    store = where.open()
    store.acquire("apply")
    store.write([record("vm.a.disk[2000]", size=1)], [])
    proxy.cut()
    began = time.monotonic()
    with pytest.raises(StateUnreachableError) as raised:
        store.write([record("vm.a.disk[2000]", size=2)], [])
    assert 1 <= time.monotonic() - began < 10
    message = str(raised.value)
    assert f"postgresql://ferry@127.0.0.1:{proxy.port}/" in message
    assert "unreachable: the connection was lost and not made again in 1 s" in message
    began = time.monotonic()
    with pytest.raises(StateUnreachableError):  # the outage is known: one attempt, not 1 s
        store.read()
    assert time.monotonic() - began < 0.9
    proxy.restore()
    assert store.write([record("vm.a.disk[2000]", size=3)], []) == 2  # the lock taken again
    assert store.outage is None
    with pytest.raises(StateLockedError):
        postgres_at(postgres_dsn, schema).open().check_unlocked()
    proxy.cut()
    store.release()  # the connection is gone with its lock: nothing to say
    store.close()
    proxy.close()
    assert postgres_at(postgres_dsn, schema).open().read().serial == 2


def test_retry_seconds_from_the_environment() -> None:
    assert retry_seconds({}) == 30.0
    assert retry_seconds({"FERRY_STATE_RETRY_SECONDS": "2.5"}) == 2.5
    assert retry_seconds({"FERRY_STATE_RETRY_SECONDS": "0"}) == 0.0
    for bad in ("soon", "-1", "inf"):  # one clear error (test_bad_input), no silent 30 s
        with pytest.raises(UserError, match="is not a number of seconds >= 0"):
            retry_seconds({"FERRY_STATE_RETRY_SECONDS": bad})
