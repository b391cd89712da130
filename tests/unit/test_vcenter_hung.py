"""A vCenter that accepts connections and never answers (hung, or a wrong port behind a proxy)
fails `connect` with one line within CONNECT_TIMEOUT, instead of holding ferry forever: pyVmomi's
API version discovery opens its connections without a timeout (found by the Ctrl-C test of
tests/integration/test_bad_input.py, whose hung vCenter kept a plan waiting until killed). A real
listening socket on 127.0.0.1, no lab."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from engine.errors import VSphereError
from engine.providers.vsphere import session
from engine.providers.vsphere.session import VCenterTarget


def test_a_vcenter_that_never_answers_fails_the_connect_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", 1.0)
    outcome: list[BaseException | None] = []
    with socket.create_server(("127.0.0.1", 0)) as hung:  # accepts (backlog), never answers
        target = VCenterTarget("127.0.0.1", hung.getsockname()[1], "u", "p", insecure=True)

        def attempt() -> None:
            try:
                session.connect(target)
                outcome.append(None)
            except BaseException as exc:  # the test reports what it was
                outcome.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(30)
        took = time.monotonic() - started
    assert outcome, "connect to a vCenter that never answers was still waiting after 30 s"
    error = outcome[0]
    assert isinstance(error, VSphereError), repr(error)
    assert f"cannot connect to vCenter 127.0.0.1:{target.port}" in str(error)
    assert "timed out" in str(error)
    assert "\n" not in str(error)
    assert took < 10, took
    assert socket.getdefaulttimeout() is None  # the timeout was only for the discovery
