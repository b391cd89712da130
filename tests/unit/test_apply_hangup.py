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


PIPE_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    from rich.console import Console
    from engine.cli.apply import _stop_on_signals

    class Walker:
        def stop(self):
            pass

    class Events:
        def emit(self, kind, **fields):
            pass

    stop = threading.Event()
    with _stop_on_signals(Walker(), stop, Events(), Console()):
        print("first line", flush=True)
        time.sleep(1.0)  # the reader reads it and goes away
        for n in range(2000):  # more than a pipe holds: the write meets the closed pipe
            print(f"line {n} " + "x" * 100)
            Console().print(f"step {n}")
        sys.stdout.flush()
    print("after the walk", flush=True)  # /dev/null by now
    with open(sys.argv[1], "w") as out:
        json.dump({"survived": True, "stopped": stop.is_set()}, out)
    """
)


def test_a_reader_that_goes_away_fails_no_step(tmp_path: Path) -> None:
    """Break-it 12c item 17: `ferry apply … | grep -m1 …` failed a cutover after the power-off
    with the error "1" when grep exited. The writes go to /dev/null from then on."""
    result = tmp_path / "result.json"
    child = subprocess.Popen(
        [sys.executable, "-c", PIPE_CHILD, str(result)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline() == b"first line\n"
    child.stdout.close()  # as grep -m1 does
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, err
    assert "Traceback" not in err, err
    assert json.loads(result.read_text()) == {"survived": True, "stopped": False}
