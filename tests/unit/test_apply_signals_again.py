"""Stop signals after the first (break-it 12d item 3): systemd-logind ending a session sends
SIGTERM and at once SIGHUP, a dropped SSH session SIGHUP twice; the second signal ended ferry
with `os._exit` while it was putting back the source it had powered off: exit 130, nothing on
stderr, production off, ferry's snapshot left on it. The rule (`_stop_on_signals`): SIGHUP
never ends ferry; a second SIGINT/SIGTERM ends it at once only when no source ferry powered
off is waiting to be put back (the copy phase: Ctrl-C twice stops at once, as promised), else
it takes a third, and ending at once says on stderr what it leaves. `_stop_on_signals` is run
for real in a child process that sends itself the signals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OFF = "vm.web01: source powered off by ferry at 2026-11-30 17:03:33 UTC, no server yet"
SNAPSHOT = "vm.web01: ferry's snapshot snapshot-73 left on the source"

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    from rich.console import Console
    from engine.cli.apply import _stop_on_signals

    sent, off, out = sys.argv[1].split(","), json.loads(sys.argv[2]), sys.argv[3]
    snapshots = sys.argv[4:]

    class Walker:
        def stop(self):
            pass

    class Events:
        lock = threading.Lock()
        def emit(self, kind, **fields):
            with open(out + ".events", "a") as f:
                f.write(json.dumps([kind, fields]) + "\\n")

    def unsettled():
        return off, snapshots

    stop = threading.Event()
    with _stop_on_signals(Walker(), stop, Events(), Console(file=sys.stdout), unsettled):
        for name in sent:
            os.kill(os.getpid(), getattr(signal, name))  # handled before the next line
        off.clear()  # put back (settle_sources)
    with open(out, "w") as f:
        json.dump({"stop": stop.is_set()}, f)
    """
)


def run(tmp_path: Path, signals: str, off: list[str]) -> tuple[int, str, Path]:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, signals, json.dumps(off), str(out), SNAPSHOT],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, out


@pytest.mark.parametrize(
    "signals",
    ["SIGTERM,SIGHUP", "SIGHUP,SIGHUP", "SIGHUP,SIGHUP,SIGHUP,SIGHUP", "SIGINT,SIGINT"],
    ids=["logind-term-hup", "ssh-drop-hup-hup", "hups-only", "ctrl-c-twice"],
)
def test_a_second_signal_lets_ferry_put_the_source_back(tmp_path: Path, signals: str) -> None:
    rc, err, out = run(tmp_path, signals, [OFF])
    assert rc == 0, (rc, err)
    assert err == ""
    assert json.loads(out.read_text()) == {"stop": True}


def test_a_third_ctrl_c_ends_ferry_and_says_what_is_left(tmp_path: Path) -> None:
    rc, err, out = run(tmp_path, "SIGINT,SIGINT,SIGINT", [OFF])
    assert rc == 130
    assert not out.exists()
    assert err == (
        f"stopped at once (SIGINT again): {OFF}; {SNAPSHOT}; the next apply resumes from the "
        "last checkpoints\n"
    )
    events = [json.loads(line) for line in Path(f"{out}.events").read_text().splitlines()]
    assert events[-1] == ["stopped_at_once", {"signal": "SIGINT", "left": [OFF, SNAPSHOT]}]


def test_ctrl_c_twice_in_the_copy_phase_ends_ferry_at_once(tmp_path: Path) -> None:
    rc, err, out = run(tmp_path, "SIGINT,SIGTERM", [])
    assert rc == 130
    assert not out.exists()
    assert err.startswith(f"stopped at once (SIGTERM again): {SNAPSHOT}; "), err
