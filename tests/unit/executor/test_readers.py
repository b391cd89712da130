"""source.reader (issue 15): which reader a spec gets, the https reader's URL, and its nbdkit
arguments (the session cookie in a 0600 file, never on argv; TLS verified against the CA)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.cli.apply import _sources
from engine.dataplane.nbdkit import DiskSource, HttpsDiskSource, NbdkitServer
from engine.errors import DataplaneError, UserError
from engine.executor.seams import (
    DatastorePathSources,
    HttpsSources,
    LabFaultSources,
    LabSources,
    VddkSources,
    fault_filters,
    folder_url,
)
from engine.lab.faults import set_read_delay, set_read_errors, set_read_rate
from engine.providers.vsphere.session import VCenterTarget
from engine.providers.vsphere.snapshots import DiskInfo
from engine.spec.validate import reader_of

TARGET = VCenterTarget("vc.example.com", 443, "u", "p", cafile=Path("/etc/ca.pem"))


def spec(source: dict[str, Any], **vcenter: Any) -> dict[str, Any]:
    return {"source": {**source, "vcenter": {"host": "vc", "username": "u", **vcenter}}}


@pytest.mark.parametrize(
    ("source", "vcenter", "reader"),
    [
        ({}, {}, "https"),
        ({}, {"vddk_libdir": "/opt/vddk"}, "vddk"),
        ({"reader": "https"}, {"vddk_libdir": "/opt/vddk"}, "https"),
        ({}, {"datastore_path": "/mnt/ds"}, "datastore_path"),
        ({"lab_dir": "/lab"}, {}, "datastore_path"),
        ({"lab_dir": "/lab", "reader": "https"}, {}, "https"),
    ],
)
def test_the_default_reader(source: dict[str, Any], vcenter: dict[str, Any], reader: str) -> None:
    assert reader_of(spec(source, **vcenter)) == reader


def test_each_reader_gets_its_sources(tmp_path: Path) -> None:
    si = object()
    assert isinstance(_sources(spec({}), TARGET, si), HttpsSources)
    vddk = spec({"reader": "vddk"}, vddk_libdir="/opt/vddk")
    assert isinstance(_sources(vddk, TARGET, si), VddkSources)
    assert isinstance(_sources(spec({"lab_dir": str(tmp_path)}), TARGET, si), LabSources)
    mount = spec({}, datastore_path=str(tmp_path))
    assert isinstance(_sources(mount, TARGET, si), DatastorePathSources)
    lab_https = _sources(spec({"lab_dir": str(tmp_path), "reader": "https"}), TARGET, si)
    assert isinstance(lab_https, LabFaultSources) and isinstance(lab_https.inner, HttpsSources)


class OneHttpsSource:
    """The https reader's disk source for any disk (HttpsSources needs a vCenter session)."""

    def block_status(self) -> bool:
        return False

    def check(self) -> None:
        return None

    def probe(self, vm: str, disks: list[DiskInfo]) -> None:
        return None

    def source(self, vm: str, uuid: str, snapshot: str, disk: DiskInfo) -> DiskSource:
        return HttpsDiskSource("https://vc/folder/x-flat.vmdk?dsName=d", "c", Path("/ca.pem"))


def test_the_lab_fault_drills_slow_and_fail_the_https_reader(tmp_path: Path) -> None:
    """`ferry lab fault` on a disk read through https (the demo spec): nbdkit's error and delay
    filters in front of the https reader's retry-request filter (an injected EIO reaches the
    copy, as from the file reader), the curl plugin behind them; no fault, no filter."""
    sources = LabFaultSources(OneHttpsSource(), tmp_path)
    disk = DiskInfo(2000, 1 << 30, "[ds] vm/vm.vmdk", True, None)
    assert isinstance(sources.source("vm-1", "uuid-1", "snapshot-1", disk), HttpsDiskSource)
    set_read_delay(tmp_path, "uuid-1", 2000, 1500)
    set_read_errors(tmp_path, "uuid-1", 2001, "10%")
    slow = NbdkitServer(sources.source("vm-1", "uuid-1", "snapshot-1", disk)).argv()
    filters = [a for a in slow if a.startswith("--filter=")]
    assert filters == ["--filter=delay", "--filter=retry-request"], slow
    assert "rdelay=1500ms" in slow and slow.index("curl") < slow.index("rdelay=1500ms")
    failing = NbdkitServer(
        sources.source("vm-1", "uuid-1", "s", DiskInfo(2001, 1 << 30, "[ds] x", True, None))
    ).argv()
    assert [a for a in failing if a.startswith("--filter=")][:2] == [
        "--filter=error",
        "--filter=retry-request",
    ]
    assert "error-pread-rate=10%" in failing and "error=EIO" in failing
    assert "https://vc/folder/x-flat.vmdk?dsName=d" in " ".join(failing)


