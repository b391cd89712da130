"""Running virt-v2v-in-place on a VM's volumes as they appear on the conversion host.

The input is a libvirt domain XML that describes every disk of the VM (in the source's order,
on the bus the guest booted from) and every NIC with its source MAC, so virt-v2v keeps the
guest's MAC-based interface naming. virt-v2v's output goes to the VM's log file, never to the
terminal; a failure raises ConversionError with the log's last lines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from xml.sax.saxutils import quoteattr

from engine.errors import ConversionError, StoppedError
from engine.proc import child_env

TOOL = "virt-v2v-in-place"
CUSTOMIZE = "virt-customize"
DEFAULT_TIMEOUT = 7200.0
STOP_GRACE = 10.0  # seconds a stopped tool gets after SIGTERM before SIGKILL
BUSES = ("virtio", "scsi", "sata", "ide")


def bus_of(controller_key: int) -> str:
    """The bus of a vSphere disk controller, by its key range (IDE 200+, SCSI 1000+, SATA 15000+,
    NVMe 31000+). NVMe guests boot like SCSI ones for virt-v2v's purposes."""
    if 200 <= controller_key < 1000:
        return "ide"
    if 15000 <= controller_key < 16000:
        return "sata"
    return "scsi"


@dataclass(frozen=True)
class GuestDisk:
    path: Path
    bus: str


@dataclass(frozen=True)
class Guest:
    name: str
    disks: tuple[GuestDisk, ...]
    macs: tuple[str, ...]
    firmware: str | None = None  # "efi" or "bios"
    memory_mb: int = 1024
    vcpus: int = 1


def guest_of(name: str, paths: list[Path], conversion: dict[str, Any]) -> Guest:
    """The guest a conversion change describes (its `after`: disks with controller_key, macs,
    firmware, memory_mb, vcpus), its disks at `paths` in the change's disk order (a conversion
    host's devices or image mode's local files). Raises ValueError when the counts differ."""
    return Guest(
        name=name,
        disks=tuple(
            GuestDisk(path, bus_of(int(d["controller_key"])))
            for path, d in zip(paths, conversion["disks"], strict=True)
        ),
        macs=tuple(conversion.get("macs") or ()),
        firmware=conversion.get("firmware"),
        memory_mb=int(conversion.get("memory_mb") or 1024),
        vcpus=int(conversion.get("vcpus") or 1),
    )


VIRTIO_WIN_PLACES = (Path("/usr/share/virtio-win"), Path("/usr/share/virtio-win/virtio-win.iso"))
VIRTIO_WIN_MINIMUM = (0, 1, 240)


def virtio_win(env: dict[str, str] | None = None) -> tuple[Path, tuple[int, ...] | None] | None:
    """Where virt-v2v will find the Windows virtio drivers (VIRTIO_WIN, else the usual place)
    and their version when the name tells it (virtio-win-0.1.240.iso); None when absent."""
    given = (env if env is not None else os.environ).get("VIRTIO_WIN")
    for place in [Path(given)] if given else list(VIRTIO_WIN_PLACES):
        if place.exists():
            found = place.resolve()
            match = re.search(r"virtio-win-(\d+(?:\.\d+)+)", str(found))
            version = tuple(int(p) for p in match.group(1).split(".")) if match else None
            return found, version
    return None


def check_windows_drivers(env: dict[str, str] | None = None) -> None:
    """A Windows conversion needs virtio-win ≥ 0.1.240 on the conversion host."""
    found = virtio_win(env)
    if found is None:
        raise ConversionError(
            "converting a Windows guest needs virtio-win on the conversion host: install it "
            "(/usr/share/virtio-win) or point VIRTIO_WIN at virtio-win.iso"
        )
    path, version = found
    if version is not None and version < VIRTIO_WIN_MINIMUM:
        wanted = ".".join(map(str, VIRTIO_WIN_MINIMUM))
        raise ConversionError(
            f"virtio-win at {path} is {'.'.join(map(str, version))}: "
            f"Windows conversions need {wanted} or newer"
        )


def _target(bus: str, index: int) -> str:
    prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
    return prefix + "abcdefghijklmnopqrstuvwxyz"[index]


