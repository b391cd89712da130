"""The slow tier: a tiny real Debian guest (built once and cached) behind the lab VM build-old is
cut over with a real virt-v2v-in-place conversion; the converted volume is checked for virtio
drivers in its initramfs and a boot loader, and the server is ACTIVE with the source MACs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.estate import find_vm
from engine.lab.guest import tiny_debian
from engine.lab.lab import Lab
from tests.integration.cli import ferry
from tests.integration.test_cutover import records, spec_with, volume_file

pytestmark = pytest.mark.lab


@pytest.fixture
def cleanup(lab: Lab) -> Iterator[None]:
    conn = lab.openstack("ferry-lab")
    servers, ports = {s.id for s in conn.compute.servers()}, {p.id for p in conn.network.ports()}
    vols = {v.id for v in conn.block_storage.volumes()}
    yield
    for server in conn.compute.servers():
        if server.id not in servers:
            conn.compute.delete_server(server.id)
            conn.compute.wait_for_delete(server, wait=120)
    for port in conn.network.ports():
        if port.id not in ports:
            conn.network.delete_port(port.id)
    for volume in conn.block_storage.volumes():
        if volume.id not in vols:
            conn.block_storage.delete_volume(volume.id)
            conn.block_storage.wait_for_delete(volume, wait=120)


def initramfs_modules(image: Path, work: Path) -> str:
    """The file list of the guest's newest initramfs, read from the converted volume."""
    env = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
    work.mkdir()
    subprocess.run(
        ["virt-copy-out", "-a", str(image), "/boot", str(work)],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )
    (initrd,) = [p for p in (work / "boot").glob("initrd.img-*") if p.suffix != ".pre-v2v"]
    listed = subprocess.run(
        ["lsinitramfs", str(initrd)], check=True, capture_output=True, text=True
    )
    return listed.stdout


def test_a_real_debian_guest_is_converted_and_boots_as_a_server(
    lab: Lab, si: Any, tmp_path: Path, cleanup: None
) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    image = tiny_debian()
    data = lab.install_guest("build-old", 2000, image)
    assert data > 100 * 1024**2
    before = initramfs_modules(image, tmp_path / "before")
    assert "virtio_blk" not in before  # MODULES=list: only what the VMware guest needed

    state = tmp_path / "ferry.db"
    spec = spec_with(tmp_path, "build-old", "mode: cutover")
    done = ferry(
        lab, "apply", str(spec), "--target", "vm.build-old", "--auto-approve", "--state", str(state)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = records(state)
    assert found["vm.build-old.conversion"]["seconds"] > 0
    volume = volume_file(lab, found["vm.build-old.disk[2000]"]["volume_id"])

    after = initramfs_modules(volume, tmp_path / "after")
    assert "virtio_blk" in after and "virtio_net" in after
    with volume.open("rb") as disk:
        mbr = disk.read(512)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr  # grub's boot sector is in place

    conn = lab.openstack("ferry-lab")
    server = conn.compute.get_server(found["vm.build-old.server"]["server_id"])
    assert server.status == "ACTIVE"
    macs = {i.mac_addr for i in conn.compute.server_interfaces(server)}
    assert macs == {nic.mac for nic in vm.nics}
    log = (tmp_path / "logs" / "build-old.log").read_text()
    assert "Converting" in log and "Finishing off" in log