def test_a_read_rate_puts_nbdkit_rate_filter_in_front_of_the_lab_disk(tmp_path: Path) -> None:
    """`ferry lab fault --read-rate-mib 150` (benchmarks/scale_out.py's NFC stream): the rate
    filter caps all the disk's connections together at 150 MiB/s, in bits a second, with short
    bursts; other disks are not slowed; a delay on the same disk is kept beside it."""
    set_read_rate(tmp_path, "uuid-1", 2000, 150)
    assert fault_filters(tmp_path, "uuid-1", 2000) == (
        ("rate",),
        ("rate=1258291200", "burstiness=0.1"),
    )
    assert fault_filters(tmp_path, "uuid-1", 2001) == ((), ())
    set_read_delay(tmp_path, "uuid-1", 2000, 5)
    filters, args = fault_filters(tmp_path, "uuid-1", 2000)
    assert filters == ("delay", "rate") and "rdelay=5ms" in args and "rate=1258291200" in args
    (tmp_path / "disks").mkdir()
    disk = DiskInfo(2000, 1 << 30, "[ds] vm/vm.vmdk", True, None)
    source = LabSources(tmp_path).source("vm-1", "uuid-1", "snapshot-1", disk)
    assert source.filters == ("delay", "rate") and "rate=1258291200" in source.filter_args


@pytest.mark.parametrize("mbs", [0, -1, 1e6])
def test_a_read_rate_out_of_range_is_one_line(tmp_path: Path, mbs: float) -> None:
    with pytest.raises(UserError, match=r"read rate .* MiB/s is not above 0"):
        set_read_rate(tmp_path, "uuid-1", 2000, mbs)
    assert not (tmp_path / "faults.json").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"reader": "vddk"}, "source.reader vddk needs source.vcenter.vddk_libdir"),
        ({"reader": "datastore_path"}, "needs source.vcenter.datastore_path"),
    ],
)
def test_a_reader_without_its_setting_is_one_line(source: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message) as raised:
        _sources(spec(source), TARGET, object())
    assert "\n" not in str(raised.value)


def test_the_folder_url_of_a_flat_extent() -> None:
    url = folder_url(TARGET, "Region A/DC0", "[ds 1] web 01/web 01_1-flat.vmdk")
    assert url == (
        "https://vc.example.com:443/folder/web%2001/web%2001_1-flat.vmdk"
        "?dcPath=Region%20A%2FDC0&dsName=ds%201"
    )
    with pytest.raises(DataplaneError, match="not a datastore path"):
        folder_url(TARGET, "DC0", "web01/web01.vmdk")


def test_the_cookie_is_in_a_0600_file_never_on_argv(tmp_path: Path) -> None:
    cookie = 'vmware_soap_session="52a01262-bf93-ccce-d379-8dabb3e55560"'
    source = HttpsDiskSource("https://vc/folder/x-flat.vmdk?dsName=d", cookie, Path("/ca.pem"))
    args = source.plugin_args(tmp_path)
    assert not any("52a01262" in a for a in args)
    assert f"cookie=+{tmp_path / 'cookie'}" in args and "cainfo=/ca.pem" in args
    assert "sslverify=false" not in args
    assert (tmp_path / "cookie").read_text() == cookie
    assert os.stat(tmp_path / "cookie").st_mode & 0o777 == 0o600
    assert "52a01262" not in repr(source) + source.describe()


def test_a_pinned_thumbprint_is_refused_with_what_to_do() -> None:
    pinned = VCenterTarget("vc", 443, "u", "p", thumbprint="AA:" * 19 + "AA")
    with pytest.raises(DataplaneError, match=r"set source\.vcenter\.tls\.ca_file"):
        HttpsSources(pinned, object()).check()
