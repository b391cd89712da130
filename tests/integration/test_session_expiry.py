"""A vCenter session that ends mid-copy (issue 15): the https reader's nbdkit meets 401 from
/folder, ferry logs in again and rewrites the cookie file its cookie script reads, the reads
retried by nbdkit's retry-request filter succeed, and the copy completes byte-exact.

The lab vCenter ends every session on `ferry lab expire-sessions` (vcsim's ferry_sessions.go).
nbdkit's delay filter slows the reads so that the copy is still running when the sessions end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from engine.dataplane.copy import CopyOptions, copy
from engine.dataplane.nbdkit import NbdkitServer
from engine.executor.seams import HttpsSources
from engine.lab import disks as lab_disks
from engine.lab.estate import find_vm
from engine.lab.lab import Lab
from engine.providers.vsphere.session import connect, session_cookie, target_from_env
from engine.providers.vsphere.snapshots import parse_disks
from tests.integration.cli import ferry
from tests.integration.test_https_reader import _areas_digest

pytestmark = pytest.mark.lab
MiB = 1024**2
EXPIRE_AFTER = 1.5  # seconds into the copy
# One read at a time, 1 MiB each: 48 reads at >= 200 ms, so the copy lasts >= 9.6 s on any box
# and most reads come after the sessions end (with the default 4 connections of parallel reads
# a quiet CI box copied the 48 MiB in under 1.5 s, before they ended)
SERIAL = CopyOptions(dst_is_zero=True, request_size=MiB, in_flight=1, connections=1)


def test_a_session_ending_mid_copy_is_renewed_and_the_copy_completes(
    lab: Lab, tmp_path: Path
) -> None:
    """web01 disk 2001 (no snapshot: the live extent, which nothing writes meanwhile) read
    through the https reader at 200 ms a read: the lab vCenter ends every session 1.5 s in;
    /folder then answers 401 to the old cookie (nbdkit's log says so), the session is renewed
    once, and the copy's bytes equal the disk's (sha256 of the areas read)."""
    target = target_from_env(lab.env())
    si = connect(target)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        vm = next(v for v in view.view if v.name == "web01")
        lab_vm = find_vm("web01")
        assert lab_vm is not None
        disk = next(d for d in parse_disks(vm.config.hardware.device) if d.key == 2001)
        live = lab_disks.live_path(lab.disks, lab_vm, 2001)
        areas = [(0, 48 * MiB)]
        before = session_cookie(si)
        done = ferry(lab, "lab", "expire-sessions")
        assert done.returncode == 0 and "the lab vCenter ended" in done.stdout, done.stderr
        assert si.RetrieveContent().sessionManager.currentSession is not None  # a new login
        old_cookie = session_cookie(si)
        assert old_cookie != before

        sources = HttpsSources(target, si, cookie_check=1.0, renew=1)
        source = sources.source(vm._moId, "", "", disk)
        out = tmp_path / "copy.raw"
        with out.open("wb") as f:
            f.truncate(disk.capacity)
        ended: list[float] = []

        def expire() -> None:
            assert lab.expire_sessions() >= 1
            ended.append(time.monotonic())

        with NbdkitServer(source, filters=["delay"], filter_args=["rdelay=200ms"]) as server:
            timer = threading.Timer(EXPIRE_AFTER, expire)
            began = time.monotonic()
            timer.start()
            try:
                copy(server.uri, out, areas, SERIAL)
            finally:
                copied = time.monotonic()
                timer.join()
            log = server._log.read_text()
        assert ended and ended[0] < copied - 1, (ended, copied)  # they ended while it copied
        assert "returned error: 401" in log, log  # /folder refused the old cookie
        assert sources.cookies.renewals >= 1
        assert session_cookie(si) != old_cookie
        assert _areas_digest(out, areas) == _areas_digest(live, areas)
        print(
            f"\n48 MiB copied in {copied - began:.1f} s across the sessions' end "
            f"({sources.cookies.checks} session checks, {sources.cookies.renewals} renewal(s))"
        )
    finally:
        Disconnect(si)
