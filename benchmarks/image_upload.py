"""Glance upload of a sparse disk file (destination.output: image): raw vs qcow2.

A sparse raw file of `--gib` GiB holding `--data-mib` MiB of data (1 MiB blocks at seeded
offsets, the rest holes, as a converted guest's file mostly is) is uploaded to the cloud's
Glance with ferry's upload (engine.providers.openstack.images.upload) twice: as raw (HTTP has no
holes: every byte of the file is sent) and as qcow2 (qemu-img convert first: holes are not
stored, so not sent). Prints per format the seconds (qemu-img and upload apart), the bytes
Glance received (the image's size), then the ratio; with `--volumes`, the seconds Cinder takes
to make a volume of each image (a qcow2 image is converted to raw by Cinder). A second qcow2
conversion of the same file is uploaded again to show the restart: qemu-img's output is the
same bytes, so ferry finds the image by its sha512 and sends nothing.

The cloud is OS_CLOUD's (`eval "$(ferry lab env)"` for the lab). Images and volumes it makes are
deleted at the end. Measures, asserts nothing.
Usage: .venv/bin/python benchmarks/image_upload.py [--gib 2] [--data-mib 64] [--volumes]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import openstack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.providers.openstack.images import delete as delete_images  # noqa: E402
from engine.providers.openstack.images import to_qcow2  # noqa: E402
from engine.providers.openstack.images import upload as upload_image  # noqa: E402
from engine.providers.openstack.volumes import wait_volume  # noqa: E402

MiB, GiB = 1024**2, 1024**3


def sparse_file(path: Path, gib: int, data_mib: int, seed: int) -> None:
    """`gib` GiB, `data_mib` 1 MiB blocks of random bytes at distinct seeded offsets."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(gib * GiB)
        for block in rng.sample(range(gib * 1024), min(data_mib, gib * 1024)):
            f.seek(block * MiB)
            f.write(rng.randbytes(MiB))


def upload(conn: Any, path: Path, fmt: str, vm: str) -> tuple[str, bool, float, int]:
    """(image id, uploaded, seconds, bytes Glance holds)."""
    began = time.monotonic()
    props = {"ferry_vm_uuid": vm, "ferry_disk_key": "2000", "hw_firmware_type": "bios"}
    image_id, sent = upload_image(conn, path, f"bench-{fmt}", fmt, props, lineage="benchmark")
    seconds = time.monotonic() - began
    return image_id, sent, seconds, int(conn.image.get_image(image_id).size or 0)


def volume_seconds(conn: Any, image_id: str, gib: int) -> tuple[str, float]:
    began = time.monotonic()
    volume = conn.block_storage.create_volume(name="bench-image", size=gib, image_id=image_id)
    wait_volume(conn, str(volume.id), "available", timeout=3600)
    return str(volume.id), time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=int, default=2, help="file size (GiB)")
    parser.add_argument("--data-mib", type=int, default=64, help="data in it (MiB)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--volumes", action="store_true", help="time a volume of each image")
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    conn = openstack.connect(cloud=os.environ.get("OS_CLOUD"))
    made_images: list[str] = []
    made_volumes: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        raw = Path(tmp) / "disk-2000.raw"
        sparse_file(raw, args.gib, args.data_mib, args.seed)
        print(f"file: {args.gib} GiB, {raw.stat().st_blocks * 512 / MiB:.0f} MiB allocated")
        try:
            results = {}
            for fmt in ("raw", "qcow2"):
                vm = f"bench-{uuid.uuid4()}"
                began = time.monotonic()
                path = raw
                if fmt == "qcow2":
                    path = raw.with_suffix(".qcow2")
                    to_qcow2(raw, path)
                convert = time.monotonic() - began
                image_id, _, seconds, size = upload(conn, path, fmt, vm)
                made_images.append(image_id)
                results[fmt] = convert + seconds
                print(
                    f"{fmt:5}: qemu-img {convert:6.1f} s, upload {seconds:6.1f} s, "
                    f"{size:>13,} bytes sent"
                )
                if fmt == "qcow2":
                    again = raw.with_suffix(".again.qcow2")
                    to_qcow2(raw, again)
                    same, sent, seconds, _ = upload(conn, again, fmt, vm)
                    print(
                        f"qcow2 again (a restarted upload): {'uploaded' if sent else 'reused'} "
                        f"{'a new image' if same != image_id else image_id} in {seconds:.1f} s"
                    )
                if args.volumes:
                    volume_id, vs = volume_seconds(conn, image_id, args.gib)
                    made_volumes.append(volume_id)
                    print(f"{fmt:5}: volume from the image in {vs:.1f} s")
            print(f"raw / qcow2 (convert + upload): {results['raw'] / results['qcow2']:.1f}x")
        finally:
            for volume_id in made_volumes:
                conn.block_storage.delete_volume(volume_id, ignore_missing=True)
            delete_images(conn, made_images)


if __name__ == "__main__":
    main()
