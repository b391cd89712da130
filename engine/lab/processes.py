"""Processes the lab starts: started in their own session, recorded by PID and start time,
stopped only by that PID (and its process group, which is theirs alone) — never by name.

A record whose PID now belongs to another process (different start time) counts as dead, so a
stale record can never make us signal someone else's process.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.errors import LabError
from engine.proc import live_processes, start_time


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: int  # clock ticks since boot, field 22 of /proc/<pid>/stat
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> ProcessRecord:
        return ProcessRecord(
            str(data["name"]), int(data["pid"]), int(data["start_time"]), str(data["log"])
        )


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process (same PID and start time) is alive and not a zombie."""
    if start_time(record.pid) != record.start_time:
        return False
    try:
        state = Path(f"/proc/{record.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def spawn(
    name: str,
    argv: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start `argv` detached (own session, stdin closed, output to `log`) and record it; as
    `user` when given (a server that refuses to run as root)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except OSError as exc:
            raise LabError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    started = start_time(proc.pid)
    if started is None:
        raise LabError(f"{name} exited at once; see {log}")
    return ProcessRecord(name, proc.pid, started, str(log))


def stop(record: ProcessRecord, timeout: float = 15.0) -> None:
    """SIGTERM the recorded process group, then SIGKILL after `timeout`; reap if it is our child."""
    stop_all([record], timeout)


def stop_all(records: list[ProcessRecord], timeout: float = 15.0) -> None:
    """Stop several recorded processes and everything in their groups (workers, helpers) at once:
    SIGTERM to all, SIGKILL to what is left at `timeout`, then wait until nothing remains."""
    groups = {r.pid for r in records if is_running(r)}
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    if not _wait_groups_gone(records, groups, timeout):
        for pgid in groups:
            _signal_group(pgid, signal.SIGKILL)
        if not _wait_groups_gone(records, groups, 10.0):
            left = _members(groups)
            raise LabError(f"processes {left} survived SIGKILL")


def _wait_groups_gone(records: list[ProcessRecord], groups: set[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for record in records:
            _reap(record.pid)
        if not _members(groups):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # spawn() made the process a session (and group) leader: its group holds only what it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_members(records: list[ProcessRecord]) -> list[int]:
    """PIDs of every live process in the running recorded processes' groups (workers included)."""
    return _members({r.pid for r in records if is_running(r)})


def _members(groups: set[int]) -> list[int]:
    """Live, non-zombie processes whose process group is one of `groups`."""
    return [p.pid for p in live_processes() if p.pgid in groups]


def resident_bytes(pids: list[int]) -> int:
    """Memory of `pids` (those still alive): the sum of proportional set sizes, so pages that
    forked workers share are counted once."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total
