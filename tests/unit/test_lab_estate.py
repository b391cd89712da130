"""The lab estate has the shape the lab issue promises, and disk contents are deterministic."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import UserError
from engine.lab import disks as lab_disks
from engine.lab import lab as lab_module
from engine.lab.estate import (
    DATASTORES,
    DISTRIBUTED_PORTGROUPS,
    ESTATE,
    HOSTS,
    STANDARD_PORTGROUP,
    GiB,
    find_vm,
)


def test_estate_shape() -> None:
    assert 4 <= len(ESTATE) <= 6
    assert {vm.host for vm in ESTATE} == set(HOSTS)
    assert {d.datastore for vm in ESTATE for d in vm.disks} == set(DATASTORES)
    assert all(1 <= len(vm.disks) <= 3 and 1 <= len(vm.nics) <= 3 for vm in ESTATE)
    assert all(GiB <= d.capacity <= 4 * GiB for vm in ESTATE for d in vm.disks)
    assert {d.thin for vm in ESTATE for d in vm.disks} == {True, False}
    portgroups = {n.portgroup for vm in ESTATE for n in vm.nics}
    assert STANDARD_PORTGROUP in portgroups and portgroups & set(DISTRIBUTED_PORTGROUPS)
    macs = [n.mac for vm in ESTATE for n in vm.nics]
    assert len(set(macs)) == len(macs)
    assert sum(not vm.cbt for vm in ESTATE) == 1
    assert sum(not vm.powered_on for vm in ESTATE) == 1
    assert sum(vm.existing_snapshot is not None for vm in ESTATE) == 1
    guests = " ".join(vm.guest_id for vm in ESTATE)
    assert all(g in guests for g in ("rhel", "ubuntu", "windows"))
    assert len({vm.instance_uuid for vm in ESTATE}) == len(ESTATE)
    assert Counter(vm.name for vm in ESTATE).most_common(1)[0][1] == 1


def test_initial_content_is_deterministic_and_inside_the_disk() -> None:
    for vm in ESTATE:
        for disk in vm.disks:
            extents = lab_disks.initial_extents(vm, disk)
            assert extents == lab_disks.initial_extents(vm, disk)
            assert all(o >= 0 and o + n <= disk.capacity for o, n in extents)
    assert lab_disks.pattern(1, 64) == lab_disks.pattern(1, 64) != lab_disks.pattern(2, 64)


def test_guest_write_checks_extent_before_touching_anything(tmp_path: Path) -> None:
    vm = find_vm("web01")
    assert vm is not None
    with pytest.raises(UserError, match="outside disk"):
        lab_disks.guest_write(tmp_path, vm, 2000, vm.disks[0].capacity - 10, 11)
    with pytest.raises(UserError, match="no content yet"):
        lab_disks.guest_write(tmp_path, vm, 2000, 0, 1)
    assert list(tmp_path.iterdir()) == []


def test_guest_write_journals_each_write(tmp_path: Path) -> None:
    vm = find_vm("build-old")
    assert vm is not None
    disk = vm.disks[0]
    lab_disks.create_disk(tmp_path, vm, disk)
    first = lab_disks.guest_write(tmp_path, vm, disk.key, 100, 10)
    second = lab_disks.guest_write(tmp_path, vm, disk.key, 0, 5, seed=9)
    assert (first.sequence, second.sequence) == (0, 1)
    assert lab_disks.journal_path(tmp_path, vm, disk.key).read_text() == "100 10\n0 5\n"
    with lab_disks.live_path(tmp_path, vm, disk.key).open("rb") as f:
        assert f.read(5) == lab_disks.pattern(9, 5)


def test_the_default_lab_is_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ferry lab env` from another directory used to call a running lab down (issue 13)."""
    monkeypatch.delenv("FERRY_LAB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = tmp_path / "checkout" / "state" / "lab"
    monkeypatch.setattr(lab_module, "CHECKOUT_LAB", checkout)
    assert lab_module.default_dir() == tmp_path / "state" / "lab"  # no lab anywhere
    checkout.mkdir(parents=True)
    (checkout / "lab.json").write_text("{}")
    assert lab_module.default_dir() == checkout
    (tmp_path / "state" / "lab").mkdir(parents=True)
    (tmp_path / "state" / "lab" / "lab.json").write_text("{}")
    assert lab_module.default_dir() == tmp_path / "state" / "lab"  # the one here wins
    monkeypatch.setenv("FERRY_LAB_DIR", str(tmp_path / "mine"))
    assert lab_module.default_dir() == tmp_path / "mine"


def test_lab_down_purge_removes_a_stopped_labs_data(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    (root / "disks").mkdir(parents=True)
    with (root / "disks" / "d.raw").open("wb") as f:
        f.write(b"x" * 8192)
        f.truncate(1 << 30)  # sparse: counts what it holds, not its size
    assert 8192 <= lab_module.Lab(root).disk_usage() < 1 << 20
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "lab", "down", "--dir", str(root), "--purge"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed {root}\n" and not root.exists()
