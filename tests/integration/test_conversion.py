"""The slow tier: a tiny real Debian guest (built once and cached) behind the lab VM build-old is
cut over with a real virt-v2v-in-place conversion twice: with output: image (issue 16), then with
output: volume. In image mode (its own state and work_dir, no conversion host) the apply is
stopped with Ctrl-C while the conversion changes the files (virt-v2v ends at once, the files
stay marked converted); the next one copies them again in full, converts them, uploads them to
Glance and boots the server from the volume made from the image: that volume holds the converted
file's bytes (sha512) and boots to a login prompt on virtio-blk (qemu, TCG), and a re-plan is a
no-op. In volume mode (a first-boot script) the apply is killed -9 while the conversion changes
the guest; the next one reverts the volumes to their protection snapshots before its final sync
(verify then holds) and converts again: the server boots from the volumes at the content epoch
that conversion recorded; the converted volume has virtio drivers in its initramfs, the script,
grub in its boot sector, and boots to a login prompt; each server is ACTIVE with the source
MACs. Image mode's boot runs beside volume mode's applies (2 cores: qemu on one, virt-v2v on the
other)."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine.lab.estate import find_vm
from engine.lab.guest import initramfs_listing
from engine.lab.lab import Lab
from engine.providers.openstack import images
from tests.conftest import cloud_objects, remove_new_objects
from tests.integration.cli import ROOT, ferry
from tests.integration.test_cutover import records, spec_with, volume_file
from tests.integration.test_image_mode import image_spec

pytestmark = pytest.mark.lab


def copy_out(image: Path, directories: list[str], work: Path) -> None:
    """Copy `directories` out of the guest disk `image` into `work`, in one libguestfs launch
    (each costs ~30 s under TCG)."""
    env = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    work.mkdir()
    subprocess.run(
        ["virt-copy-out", "-a", str(image), *directories, str(work)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )


def boots_to_login(image: Path, timeout: float = 420.0) -> str:
    """Boot the converted disk on virtio-blk under TCG (changes discarded: -snapshot) and read
    its serial console until the login prompt; the console text."""
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "512", "-display", "none",
         "-snapshot", "-drive", f"file={image},format=raw,if=virtio",
         "-nic", "user,model=virtio-net-pci,restrict=on", "-serial", "stdio", "-monitor", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    console = b""
    deadline = time.monotonic() + timeout
    try:
        while b"login:" not in console and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                console += os.read(proc.stdout.fileno(), 65536)
    finally:
        proc.kill()  # the qemu this test started, by its handle
        proc.wait()
    return console.decode(errors="replace")


def initramfs_modules(work: Path) -> str:
    """The file list of the guest's initramfs copied out into `work` (not virt-v2v's .pre-v2v
    backup)."""
    (initrd,) = [p for p in (work / "boot").glob("initrd.img-*") if p.suffix != ".pre-v2v"]
    listed = subprocess.run(
        ["lsinitramfs", str(initrd)], check=True, capture_output=True, text=True
    )
    return listed.stdout


def converters() -> list[int]:
    """PIDs of running virt-v2v-in-place processes."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and any(a.endswith(b"virt-v2v-in-place") for a in argv):
            found.append(int(proc.name))
    return found


def converting(lab: Lab, spec: Path, state: Path) -> subprocess.Popen[str]:
    """An apply started and waited for until virt-v2v-in-place has been changing the guest for
    5 s (its log says so for the nth time, n = this apply's conversion)."""
    log = state.parent / "logs" / "build-old.log"
    seen = log.read_text(errors="replace").count("to run on KVM") if log.exists() else 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "apply", str(spec), "--target", "vm.build-old",
         "--auto-approve", "--state", str(state)],
        cwd=ROOT, env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # "converting with", "converting its files with" (output: image)
        if "with virt-v2v-in-place (log" in line:
            break
    deadline = time.monotonic() + 300
    while log.read_text(errors="replace").count("to run on KVM") == seen:  # changing the guest
        assert time.monotonic() < deadline and proc.poll() is None, "the conversion never began"
        time.sleep(0.5)
    time.sleep(5)
    assert proc.poll() is None, "the conversion ended before the signal"
    assert converters(), "virt-v2v-in-place runs"
    return proc


