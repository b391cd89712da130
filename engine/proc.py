"""Facts about processes from /proc (Linux), and the environment ferry's child processes get."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# environment variables that hold secrets whatever the spec says (OpenStack's password and
# application credential secret, ferry's own defaults for the vCenter and broker passwords and
# the state's DSN); the spec's own *_env names are added as they are read (secret_env)
SECRET_ENV = {
    "OS_PASSWORD",
    "OS_APPLICATION_CREDENTIAL_SECRET",
    "OS_CLIENT_SECRET",
    "FERRY_VCENTER_PASSWORD",
    "FERRY_BROKER_PASSWORD",
    "FERRY_STATE_DSN",
    "PGPASSWORD",
}


def secret_env(name: str) -> None:
    """Ferry read a secret (a password, a DSN) from the environment variable `name`: no child
    process it starts gets that variable (child_env)."""
    SECRET_ENV.add(name)


def child_env() -> dict[str, str]:
    """The environment for a process ferry starts (nbdkit, virt-v2v, qemu-img, ...): ferry's own
    without the variables that hold secrets (break-it 15c F-B: the vCenter password of
    `password_env` was in the environment of every nbdkit, readable in /proc/PID/environ by
    the same user and kept in core dumps)."""
    return {k: v for k, v in os.environ.items() if k not in SECRET_ENV}


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
