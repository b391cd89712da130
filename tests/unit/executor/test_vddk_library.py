"""The vddk preflight names the VDDK library nbdkit loaded (issue 15): VMware's VDDK or
OpenVDDK (an Apache-2.0 implementation of the same library), from `nbdkit vddk --dump-plugin`'s
vddk_dll= and vddk_library_version=. A fake `nbdkit` on PATH stands in for nbdkit's vddk plugin
(Debian's nbdkit has none)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import DataplaneError
from engine.executor.seams import VddkSources, vddk_library
from engine.providers.vsphere.session import VCenterTarget

TARGET = VCenterTarget("vc", 443, "u", "p", thumbprint="AA:BB")


def _library(libdir: Path, content: bytes) -> Path:
    (libdir / "lib64").mkdir(parents=True)
    dll = libdir / "lib64" / "libvixDiskLib.so.8"
    dll.write_bytes(b"\x7fELF" + content)
    return dll


def _dump(dll: Path | None, version: str = "8") -> str:
    lines = ["path=/usr/lib/nbdkit/plugins/nbdkit-vddk-plugin.so", "name=vddk",
             "vddk_default_libdir=/usr/lib64/vmware-vix-disklib", "vddk_has_nfchostport=1",
             f"vddk_library_version={version}"]  # fmt: skip
    if dll is not None:
        lines.append(f"vddk_dll={dll}")
    return "\n".join([*lines, "vddk_has_VixDiskLib_QueryAllocatedBlocks=1", ""])


def test_the_library_is_named_from_the_dump(tmp_path: Path) -> None:
    vmware = _library(tmp_path / "vmware-vix-disklib-distrib", b"VMware, Inc. VixDiskLib 8.0.3")
    assert vddk_library(_dump(vmware), vmware.parents[1]) == f"VMware VDDK 8 ({vmware})"
    open_ = _library(tmp_path / "vddk", b"\0OpenVDDK 0.4.0 (Apache-2.0)\0")
    assert vddk_library(_dump(open_), open_.parents[1]) == f"OpenVDDK ({open_}, VDDK API 8)"
    named = _library(tmp_path / "opt" / "openvddk-0.4", b"")  # named so by its directory
    assert vddk_library(_dump(named), named.parents[1]).startswith("OpenVDDK (")
    assert vddk_library(_dump(None), Path("/opt/x")) == "VDDK 8 from /opt/x"  # nbdkit < 1.22


def _fake_nbdkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "nbdkit"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_the_preflight_says_which_library_it_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dll = _library(tmp_path / "vddk", b"OpenVDDK")
    dump = tmp_path / "dump.txt"
    dump.write_text(_dump(dll))
    _fake_nbdkit(tmp_path, monkeypatch, f'test "$2" = "libdir={tmp_path / "vddk"}" && cat {dump}')
    found = VddkSources(TARGET, tmp_path / "vddk").check()
    assert found == f"source.reader vddk: OpenVDDK ({dll}, VDDK API 8)"


def test_a_library_that_does_not_load_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_nbdkit(
        tmp_path, monkeypatch, "echo 'nbdkit: error: libvixDiskLib.so.8: cannot open' >&2; exit 1"
    )
    with pytest.raises(DataplaneError, match="VDDK or OpenVDDK") as raised:
        VddkSources(TARGET, tmp_path / "none").check()
    assert "\n" not in str(raised.value) and "libvixDiskLib.so.8: cannot open" in str(raised.value)
