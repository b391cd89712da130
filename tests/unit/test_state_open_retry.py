"""Opening a PostgreSQL state rides out a lost connection as its reads and writes do (before:
a failover or a network blip at the moment ferry opened the state was an error at once): the
open is tried again with backoff within FERRY_STATE_RETRY_SECONDS; a state that stays
unreachable is one error saying for how long it was tried. A real server behind a TCP
proxy that refuses connections (`cut`) until `restore`."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from engine.errors import StateError
from engine.statestore import postgres, postgres_at
from tests.integration.pgproxy import PgProxy


def test_an_open_refused_at_first_is_tried_again_and_opens(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_STATE_RETRY_SECONDS", "20")
    proxy = PgProxy(postgres_dsn, tmp_path)
    where = postgres_at(proxy.start(), f"t_{uuid.uuid4().hex[:12]}")
    proxy.cut()
    real = postgres.PostgresStateStore._connect
    refused: list[str] = []

    def connect(store: postgres.PostgresStateStore) -> object:
        """The real connect; the proxy comes back once the first attempt was refused."""
        try:
            return real(store)
        except Exception as exc:
            refused.append(str(exc))
            proxy.restore()
            raise

    monkeypatch.setattr(postgres.PostgresStateStore, "_connect", connect)
    store = where.open()  # the first attempt refused, the second through the restored proxy
    assert len(refused) == 1 and proxy.accepted >= 1
    assert store.read().serial == 0
    store.close()
    proxy.close()


def test_a_state_that_stays_unreachable_is_one_error_after_the_window(
    postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_STATE_RETRY_SECONDS", "1")
    proxy = PgProxy(postgres_dsn, tmp_path)
    where = postgres_at(proxy.start(), "ferry")
    proxy.cut()
    began = time.monotonic()
    with pytest.raises(StateError) as raised:
        where.open()
    assert 1 <= time.monotonic() - began < 10
    message = str(raised.value)
    assert message.startswith(f"cannot connect to state postgresql://ferry@127.0.0.1:{proxy.port}/")
    assert "(tried for 1 s): " in message and "\n" not in message, message
    proxy.close()