def domain_xml(guest: Guest) -> str:
    """The libvirt XML virt-v2v reads as its input (pure)."""
    if len(guest.disks) > 26:
        raise ConversionError(f"{guest.name}: more than 26 disks")
    counters: dict[str, int] = {}
    disks = []
    for disk in guest.disks:
        index = counters.get(disk.bus, 0)
        counters[disk.bus] = index + 1
        kind, attr = ("block", "dev") if disk.path.is_block_device() else ("file", "file")
        disks.append(
            f"    <disk type='{kind}' device='disk'>\n"
            "      <driver name='qemu' type='raw'/>\n"
            f"      <source {attr}={quoteattr(str(disk.path))}/>\n"
            f"      <target dev='{_target(disk.bus, index)}' bus='{disk.bus}'/>\n"
            "    </disk>"
        )
    nics = [
        f"    <interface type='network'>\n      <mac address={quoteattr(mac)}/>\n"
        "      <source network='default'/>\n    </interface>"
        for mac in guest.macs
    ]
    loader = " firmware='efi'" if guest.firmware == "efi" else ""
    return "\n".join(
        [
            "<domain type='kvm'>",
            f"  <name>{_escape(guest.name)}</name>",
            f"  <memory unit='MiB'>{guest.memory_mb}</memory>",
            f"  <vcpu>{guest.vcpus}</vcpu>",
            f"  <os{loader}><type arch='x86_64'>hvm</type></os>",
            "  <devices>",
            *disks,
            *nics,
            "  </devices>",
            "</domain>",
            "",
        ]
    )


def _escape(text: str) -> str:
    return quoteattr(text)[1:-1]


@dataclass(frozen=True)
class Options:
    firstboot: tuple[Path, ...] = ()
    debug: bool = False
    timeout: float = DEFAULT_TIMEOUT
    cancel: threading.Event | None = None  # set (Ctrl-C): the tool is stopped, StoppedError


def convert(guest: Guest, log: Path, options: Options | None = None) -> float:
    """Convert the guest in place; returns the seconds it took. Output appended to `log`."""
    options = options or Options()
    for tool in (TOOL, *([CUSTOMIZE] if options.firstboot else [])):
        if shutil.which(tool) is None:
            raise ConversionError(f"{tool} is not installed on the conversion host")
    env = child_env()  # no secret of ferry's in the tool's environment
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if options.debug:
        env["LIBGUESTFS_DEBUG"] = "1"
        env["LIBGUESTFS_TRACE"] = "1"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    debug = ["-v", "-x"] if options.debug else []
    with tempfile.TemporaryDirectory(prefix="ferry-v2v-") as tmp:
        xml = Path(tmp) / "domain.xml"
        xml.write_text(domain_xml(guest))
        _step(
            [TOOL, "-i", "libvirtxml", str(xml), *debug],
            guest,
            env,
            log,
            options=options,
            started=started,
        )
    if options.firstboot:  # virt-v2v-in-place has no --firstboot: virt-customize adds them
        argv = [CUSTOMIZE, "--format", "raw"]
        argv += [a for disk in guest.disks for a in ("-a", str(disk.path))]
        argv += [a for script in options.firstboot for a in ("--firstboot", str(script))]
        _step([*argv, *debug], guest, env, log, options=options, started=started)
    return time.monotonic() - started


def _step(
    argv: list[str],
    guest: Guest,
    env: dict[str, str],
    log: Path,
    *,
    options: Options,
    started: float,
) -> None:
    with log.open("a") as out:
        out.write(f"\n== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n")
        out.flush()
        code = _run(argv, env, out, options.timeout, options.cancel)
    if code != 0:
        raise ConversionError(
            f"{Path(argv[0]).name} failed for {guest.name} (exit {code}) after "
            f"{time.monotonic() - started:.0f} s: {_last_error(log)} (log: {log})"
        )


DIE_WITH_PARENT = (
    ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
)  # util-linux: the child gets SIGKILL when ferry's thread that started it dies


def _run(
    argv: list[str],
    env: dict[str, str],
    out: IO[str],
    timeout: float,
    cancel: threading.Event | None = None,
) -> int:
    """The tool's exit code. Killed with ferry (kill -9 included): a conversion left running
    would keep writing the volumes that the next apply reverts and converts again. In a session
    of its own, so a terminal's Ctrl-C reaches ferry only, which stops it through `cancel`."""
    proc = subprocess.Popen(
        [*DIE_WITH_PARENT, *argv],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return int(proc.wait(timeout=min(0.25, max(0.0, deadline - time.monotonic()))))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise ConversionError(f"{TOOL} did not finish within {timeout:.0f} s") from None
                if cancel is not None and cancel.is_set():
                    _terminate(proc)
                    raise StoppedError(f"{Path(argv[0]).name} stopped") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (virt-v2v cleans up its appliance), SIGKILL after STOP_GRACE seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _last_error(log: Path) -> str:
    """The last line virt-v2v printed that says what went wrong."""
    with log.open(errors="replace") as lines:
        tail = deque((line.strip() for line in lines if line.strip()), maxlen=40)
    for marker in (": error:", "error"):
        for line in reversed(tail):
            if marker in line.lower():
                return line
    return tail[-1] if tail else "no output"
