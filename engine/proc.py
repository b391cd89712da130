"""Facts about processes from /proc (Linux)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    pgid: int
    sid: int
    name: str
    ppid: int = 0  # the parent's PID
    started: int = 0  # start time in clock ticks since boot: a PID is reused with another


def live_processes() -> list[ProcInfo]:
    """Every live, non-zombie process on this machine."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            pid, parent, group, session = int(entry.name), *(int(f) for f in fields[1:4])
            out.append(ProcInfo(pid, group, session, name, parent, int(fields[19])))
    return out
