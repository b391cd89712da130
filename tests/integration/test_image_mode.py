"""destination.output: image on the lab (issue 16): no conversion host; the powered-off
build-old's 2 GiB disk is copied by ferry's copy engine into <work_dir>/<lineage>/<instance
uuid>/disk-2000.raw (sparse, verified by sha256 against the source), recorded as a disk_file,
uploaded to Glance, a volume made from the image, the server booted from it; a re-plan is a
no-op; a lost state adopts it only with --adopt-lineage, and the first state's --destroy then
forgets what that state runs and removes its own file. One apply for all of it (CI time). With
image: {boot: image}, web01 boots from its boot disk's image and only its data disk becomes a
volume."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.dataplane.copy import file_digest
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.openstack import images
from engine.providers.vsphere.power import power_on
from engine.statestore.sqlite import SqliteStateStore
from tests.integration.cli import ROOT, ferry
from tests.integration.converge import volume_file
from tests.integration.test_cutover import apply, vm_ref

pytestmark = pytest.mark.lab


def image_spec(tmp_path: Path, work: Path, mode: str = "replicate", image: str = "") -> Path:
    """plans/demo.yaml with output: image into `work`, no conversion host; build-old in `mode`."""
    text = (ROOT / "plans" / "demo.yaml").read_text()
    text = re.sub(r"\nconversion_hosts:\n(  .*\n)+", "\n", text)
    text = text.replace(
        "  region: RegionOne\n",
        f"  region: RegionOne\n  output: image\n  work_dir: {work}\n{image}",
    )
    text = text.replace("  - name: build-old ", f"  - name: build-old\n    mode: {mode} ")
    spec = tmp_path / "image.yaml"
    spec.write_text(text)
    return spec


def lab_volumes(lab: Lab) -> str:
    """The lab cloud's volumes' metadata (output: image makes none for a replicate sync)."""
    conn = lab.openstack("ferry-lab")
    return json.dumps([dict(v.metadata or {}) for v in conn.block_storage.volumes(details=True)])


def records(state: Path) -> dict[str, Any]:
    """The state's records (kind, status, attributes) by address."""
    store = SqliteStateStore(state)
    try:
        return dict(store.read().resources)
    finally:
        store.close()


def test_a_cutover_uploads_the_files_and_boots_from_volumes_made_from_them(
    lab: Lab, tmp_path: Path, new_cloud_objects: None
) -> None:
    """build-old cut over in image mode (convert: false: the virt-v2v run on files is the same
    call as on volumes, 4-5 min under TCG, not repeated here): its file uploaded to Glance as
    qcow2 (the default: the holes are not sent) with Nova's properties, a volume made from the
    image holding the file's bytes (Cinder converts it to raw), the server ACTIVE on it; a
    re-plan is a no-op; the image and the volume carry the state's lineage, so a lost state adopts
    them only with --adopt-lineage, and then the first state's --destroy forgets them and the
    server running on them (it deletes its file)."""
    work, state = tmp_path / "work", tmp_path / "state.db"
    work.mkdir()
    spec = image_spec(tmp_path, work, mode="cutover\n    convert: false")
    vm = find_vm("build-old")
    assert vm is not None
    conn = lab.openstack("ferry-lab")
    try:
        cut_over(lab, conn, spec, state, vm.instance_uuid, tmp_path)
    finally:  # what a failure left in Glance (new_cloud_objects handles the rest)
        images.delete(conn, [str(i.id) for i in images.find_images(conn, vm.instance_uuid)])


