"""An agent's watch on its own worker: after a broker restart, Celery's worker can stay alive
yet take nothing and answer nothing (break-it 14b F1: its log ended in "Couldn't ack ...
connection already closed", its queue held 2 messages for its one consumer, pings went
unanswered, and the next apply failed "no agent took the copy" while the agent ran; Celery's
issues #2077, #3201, #3773 describe the same wedge). Every WATCH seconds a thread of the agent
pings its own worker over a connection of its own; when the broker answers but the worker has
missed MISSES pings in a row, the agent starts itself again: its child processes (nbdkit,
qemu-img, virt-v2v) are stopped by PID, then the process is replaced by a fresh `ferry agent`
with the same command line and environment (os.execv: same PID, so a supervisor sees no exit;
the broker connection closes with the old image and RabbitMQ gives the unacknowledged tasks
back: they resume from the agent's journal, as after a kill -9 of the agent).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger(__name__)

WATCH = 30.0  # seconds between an agent's pings of its own worker
ANSWER = 10.0  # seconds the worker has to answer one
MISSES = 3  # pings in a row the worker misses, the broker answering, before a restart
CHILD_GRACE = 5.0  # seconds children get after SIGTERM before SIGKILL


@dataclass
class Misses:
    """Pure: consecutive pings the worker missed while the broker answered (a broker that does
    not answer is the broker's outage, which the worker rides out by itself: not counted)."""

    limit: int = MISSES
    count: int = 0

    def seen(self, broker_up: bool, answered: bool) -> bool:
        """Record one check; whether the worker is wedged now (`limit` misses in a row)."""
        self.count = self.count + 1 if broker_up and not answered else 0
        return self.count >= self.limit


def watch(app: Any, node: str, ready: threading.Event, stop: threading.Event) -> None:
    """Start the watch thread of the worker `node` once `ready` is set (the worker consumes);
    `stop` ends it (a shutdown: the worker stops answering on purpose)."""
    thread = threading.Thread(
        target=_run, args=(app, node, ready, stop), name="ferry-agent-watchdog", daemon=True
    )
    thread.start()


def _run(app: Any, node: str, ready: threading.Event, stop: threading.Event) -> None:
    ready.wait()
    log.info("watchdog: pinging worker %s every %.0f s", node, WATCH)
    misses = Misses()
    while not stop.wait(WATCH):
        up, answered = _ping(app, node)
        wedged = misses.seen(up, answered)
        if misses.count:
            log.warning("watchdog: the worker %s missed %d ping(s) in a row", node, misses.count)
        if wedged and not stop.is_set():
            log.error(
                "the worker %s answered none of %d pings in %.0f s while the broker answered "
                "(Celery's consumer is stuck after a broker connection loss): starting the agent "
                "again; its tasks come back from the broker and resume from their checkpoints",
                node, misses.count, misses.count * WATCH,
            )  # fmt: skip
            restart()


def _ping(app: Any, node: str) -> tuple[bool, bool]:
    """(the broker answered, the worker answered) one ping on a connection of its own."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=ANSWER)
            replies = app.control.ping(destination=[node], timeout=ANSWER, connection=conn)
    except Exception as exc:  # the broker restarting or unreachable: not the worker's fault
        log.info("watchdog: the broker did not answer: %s", exc)
        return False, False
    return True, any(node in reply for reply in replies or ())


def restart(
    execv: Callable[[str, list[str]], object] = os.execv,
    children: Callable[[], list[psutil.Process]] | None = None,
) -> None:
    """Stop this process's children (SIGTERM, then SIGKILL after CHILD_GRACE; psutil checks a
    PID still names the same process before each signal), then replace the process with the
    same interpreter and original command line (sys.orig_argv)."""
    found = (children or psutil.Process().children)()
    _signal(found, signal.SIGTERM)
    _, alive = psutil.wait_procs(found, timeout=CHILD_GRACE)
    _signal(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=CHILD_GRACE)
    logging.shutdown()
    execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _signal(processes: list[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(sig)
