"""`ferry agent` logs as a service (issue 14): timestamp, level and logger on every line, INFO
and up, in place of the command-line's `warning: <message>` setup that `ferry` installs first."""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from amqp.exceptions import RecoverableConnectionError
from celery.exceptions import CPendingDeprecationWarning, SecurityWarning
from celery.platforms import ROOT_DISCOURAGED
from celery.worker.consumer.consumer import CANCEL_TASKS_BY_DEFAULT

from engine.cli.agent import log_with_time
from engine.executor import agent


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_an_agent_replaces_the_commands_one_line_logging(root_logging: logging.Logger) -> None:
    root_logging.handlers[:] = []
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # as `ferry` does
    log_with_time()
    assert len(root_logging.handlers) == 1
    stream = io.StringIO()
    root_logging.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("ferry.agent").info("task 1f2e: copy of web01 disk 2000 started")
    line = stream.getvalue().strip()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ferry\.agent: task 1f2e: copy of web01 disk "
        r"2000 started",
        line,
    ), line


def test_celerys_lines_that_are_no_warnings_for_an_agent_are_dropped(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break-it 14c (a lab agent's log): Celery's 8-line advice on a setting ferry sets on
    purpose at each broker connection loss, its 7-line root warning at each start (advising a
    --uid option `ferry agent` has not: one INFO line instead) and its warning that the rpc://
    backend cannot mark a revoked task. Other warnings of the same kinds stay."""
    control = logging.getLogger("celery.worker.control")
    monkeypatch.setattr(agent.os, "geteuid", lambda: 0)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        caplog.set_level(logging.INFO)
        agent.quiet_celery()
        try:
            warnings.warn(CANCEL_TASKS_BY_DEFAULT, CPendingDeprecationWarning, stacklevel=1)
            said = ROOT_DISCOURAGED.format(uid=0, euid=0, gid=0, egid=0)
            warnings.warn(SecurityWarning(said), stacklevel=1)
            warnings.warn("another pending deprecation", CPendingDeprecationWarning, stacklevel=1)
            missing = "RPC backend missing task request for 't-1'"
            control.warning("Failed to mark task %s as revoked in backend: %s", "t-1", missing)
            control.warning("Failed to mark task %s as revoked in backend: %s", "t-2", "timeout")
            captured = logging.getLogger("py.warnings")  # Celery's logging setup routes them here
            captured.warning(
                "%s", f"consumer.py:427: CPendingDeprecationWarning: \n{CANCEL_TASKS_BY_DEFAULT}"
            )
            captured.warning("%s", "x.py:1: CPendingDeprecationWarning: another")
            request = logging.getLogger("celery.worker.request")
            closed = RecoverableConnectionError("connection already closed")  # as amqp raises it
            try:
                raise closed
            except RecoverableConnectionError as exc:  # as kombu's ack_log_error logs it
                request.critical("Couldn't ack %r, reason:%r", 1, exc, exc_info=True)
                request.critical("Couldn't ack %r, reason:%r", 2, OSError("disk"), exc_info=True)
        finally:
            for name in ("celery.worker.control", "py.warnings", "celery.worker.request"):
                logging.getLogger(name).filters.clear()
    assert [str(w.message) for w in shown] == ["another pending deprecation"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [
        agent.ROOT_LINE,
        "Failed to mark task t-2 as revoked in backend: timeout",
        "x.py:1: CPendingDeprecationWarning: another",
    ], lines
    lost, other = caplog.records[3:]
    assert (lost.levelname, lost.exc_info) == ("WARNING", None)
    assert lost.getMessage() == (
        "Couldn't ack 1, reason:RecoverableConnectionError(None, 'connection already closed', "
        "None, ''): the broker connection it came on is gone; RabbitMQ delivers it again and "
        "the agent answers that delivery with this run's outcome (no second copy)"
    )
    assert other.levelname == "CRITICAL" and other.exc_info is not None  # another cause: kept


def test_a_broker_outage_is_one_warning_and_one_line_when_it_answers_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy's progress states and reply-queue checks fail every second while the broker is
    down: one warning for the outage (not one a second), one INFO line when it answers again,
    and a second outage is said again."""
    caplog.set_level(logging.INFO, logger=agent.log.name)
    clock = iter([100.0, 130.0, 200.0, 201.0])
    monkeypatch.setattr(agent.time, "monotonic", lambda: next(clock))
    outage = agent._Outage("t-1")
    outage.back()  # nothing lost: nothing said
    for _ in range(30):
        outage.lost(ConnectionRefusedError(111, "Connection refused"))
    outage.back()
    outage.back()
    outage.lost(ConnectionResetError(104, "Connection reset by peer"))
    outage.back()
    lines: list[Any] = [(r.levelname, r.getMessage()) for r in caplog.records]
    warned = (
        "task t-1: the broker does not answer ([Errno {}] {}): the copy goes on; its progress is "
        "sent again once the broker answers"
    )
    assert lines == [
        ("WARNING", warned.format(111, "Connection refused")),
        (
            "INFO",
            "task t-1: the broker answers again after 30 s (30 attempt(s) to reach it failed)",
        ),
        ("WARNING", warned.format(104, "Connection reset by peer")),
        ("INFO", "task t-1: the broker answers again after 1 s (1 attempt(s) to reach it failed)"),
    ], lines
