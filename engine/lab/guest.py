"""A tiny real Debian guest for the lab's conversion tier: debootstrap (minbase, bookworm) with a
kernel, initramfs-tools (MODULES=list, so the in-guest initramfs rebuild under TCG stays short),
grub, systemd, udev and ifupdown; trimmed, made into a raw MBR disk with virt-make-fs, grub
installed with guestfish. About 3 minutes; the image is cached by a stamp of this recipe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from engine.errors import LabError, one_line

SUITE = "bookworm"
MIRROR = os.environ.get("FERRY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "grub-pc",
    "systemd-sysv",
    "udev",
    "ifupdown",
    "kmod",
)
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info", "var/cache/apt")
SIZE = "+256M"  # free space left in the filesystem for the conversion
GUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}


def recipe_stamp() -> str:
    recipe = "\n".join([SUITE, *PACKAGES, *TRIM, SIZE, Path(__file__).read_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry" / "lab"


def tiny_debian(cache: Path | None = None) -> Path:
    """The cached guest image, built first when missing or when the recipe changed; beside it
    the file list of its initramfs (`initramfs_listing`), written before the image."""
    cache = cache or default_cache()
    image = cache / f"tiny-debian-{recipe_stamp()}.img"
    if image.exists() and initramfs_listing(image).exists():
        return image
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("tiny-debian-*"):
        if old.is_file():
            old.unlink()
    with tempfile.TemporaryDirectory(prefix="ferry-guest-", dir=cache) as tmp:
        partial = Path(tmp) / "disk.img"
        listing = build(Path(tmp) / "root", partial)
        initramfs_listing(image).write_text(listing)
        partial.rename(image)
    return image


def initramfs_listing(image: Path) -> Path:
    """Where the file list (`lsinitramfs`) of the cached image's initramfs is kept: read from the
    root tree the image is made of, so a test learns what the guest's initramfs holds before
    any conversion without booting a libguestfs appliance (~30 s under TCG) to copy it out."""
    return image.with_suffix(".initramfs.txt")


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    done = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        tail = one_line("\n".join((done.stdout + done.stderr).strip().splitlines()[-15:]))
        raise LabError(f"building the tiny Debian guest: {what} failed: {tail}")
    print(f"  guest: {what} ({time.monotonic() - started:.0f} s)", flush=True)


def build(root: Path, image: Path) -> str:
    """Build the raw disk `image` from a debootstrap tree at `root`; the file list of the
    initramfs it boots with. Raises LabError when a step fails."""
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed: run scripts/setup")
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
        ],
        "debootstrap",
        {"DEBIAN_FRONTEND": "noninteractive"},
    )
    configure(root)
    _run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], "initramfs (MODULES=list)")
    listing = _listing(root)
    for part in TRIM:
        shutil.rmtree(root / part, ignore_errors=True)
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()
    _run(
        [
            "virt-make-fs",
            "--format=raw",
            "--type=ext4",
            "--partition=mbr",
            f"--size={SIZE}",
            "--label=root",
            str(root),
            str(image),
        ],
        "virt-make-fs",
        GUESTFS_ENV,
    )
    install_grub(image)
    return listing


def _listing(root: Path) -> str:
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if len(initrds) != 1:
        raise LabError(f"building the tiny Debian guest: expected one initramfs, found {initrds}")
    done = subprocess.run(
        ["lsinitramfs", str(initrds[0])], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise LabError(
            f"building the tiny Debian guest: lsinitramfs failed: {one_line(done.stderr)}"
        )
    return done.stdout


def configure(root: Path) -> None:
    """fstab by label, a hostname, DHCP on the first NIC, initramfs with listed modules only."""
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (root / "etc/hostname").write_text("tiny-debian\n")
    (root / "etc/network/interfaces").write_text(
        "auto lo\niface lo inet loopback\nallow-hotplug ens192\niface ens192 inet dhcp\n"
    )
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=list"))
    (root / "etc/initramfs-tools/modules").write_text("ext4\nsd_mod\nvmw_pvscsi\nata_piix\n")
    (root / "etc/default/grub").write_text(
        'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX_DEFAULT=""\n'
        'GRUB_CMDLINE_LINUX="console=ttyS0 root=LABEL=root"\nGRUB_DISABLE_OS_PROBER=true\n'
    )


def install_grub(image: Path) -> None:
    script = "\n".join(
        [
            f"add {image} format:raw",
            "run",
            "mount /dev/sda1 /",
            "command 'grub-install --target=i386-pc /dev/sda'",
            "command 'update-grub'",
            "",
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".gfs") as commands:
        commands.write(script)
        commands.flush()
        _run(["guestfish", "-f", commands.name], "grub via guestfish", GUESTFS_ENV)