def cut_over(lab: Lab, conn: Any, spec: Path, state: Path, uuid: str, tmp_path: Path) -> None:
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on local disk in {tmp_path / 'work'}" in done.stdout  # the plan shows work_dir
    found = records(state)
    disk = found["vm.build-old.disk[2000]"]
    assert (disk.kind, disk.status.value) == ("disk_file", "ready")
    path = Path(disk.attributes["path"])
    # under the state's lineage: a second state sharing work_dir never writes or deletes it
    assert path.parent.parent == tmp_path / "work" / lineage_of(state)
    assert path.name == "disk-2000.raw"
    assert path.stat().st_size == 2 * 2**30
    assert path.stat().st_blocks * 512 < path.stat().st_size  # sparse: holes not written
    assert disk.attributes["last_sync"]["sha256"]  # verified against the source (spec verify)
    assert not [m for m in json.loads(lab_volumes(lab)) if m.get("ferry_vm") == uuid]
    image_id = found["vm.build-old.image[2000]"].attributes["image_id"]
    volume_id = found["vm.build-old.volume[2000]"].attributes["volume_id"]
    image = conn.image.get_image(image_id)
    assert (image.status, image.os_type) == ("active", "linux")
    # convert: false: the guest keeps its vSphere drivers, so the source's PVSCSI and VMXNET3
    assert (image.hw_disk_bus, image.hw_scsi_model, image.hw_vif_model) == (
        "scsi",
        "vmpvscsi",
        "vmxnet3",
    )
    assert image.properties["hw_firmware_type"] == "bios"
    assert image.disk_format == "qcow2"  # the default: the file's holes are not sent
    assert image.size < path.stat().st_blocks * 512 + 16 * 2**20  # its data, not its 2 GiB
    with volume_file(lab, volume_id).open("rb") as f:  # Cinder converted it: the file's bytes
        assert hashlib.sha512(f.read(path.stat().st_size)).hexdigest() == images.file_sha512(path)
    server = conn.compute.get_server(found["vm.build-old.server"].attributes["server_id"])
    assert server.status == "ACTIVE"
    assert [a["id"] for a in server.attached_volumes] == [volume_id]

    again = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    lineage = lineage_of(state)  # whose image and volume: this state's, as every ferry volume
    assert (image.properties["ferry_state"], metadata_of(conn, volume_id)) == (lineage, lineage)
    labelled_by_its_state(lab, conn, spec, state, (image_id, volume_id), tmp_path / "fresh.db")
    properties_updated(lab, conn, spec, state, image_id, volume_id)
    lost = tmp_path / "lost.db"
    adopted_by_a_lost_state(lab, conn, spec, lost, (image_id, volume_id, uuid), lineage)

    saved = tmp_path / "destroy.plan"
    made = ferry(
        lab, "plan", str(spec), "--destroy", "--target", "vm.build-old", "--state", str(state),
        "--out", str(saved),
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    handed = f"is managed by ferry state {lineage_of(lost)} now: forgotten here, never deleted"
    assert f"image {image_id} {handed}" in " ".join(made.stdout.split())
    gone = ferry(lab, "apply", str(saved), "--auto-approve", "--state", str(state))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    # the lost state's now (it adopted them): the first state's --destroy leaves them, and
    # the server that runs on them; it deletes its own work_dir file
    assert [str(i.id) for i in images.find_images(conn, uuid)] == [image_id]
    assert metadata_of(conn, volume_id) == lineage_of(lost)
    assert conn.compute.get_server(server.id).status == "ACTIVE"
    assert not path.exists() and not path.parent.parent.exists()  # the state's folder too


def labelled_by_its_state(
    lab: Lab, conn: Any, spec: Path, state: Path, made: tuple[str, str], fresh: Path
) -> None:
    """The image and volume as an older ferry left them, without `ferry_state` (break-it 16c
    F1, high: a fresh state adopted them with the server, and its --destroy deleted it): a
    fresh state's plan adopts nothing (one error naming them), and their state's next apply
    labels them in place with its lineage (metadata only)."""
    image_id, volume_id = made
    images.set_properties(conn, image_id, {}, ["ferry_state"])
    conn.block_storage.delete_volume_metadata(volume_id, keys=["ferry_state"])
    refused = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(fresh),
        "--detailed-exitcode",
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = f"carry no ferry state lineage ({image_id}, {volume_id}: made by an older ferry)"
    assert said in " ".join(refused.stdout.split()), refused.stdout
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    for what, object_id in (("image", image_id), ("volume", volume_id)):
        assert f"{what} {object_id} labelled with this state's lineage" in done.stdout
    lineage = lineage_of(state)
    labels = (
        conn.image.get_image(image_id).properties.get("ferry_state"),
        metadata_of(conn, volume_id),
    )
    assert labels == (lineage, lineage)


def lineage_of(state: Path) -> str:
    store = SqliteStateStore(state)
    try:
        return store.read().lineage
    finally:
        store.close()


def metadata_of(conn: Any, volume_id: str) -> str:
    """The volume's `ferry_state`: the lineage of the state that manages it."""
    return str((conn.block_storage.get_volume(volume_id).metadata or {}).get("ferry_state"))


def adopted_by_a_lost_state(
    lab: Lab, conn: Any, spec: Path, lost: Path, made: tuple[str, str, str], lineage: str
) -> None:
    """A lost (or a second operator's) state adopts the cut-over VM as it runs: its server,
    the volume attached to it and the image that volume was made from, found by ferry's
    metadata; no upload, no second volume (break-it 16 F2: a duplicate volume, then a KeyError
    at every apply). They carry the first state's lineage (img16c item 1), so only with
    --adopt-lineage: without it the plan is blocked, nothing adopted; with it the apply stamps
    the lost state's lineage on the image and the volume, as volume mode's adoption does."""
    image_id, volume_id, uuid = made
    refused = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(lost),
        "--detailed-exitcode",
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    text = " ".join(refused.stdout.split())
    said = "found beside the server this plan would adopt are managed by another ferry state"
    # one error for the one cause, naming both (break-it 16d L3)
    assert f"image {image_id} and volume {volume_id} {said} (lineage {lineage}" in text, text
    done = apply(lab, spec, "vm.build-old", lost, "--adopt-lineage", lineage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"vm.build-old.volume[2000]: adopted volume {volume_id}" in done.stdout
    assert f"vm.build-old.image[2000]: adopted image {image_id}" in done.stdout
    adopter = lineage_of(lost)
    assert metadata_of(conn, volume_id) == adopter != lineage
    assert conn.image.get_image(image_id).properties["ferry_state"] == adopter
    found = records(lost)
    assert found["vm.build-old.volume[2000]"].attributes["volume_id"] == volume_id
    assert found["vm.build-old.server"].status.value == "ready"
    made_from = [
        v.id
        for v in conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get("ferry_image_vm") == uuid
    ]
    assert made_from == [volume_id]
    assert [str(i.id) for i in images.find_images(conn, uuid)] == [image_id]
    # its re-plan is a no-op (planner case image-adopted-rerun-no-changes: no plan here, CI
    # time): the disk is recorded cut over, without a file
    disk = found["vm.build-old.disk[2000]"].attributes
    assert disk["converted"] is True and "path" not in disk


def properties_updated(
    lab: Lab, conn: Any, spec: Path, state: Path, image_id: str, volume_id: str
) -> None:
    """An image and its boot volume made by an older ferry (its rule gave virtio to a guest not
    converted: no hw_scsi_model), and then someone changed the image in Glance by hand (os_type
    windows; hw_qemu_guest_agent added, not a key ferry owns): the plan reads Glance, so the
    image's update says it is drift and names the hand change, the volume's (Cinder as recorded)
    says the metadata changed; the apply sets both in Glance and Cinder and leaves
    hw_qemu_guest_agent alone; the next plan has no change. No copy, upload or boot again (the
    drift rides in this plan and apply: no apply of its own)."""
    old = {"hw_disk_bus": "virtio", "hw_vif_model": "virtio"}
    patch = [{"op": "replace", "path": f"/{k}", "value": v} for k, v in old.items()]
    by_hand = [
        {"op": "replace", "path": "/os_type", "value": "windows"},
        {"op": "add", "path": "/hw_qemu_guest_agent", "value": "yes"},
    ]  # in Glance only: the state still says os_type linux
    conn.image.patch(
        f"/images/{image_id}",
        json=[*patch, {"op": "remove", "path": "/hw_scsi_model"}, *by_hand],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )
    conn.block_storage.set_volume_image_metadata(volume_id, **old)
    conn.block_storage.delete_volume_image_metadata(volume_id, keys=["hw_scsi_model"])
    store = SqliteStateStore(state)
    try:
        record = store.read().resources["vm.build-old.image[2000]"]
        uploaded = {**record.attributes["properties"], **old}
        uploaded.pop("hw_scsi_model")
        store.write([replace(record, attributes={**record.attributes, "properties": uploaded})], [])
    finally:
        store.close()
    said = "hw_disk_bus: virtio → scsi, + hw_scsi_model=vmpvscsi, hw_vif_model: virtio → vmxnet3"
    planned = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert planned.returncode == 2, planned.stdout + planned.stderr
    text = " ".join(planned.stdout.split())
    assert (
        f"~ vm.build-old.image[2000] update drift: image {image_id}'s properties changed in "
        f"Glance (outside ferry), Glance's → the spec's: {said}, os_type: windows → linux"
    ) in text
    assert (
        f"~ vm.build-old.volume[2000] update the boot volume's image metadata changed: {said}"
        in text
    )
    assert "Plan: 0 to create, 2 to update, 0 to destroy" in text
    done = apply(lab, spec, "vm.build-old", state)
    assert done.returncode == 0, done.stdout + done.stderr
    image = conn.image.get(f"/images/{image_id}").json()
    metadata = conn.block_storage.get_volume(volume_id).volume_image_metadata
    for found in (image, metadata):
        assert (found["hw_disk_bus"], found["hw_scsi_model"], found["hw_vif_model"]) == (
            "scsi",
            "vmpvscsi",
            "vmxnet3",
        )
    assert (image["os_type"], image["hw_qemu_guest_agent"]) == ("linux", "yes")  # not ferry's
    again = ferry(
        lab, "plan", str(spec), "--target", "vm.build-old", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr


def test_boot_image_keeps_the_boot_disk_an_image_and_makes_volumes_of_the_data_disks(
    lab: Lab, si: Any, tmp_path: Path, new_cloud_objects: None
) -> None:
    """web01 (2 GiB boot disk, 1 GiB data disk) cut over with image: {boot: image}, convert:
    false, verify: false (the digests below check the bytes): the server boots from the boot
    disk's image on the hypervisor (imageRef = image[2000], m1.medium.disk20: flavor: auto
    picks the smallest root disk ≥ 2 GiB; the m1.* flavors have disk 0, refused by Nova's
    zero-disk policy), no volume is made for the boot disk, the data disk's volume attached
    holds the source's bytes; a re-plan is a no-op. (--destroy's deletes are the boot: volume
    test's above; here the cleanup deletes the images: 2 plans fewer, ~35 s on a loaded box.)"""
    work, state = tmp_path / "work", tmp_path / "state.db"
    work.mkdir()
    spec = image_spec(tmp_path, work, image="  image: {boot: image}\n")
    text = spec.read_text().replace(
        "  - name: web01\n",
        "  - name: web01\n    mode: cutover\n    convert: false\n    verify: false\n",
    )  # db01's named m1.large has no root disk for boot: image: an error in every plan
    spec.write_text(text.replace("{name: m1.large}", "{name: m1.large.disk40}"))
    vm = find_vm("web01")
    assert vm is not None
    conn = lab.openstack("ferry-lab")
    try:
        booted_from_image(lab, conn, spec, state, vm)
    finally:
        images.delete(conn, [str(i.id) for i in images.find_images(conn, vm.instance_uuid)])
        power_on(si, vm_ref(si, "web01"))


def booted_from_image(lab: Lab, conn: Any, spec: Path, state: Path, vm: Any) -> None:
    done = apply(lab, spec, "vm.web01", state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the server boots from this image on the hypervisor's local disk" in done.stdout
    found = records(state)
    assert "vm.web01.volume[2000]" not in found  # the boot disk stays an image
    image_id = found["vm.web01.image[2000]"].attributes["image_id"]
    volume_id = found["vm.web01.volume[2001]"].attributes["volume_id"]
    server = conn.compute.get_server(found["vm.web01.server"].attributes["server_id"])
    assert server.status == "ACTIVE"
    assert server.image["id"] == image_id  # booted from the image (imageRef, BDM image→local)
    image = conn.image.get_image(image_id)  # web01 is UEFI: Nova boots it on q35
    assert (image.properties["hw_firmware_type"], image.hw_machine_type) == ("uefi", "q35")
    assert server.flavor["original_name"] == "m1.medium.disk20"
    assert [a["id"] for a in server.attached_volumes] == [volume_id]  # the data disk only
    for key in (2000, 2001):
        live = lab_disks.live_path(lab.disks, vm, key)
        path = Path(found[f"vm.web01.disk[{key}]"].attributes["path"])
        assert file_digest(path) == file_digest(live)
    data = vm.disk(2001)
    assert data is not None
    live = lab_disks.live_path(lab.disks, vm, 2001)
    assert file_digest(volume_file(lab, volume_id), data.capacity) == file_digest(live)
    boot = Path(found["vm.web01.disk[2000]"].attributes["path"])
    images.to_qcow2(boot, boot.with_suffix(".check.qcow2"))  # the same bytes as the upload's
    assert conn.image.get_image(image_id).hash_value == images.file_sha512(
        boot.with_suffix(".check.qcow2")
    )

    again = ferry(
        lab, "plan", str(spec), "--target", "vm.web01", "--state", str(state),
        "--detailed-exitcode",
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
