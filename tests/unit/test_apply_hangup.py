"""A closed terminal stops an apply as Ctrl-C does (break-it 12c item 16: an SSH session dropped
mid-cutover killed `ferry apply` with SIGHUP's default action, like kill -9, and the source
ferry had powered off stayed off). `_stop_on_signals` is run for real in a child process that
sends itself SIGHUP: the stop is set, the walker stopped, the `stopping` event says SIGHUP, the
process lives on, and what it prints from then on goes to /dev/null, not to the dead terminal
(a pipe here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    from rich.console import Console
    from engine.cli.apply import _stop_on_signals

    class Walker:
        stopped = False
        def stop(self):
            self.stopped = True

    class Events:
        def __init__(self):
            self.seen = []
        def emit(self, kind, **fields):
            self.seen.append([kind, fields])

    stop, walker, events = threading.Event(), Walker(), Events()
    print("before the hangup", flush=True)
    with _stop_on_signals(walker, stop, events, Console(file=sys.stdout)):
        os.kill(os.getpid(), signal.SIGHUP)
        print("after the hangup", flush=True)
        os.write(2, b"stderr after the hangup\\n")
    result = {"stop": stop.is_set(), "walker": walker.stopped, "events": events.seen}
    with open(sys.argv[1], "w") as out:
        json.dump(result, out)
    """
)


def test_a_hangup_stops_the_apply_and_mutes_the_dead_terminal(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(result)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout == "before the hangup\n"
    assert done.stderr == ""
    found = json.loads(result.read_text())
    assert found["stop"] and found["walker"]
    assert found["events"] == [["stopping", {"signal": "SIGHUP"}]]
