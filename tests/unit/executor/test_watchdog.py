"""An agent whose Celery worker is stuck after a broker loss (alive, answering nothing, taking
nothing: break-it 14b F1) starts itself again; a broker outage alone never does."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from engine.executor import watchdog
from engine.executor.watchdog import Misses, restart


def test_only_misses_in_a_row_with_the_broker_up_count() -> None:
    misses = Misses(limit=3)
    seen = [
        misses.seen(up, answered)
        for up, answered in [
            (True, False),
            (True, False),
            (False, False),  # the broker down: its outage, the count starts over
            (True, False),
            (True, True),  # answered
            (True, False),
            (True, False),
            (True, False),
        ]
    ]
    assert seen == [False, False, False, False, False, False, False, True]


def test_a_restart_stops_its_children_by_pid_then_execs_the_same_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchdog, "CHILD_GRACE", 2.0)
    child = subprocess.Popen(["sleep", "60"])
    ignores = subprocess.Popen(  # a child that ignores SIGTERM gets SIGKILL after the grace
        [sys.executable, "-c", "import signal,time; signal.signal(15, signal.SIG_IGN); "
         "print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert ignores.stdout is not None and ignores.stdout.readline() == b"up\n"
    assert {child.pid, ignores.pid} <= {p.pid for p in psutil.Process().children()}
    execs: list[tuple[str, list[str]]] = []
    mine = [psutil.Process(child.pid), psutil.Process(ignores.pid)]  # this test's, not pytest's
    restart(execv=lambda path, argv: execs.append((path, argv)), children=lambda: mine)
    assert [p.returncode for p in mine] == [-15, -9]  # reaped by the restart's wait
    assert execs == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
