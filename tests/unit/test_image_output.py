"""destination.output: image in the planner and at apply (issue 16): Nova's image properties by
firmware and guest, the work directory's bytes, and boot: image's block device mapping (the
boot disk's image local, boot_index 0; the volumes data disks)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import yaml
from rich.console import Console

from engine.cli.apply import check_applicable
from engine.cli.plan import render
from engine.executor.image import planned_path
from engine.model.desired import DesiredVM, FlavorChoice
from engine.model.state import ResourceRecord, Status
from engine.planner.diff.image import disk_path, image_properties
from engine.planner.make import make_plan
from engine.planner.refresh import work_dir_files
from engine.providers.openstack.compute import ServerSpec, block_devices, create_server
from engine.spec.validate import validate_text
from tests.unit.test_planner_cases import CASES, hydrate


def _plan(case: str, disk_format: str = ""):  # type: ignore[no-untyped-def]
    data = yaml.safe_load((CASES / case / "case.yaml").read_text())
    if disk_format:
        data["spec"]["destination"]["image"]["disk_format"] = disk_format
    loaded = validate_text(yaml.safe_dump(data["spec"]), case, {})
    inventory, destination, state = hydrate(data)
    return make_plan(loaded.data, inventory, destination, state, now=data.get("now")), inventory


def test_image_properties_follow_firmware_and_guest() -> None:
    _, inventory = _plan("image-first-run")
    db01 = next(v for v in inventory.vms if v.name == "db01")
    vm = DesiredVM("db01", db01, "cutover", "db01", FlavorChoice(None, False, ""), (), ())
    assert image_properties(vm) == {  # UEFI boots on q35 (issue 16: it had no machine type)
        "hw_firmware_type": "uefi",
        "hw_machine_type": "q35",
        "hw_disk_bus": "virtio",
        "hw_vif_model": "virtio",
        "os_type": "windows",
        "ferry_vm_uuid": "4215aaaa-0000-4000-8000-000000000002",
    }


def test_the_plan_shows_the_work_dir_and_local_bytes() -> None:
    plan, _ = _plan("image-first-run")
    console = Console(record=True, width=400)
    render(plan, console)
    text = console.export_text()
    # web01's files (1000 MiB allocated) and, qcow2 being the default, their qcow2 copies
    assert "up to 2.0 GiB on local disk in /var/lib/ferry/work" in text, text
    assert "up to 1.5 GiB on local disk in /var/lib/ferry/work" in text, text


def test_the_plan_shows_each_upload_and_sums_them_apart_from_the_copies() -> None:
    """break-it 16 L2: a 2 GiB raw upload took 56 s under "0 B to copy"."""
    plan, _ = _plan("image-first-run")  # qcow2: each image about its disk's allocated bytes
    uploads = {c.address: c.bytes for c in plan.changes if c.kind == "image"}
    assert uploads == {"vm.web01.image[2000]": 700 * 2**20, "vm.web01.image[2001]": 300 * 2**20}
    assert plan.bytes_to_upload == 1000 * 2**20
    assert plan.bytes_to_copy == sum(c.bytes or 0 for c in plan.changes if c.kind == "disk_file")
    console = Console(record=True, width=400)
    render(plan, console)
    text = console.export_text()
    assert "~700.0 MiB" in text and "2.4 GiB to copy, ~1000.0 MiB to upload" in text, text

    raw, _ = _plan("image-cutover-boot-image", disk_format="raw")  # HTTP has no holes
    uploads = {c.address: c.bytes for c in raw.changes if c.kind == "image"}
    assert uploads == {"vm.web01.image[2000]": 2 * 2**30, "vm.web01.image[2001]": 3 * 2**29}


def test_apply_runs_a_boot_from_image_plan(tmp_path: Path) -> None:
    plan, _ = _plan("image-cutover-boot-image")
    check_applicable(plan, Console(file=(tmp_path / "out").open("w")), False)  # no UserError


def test_a_server_booted_from_an_image_maps_it_local_and_the_volumes_as_data_disks() -> None:
    spec = ServerSpec("web01", "u", "m1.medium.disk20", ("v1", "v2"), ("p",), image_id="i0")
    assert block_devices(spec) == [
        {"uuid": "i0", "source_type": "image", "destination_type": "local", "boot_index": 0,
         "delete_on_termination": True},
        {"uuid": "v1", "source_type": "volume", "destination_type": "volume", "boot_index": -1,
         "delete_on_termination": False},
        {"uuid": "v2", "source_type": "volume", "destination_type": "volume", "boot_index": -1,
         "delete_on_termination": False},
    ]  # fmt: skip
    by_volume = block_devices(replace(spec, image_id=None))
    assert [(m["uuid"], m["boot_index"]) for m in by_volume] == [("v1", 0), ("v2", -1)]


def test_create_server_names_the_boot_image_as_nova_needs_it() -> None:
    """Nova maps an image to local only with the same imageRef (else 400 'Mapping image to local
    is not supported', seen on the lab); a server booted from volumes names no image."""
    calls: list[dict[str, object]] = []
    compute = SimpleNamespace(
        find_flavor=lambda name, ignore_missing: SimpleNamespace(id="f-" + name),
        create_server=lambda **fields: calls.append(fields) or SimpleNamespace(id="s"),
    )
    conn = SimpleNamespace(compute=compute)
    spec = ServerSpec("web01", "u", "m1.medium.disk20", ("v1",), ("p",), image_id="i0")
    create_server(conn, spec)
    create_server(conn, replace(spec, image_id=None))
    assert calls[0]["image_id"] == "i0" and calls[0]["flavor_id"] == "f-m1.medium.disk20"
    assert calls[0]["block_device_mapping_v2"] == block_devices(spec)
    assert "image_id" not in calls[1]


def test_refresh_lists_the_work_dirs_disk_files_as_the_plan_names_them(tmp_path: Path) -> None:
    """The state's files under `<work_dir>/<lineage>/<uuid>/` (break-it 16b F2), and an older
    ferry's under `<work_dir>/<uuid>/`, which a record of it keeps naming."""
    (tmp_path / "L1" / "4215aaaa").mkdir(parents=True)
    (tmp_path / "L1" / "4215aaaa" / "disk-2000.raw").write_bytes(b"")
    (tmp_path / "4215aaaa").mkdir()
    (tmp_path / "4215aaaa" / "disk-2001.raw").write_bytes(b"")  # an older ferry's
    (tmp_path / "4215aaaa" / "disk-2001.raw.part").write_bytes(b"")  # not a disk file
    (tmp_path / "4215aaaa" / "disk-2002.raw").mkdir()  # not a file
    found = work_dir_files({"output": "image", "work_dir": f"{tmp_path}/"})
    older = f"{tmp_path}/4215aaaa/disk-2001.raw"
    assert found == {f"{tmp_path}/L1/4215aaaa/disk-2000.raw", older}
    image = SimpleNamespace(work_dir=f"{tmp_path}/", lineage="L1")
    vm = SimpleNamespace(
        name="web01", source=SimpleNamespace(instance_uuid="4215aaaa", moref="vm-1")
    )
    assert disk_path(image, vm, 2000, {}) in found  # type: ignore[arg-type]
    record = ResourceRecord("vm.web01.disk[2001]", "disk_file", Status.READY, {"path": older})
    kept = disk_path(image, vm, 2001, {record.address: record})  # type: ignore[arg-type]
    assert kept == older  # an existing state keeps its file
    assert disk_path(image, vm, 2001, {}) == f"{tmp_path}/L1/4215aaaa/disk-2001.raw"  # type: ignore[arg-type]
    assert work_dir_files({"output": "volume", "work_dir": str(tmp_path)}) is None
    # a work_dir emptied or gone: every recorded file is planned again from 0
    assert work_dir_files({"output": "image", "work_dir": str(tmp_path / "gone")}) == set()


def test_a_plan_made_before_its_state_existed_puts_the_files_under_the_new_lineage() -> None:
    """The first `ferry apply SPEC` plans on no state (lineage "": the apply's first write makes
    it), so the plan names `<work_dir>/<uuid>/disk-K.raw`; the apply keeps the file under the
    lineage its state has then, where the next plan names it (break-it 16b F2: the lab's first
    cutover wrote the shared, state-less path). A plan of an existing state is applied as it
    names its files, an older ferry's recorded file included."""
    applier = SimpleNamespace(plan=SimpleNamespace(state_lineage=""), lineage="L1")
    assert planned_path(applier, "/w/u1/disk-2000.raw") == Path("/w/L1/u1/disk-2000.raw")  # type: ignore[arg-type]
    applier.plan.state_lineage = "L1"
    for named in ("/w/L1/u1/disk-2000.raw", "/w/u1/disk-2000.raw"):
        assert planned_path(applier, named) == Path(named)  # type: ignore[arg-type]
