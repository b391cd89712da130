"""`ferry agent` logs as a service (issue 14): timestamp, level and logger on every line, INFO
and up, in place of the command-line's `warning: <message>` setup that `ferry` installs first."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from engine.cli.agent import log_with_time


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