def no_converters_within(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while converters() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert converters() == [], "virt-v2v-in-place outlived the apply"


def stop_mid_conversion(lab: Lab, spec: Path, state: Path) -> None:
    """output: image: Ctrl-C (SIGINT) mid conversion: the apply ends virt-v2v-in-place within
    seconds instead of waiting out the conversion and exits 130, naming the step; the files stay
    marked converted (the next apply copies them again in full and converts again)."""
    proc = converting(lab, spec, state)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group gets it
    began = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert time.monotonic() - began < 60, f"stopping took {time.monotonic() - began:.0f} s"
    no_converters_within(5)
    assert "stopped: vm.build-old.conversion" in out, out
    found = records(state)
    assert found["vm.build-old.disk[2000]"]["converted_file"], "the file holds conversion writes"
    assert "vm.build-old.image[2000]" not in found and "vm.build-old.server" not in found


def kill_mid_conversion(lab: Lab, spec: Path, state: Path) -> None:
    """kill -9 the apply 5 s after virt-v2v-in-place began changing the guest: the conversion
    dies with it (nothing keeps writing the volume), the record stays in progress with its
    protection snapshots."""
    proc = converting(lab, spec, state)
    proc.kill()
    proc.wait()
    no_converters_within(15)
    conversion = records(state)["vm.build-old.conversion"]
    assert conversion["protection"], "the protection snapshots are recorded"


@pytest.mark.guest_image
@pytest.mark.timeout(1800)  # the guest's build (~3 min cold), four conversions (TCG), two boots
def test_a_real_debian_guest_is_converted_and_boots_as_a_server(
    lab: Lab, si: Any, tmp_path: Path, new_cloud_objects: None, guest_image: Path
) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    image = guest_image
    data = lab.install_guest("build-old", 2000, image)
    assert data > 100 * 1024**2
    before = initramfs_listing(image).read_text()  # read from the tree the image was made of
    assert (
        "vmw_pvscsi" in before and "virtio_blk" not in before
    )  # MODULES=list: only what the VMware guest needed
    conn = lab.openstack("ferry-lab")
    objects = cloud_objects(conn)
    macs = {nic.mac for nic in vm.nics}
    with ThreadPoolExecutor(1) as pool:  # qemu beside virt-v2v: 2 cores
        booted = image_mode(lab, conn, tmp_path / "image", vm.instance_uuid, macs, pool)
        remove_new_objects(conn, objects)  # volume mode's ports need the source MACs
        volume_mode(lab, conn, tmp_path, macs)
        console = booted.result()
    assert "login:" in console, console[-2000:]  # image mode's volume


def volume_mode(lab: Lab, conn: Any, tmp_path: Path, macs: set[str]) -> None:
    """build-old cut over with output: volume and a first-boot script: kill -9 mid conversion,
    then the apply that reverts the volumes, converts again and boots."""
    state = tmp_path / "ferry.db"
    hello = tmp_path / "ferry-hello.sh"
    hello.write_text("#!/bin/sh\necho ferry-firstboot-marker > /etc/ferry-hello\n")
    spec = spec_with(tmp_path, "build-old", f"mode: cutover\nconversion: {{firstboot: [{hello}]}}")
    kill_mid_conversion(lab, spec, state)
    done = ferry(
        lab, "apply", str(spec), "--target", "vm.build-old", "--auto-approve", "--state", str(state)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "back to its protection snapshot (undoing the conversion)" in done.stdout
    found = records(state)
    assert found["vm.build-old.conversion"]["seconds"] > 0
    converted = found["vm.build-old.conversion"]["epochs"]["2000"]
    assert found["vm.build-old.disk[2000]"]["epoch"] == converted  # booted from what it converted
    server = conn.compute.get_server(found["vm.build-old.server"]["server_id"])
    assert server.status == "ACTIVE"
    assert {i.mac_addr for i in conn.compute.server_interfaces(server)} == macs
    log = (tmp_path / "logs" / "build-old.log").read_text()
    assert "Converting" in log and "Finishing off" in log
    volume_id = found["vm.build-old.disk[2000]"]["volume_id"]
    converted_and_boots(volume_file(lab, volume_id), tmp_path / "after")


def converted_and_boots(volume: Path, work: Path) -> None:
    """The converted volume (volume mode) has virtio drivers in its initramfs, the first-boot
    script, grub's boot sector, and boots to a login prompt on virtio-blk."""
    copy_out(volume, ["/boot", "/usr/lib/virt-sysprep"], work)
    after = initramfs_modules(work)
    assert "virtio_blk" in after and "virtio_net" in after
    sysprep = work / "virt-sysprep"
    scripts = [
        p for p in sysprep.rglob("*") if p.is_file() and b"ferry-firstboot-marker" in p.read_bytes()
    ]
    assert scripts, "the first-boot script is installed in the converted guest"
    with volume.open("rb") as disk:
        mbr = disk.read(512)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr  # grub's boot sector is in place
    console = boots_to_login(volume)
    assert "login:" in console, console[-2000:]


def image_mode(
    lab: Lab, conn: Any, folder: Path, uuid: str, macs: set[str], pool: ThreadPoolExecutor
) -> Future[str]:
    """build-old cut over with output: image (its own state and work_dir; verify: false: the
    volume's digest is checked against the converted file): Ctrl-C mid conversion, then the
    apply that finishes it; Glance's images deleted after. The boot of a copy of the server's
    volume, started in `pool` (it runs beside volume mode's applies): its console."""
    work, state = folder / "work", folder / "state.db"
    work.mkdir(parents=True)
    spec = image_spec(folder, work, mode="cutover\n    verify: false")
    try:
        stop_mid_conversion(lab, spec, state)
        volume = booted_from_image(lab, conn, spec, state, macs)
    finally:  # what Glance holds of it (new_cloud_objects deletes the rest)
        images.delete(conn, [str(i.id) for i in images.find_images(conn, uuid)])
    copy = folder / "image-mode.raw"  # the volume goes before volume mode's cutover
    subprocess.run(["cp", "--sparse=always", str(volume), str(copy)], check=True)
    return pool.submit(boots_to_login, copy)


def booted_from_image(lab: Lab, conn: Any, spec: Path, state: Path, macs: set[str]) -> Path:
    """The apply after the Ctrl-C copies the converted file again in full, converts, uploads
    and boots: the server's volume holds the converted file's bytes; the server is ACTIVE with
    the source MACs; a re-plan is a no-op. The volume's file."""
    done = ferry(
        lab, "apply", str(spec), "--target", "vm.build-old", "--auto-approve", "--state", str(state)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a conversion began on the file since its last sync" in " ".join(done.stdout.split())
    found = records(state)
    assert found["vm.build-old.conversion"]["seconds"] > 0
    path = Path(found["vm.build-old.disk[2000]"]["path"])
    volume_id = found["vm.build-old.volume[2000]"]["volume_id"]
    assert conn.image.get_image(found["vm.build-old.image[2000]"]["image_id"]).status == "active"
    volume = volume_file(lab, volume_id)
    with volume.open("rb") as f:  # Cinder made it from the qcow2 image: the file's bytes
        assert hashlib.sha512(f.read(path.stat().st_size)).hexdigest() == images.file_sha512(path)
    server = conn.compute.get_server(found["vm.build-old.server"]["server_id"])
    assert server.status == "ACTIVE"
    assert [a["id"] for a in server.attached_volumes] == [volume_id]
    assert {i.mac_addr for i in conn.compute.server_interfaces(server)} == macs
    again = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    return volume
