"""Running the `ferry` command in the tests, pointed at the lab."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.lab.lab import Lab

ROOT = Path(__file__).parents[2]


UNTIL_TIMEOUT = 300.0  # seconds until_line waits for its line


def file_reader(spec_text: str) -> str:
    """A spec made from plans/demo.yaml read through the lab's snapshot files (datastore_path
    with lab_dir) instead of the https reader: for the tests whose VM keeps a snapshot of its
    own (Reporting Ünit 1), which the https reader refuses (its base extent is older)."""
    assert "  reader: https" in spec_text
    return re.sub(r"^  reader: https.*\n", "", spec_text, flags=re.M)


def ferry(lab: Lab, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ferry ARGS` from the repo root with the lab's environment (and `env`) set."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, **lab.env(), "COLUMNS": "200", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def ferry_background(lab: Lab, *args: str, **env: str) -> subprocess.Popen[str]:
    """`ferry ARGS` started in the background from the repo root with the lab's environment (and
    `env`), unbuffered, stdout and stderr piped, in a session of its own (as a terminal's job: a
    test signals its process group as Ctrl-C would)."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def until_line(proc: subprocess.Popen[str], text: str, then: Callable[[], object]) -> str:
    """Read a background ferry's stdout until a line holding `text`, then call `then()` (a
    signal, a fault): an observable event, never a sleep. Returns the lines read (all of them
    when the output ended first); AssertionError with them after UNTIL_TIMEOUT seconds.

    Reads the pipe's descriptor a byte at a time, past the text reader's buffer: a later
    `proc.communicate(timeout=...)` reads that descriptor too, and lines a buffered read had
    taken beyond the matched one were lost to it (seen in the agent drills)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen: list[str] = []
    line = bytearray()
    deadline = time.monotonic() + UNTIL_TIMEOUT
    while byte := os.read(fd, 1):
        line += byte
        if byte != b"\n":
            continue
        seen.append(line.decode(errors="replace"))
        line.clear()
        if text in seen[-1]:
            then()
            break
        assert time.monotonic() < deadline, "".join(seen)
    else:
        seen.append(line.decode(errors="replace"))
    return "".join(seen)
