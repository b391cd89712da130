"""The tests' own cleanup (tests/conftest.py new_cloud_objects): a test that ends with an apply
killed mid-copy leaves its volume attached to the conversion host; the teardown detaches and
deletes it. Before: Cinder refused to delete the in-use volume, the exception ended the
teardown, and the volume (and whatever came after it: networks, groups) stayed for the next
tests to find and adopt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from openstack import exceptions as os_exc
from pyVmomi import vim

from engine.lab.lab import Lab
from engine.providers.vsphere.read import fetch_property, retrieve
from engine.providers.vsphere.snapshots import remove_snapshot
from tests.conftest import cloud_objects, remove_new_objects
from tests.integration.cli import ROOT
from tests.integration.converge import records
from tests.integration.test_fault_drills import spec_for
from tests.integration.test_resume import DISK, copied

pytestmark = pytest.mark.lab


def test_the_volume_of_an_apply_killed_mid_copy_is_detached_and_deleted(
    lab: Lab, si: Any, tmp_path: Path
) -> None:
    conn = lab.openstack("ferry-lab")
    before = cloud_objects(conn)
    spec, state = spec_for(tmp_path, "web01", "    verify: false\n"), tmp_path / "ferry.db"
    lab.read_delay("web01", 2000, 1500)
    began = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "apply", str(spec), "--auto-approve",
             "--state", str(state)],
            cwd=ROOT,
            env={**os.environ, **lab.env(), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while copied(state) == 0:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        lab.read_errors("web01", 2000, None)
        _remove_ferry_snapshots(si, "web01")
    volume_id = str(records(state)[DISK]["volume_id"])
    assert conn.block_storage.get_volume(volume_id).status == "in-use", "not attached: no test"

    remove_new_objects(conn, before)
    with pytest.raises(os_exc.NotFoundException):
        conn.block_storage.get_volume(volume_id)
    assert cloud_objects(conn) == before
    print(f"killed mid-copy and cleaned in {time.monotonic() - began:.1f} s")


def _remove_ferry_snapshots(si: Any, name: str) -> None:
    """The snapshot the killed apply left on the source VM (the next apply would remove it)."""
    ref = next(o.ref for o in retrieve(si, vim.VirtualMachine, ["name"]) if o.props["name"] == name)
    info = fetch_property(si, ref, "snapshot")
    trees = list(info.rootSnapshotList or []) if info is not None else []
    while trees:
        tree = trees.pop()
        trees.extend(tree.childSnapshotList or [])
        if str(tree.name).startswith("ferry-"):
            remove_snapshot(si, tree.snapshot)
