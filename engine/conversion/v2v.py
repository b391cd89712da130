"""Running virt-v2v-in-place on a VM's volumes as they appear on the conversion host.

The input is a libvirt domain XML that describes every disk of the VM (in the source's order,
on the bus the guest booted from) and every NIC with its source MAC, so virt-v2v keeps the
guest's MAC-based interface naming. virt-v2v's output goes to the VM's log file, never to the
terminal; a failure raises ConversionError with the log's last lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from xml.sax.saxutils import quoteattr

from engine.errors import ConversionError

TOOL = "virt-v2v-in-place"
DEFAULT_TIMEOUT = 7200.0
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


def convert(guest: Guest, log: Path, options: Options | None = None) -> float:
    """Convert the guest in place; returns the seconds it took. Output appended to `log`."""
    options = options or Options()
    if shutil.which(TOOL) is None:
        raise ConversionError(f"{TOOL} is not installed on the conversion host")
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if options.debug:
        env["LIBGUESTFS_DEBUG"] = "1"
        env["LIBGUESTFS_TRACE"] = "1"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ferry-v2v-") as tmp:
        xml = Path(tmp) / "domain.xml"
        xml.write_text(domain_xml(guest))
        argv = [TOOL, "-i", "libvirtxml", str(xml)]
        argv += [a for script in options.firstboot for a in ("--firstboot", str(script))]
        argv += ["-v", "-x"] if options.debug else []
        with log.open("a") as out:
            out.write(f"\n== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n")
            out.flush()
            code = _run(argv, env, out, options.timeout)
    seconds = time.monotonic() - started
    if code != 0:
        raise ConversionError(
            f"{TOOL} failed for {guest.name} (exit {code}) after {seconds:.0f} s: "
            f"{_last_error(log)} (log: {log})"
        )
    return seconds


def _run(argv: list[str], env: dict[str, str], out: IO[str], timeout: float) -> int:
    proc = subprocess.Popen(
        argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        return int(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ConversionError(f"{TOOL} did not finish within {timeout:.0f} s") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _last_error(log: Path) -> str:
    """The last line virt-v2v printed that says what went wrong."""
    with log.open(errors="replace") as lines:
        tail = deque((line.strip() for line in lines if line.strip()), maxlen=40)
    for marker in (": error:", "error"):
        for line in reversed(tail):
            if marker in line.lower():
                return line
    return tail[-1] if tail else "no output"
