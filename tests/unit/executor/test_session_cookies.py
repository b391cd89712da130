"""The https reader's cookie renewal (issue 15): ferry keeps the vCenter session's cookie in
0600 files that nbdkit's cookie script rereads; a session vCenter ended is logged in again and
the files rewritten. An in-repo fake of pyVmomi's session-oriented stub stands in for vCenter."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.dataplane.nbdkit import HttpsDiskSource, NbdkitServer, write_secret
from engine.executor.seams import HttpsSources
from engine.providers.vsphere.session import SessionCookies, VCenterTarget

URL = "https://vc/folder/web01/web01-flat.vmdk?dcPath=DC0&dsName=ds"


class FakeVCenter:
    """A session-oriented stub and its session manager: `end()` ends the session (vCenter then
    reads currentSession as None); the next call after _SetStateUnauthenticated logs in anew."""

    def __init__(self) -> None:
        self.logins = 1
        self.active = True
        self.unauthenticated = False

    def GetSessionId(self) -> str:  # noqa: N802 - pyVmomi's name
        return f"52a01262-0000-0000-0000-{self.logins:012d}"

    def _SetStateUnauthenticated(self) -> None:  # noqa: N802 - pyVmomi's name
        self.unauthenticated = True

    def end(self) -> None:
        self.active = False

    @property
    def currentSession(self) -> object | None:  # noqa: N802 - pyVmomi's name
        if self.unauthenticated:  # the stub's re-login
            self.logins += 1
            self.active, self.unauthenticated = True, False
        return object() if self.active else None

    def si(self) -> SimpleNamespace:
        return SimpleNamespace(_stub=self, content=SimpleNamespace(sessionManager=self))


def cookie_of(vc: FakeVCenter) -> str:
    return f'vmware_soap_session="{vc.GetSessionId()}"'


def test_the_cookie_script_names_the_file_never_the_cookie(tmp_path: Path) -> None:
    vc = FakeVCenter()
    cookies = SessionCookies(vc.si(), interval=3600)
    private = tmp_path / "a dir's"  # a path with a space and a quote is quoted
    private.mkdir()
    source = HttpsDiskSource(URL, "unused", Path("/ca.pem"), keeper=cookies, renew=7)
    args = source.plugin_args(private)
    script = cookies.script(private / "cookie")
    assert f"cookie-script={script}" in args and "cookie-script-renew=7" in args, args
    assert not any("cookie=" in a for a in args) and not any("52a01262" in a for a in args)
    assert (private / "cookie").stat().st_mode & 0o777 == 0o600
    # what nbdkit runs prints the cookie
    done = subprocess.run(["sh", "-c", script], capture_output=True, check=True, timeout=30)
    assert done.stdout.decode() == cookie_of(vc)
    shutil.rmtree(private)  # its nbdkit stopped: the keeper's thread ends


def test_the_cookie_script_has_an_ended_session_renewed_before_it_prints(
    tmp_path: Path,
) -> None:
    """What nbdkit runs every cookie-script-renew seconds asks the keeper, which checks the
    session then and there (its own thread would check in an hour): an ended session is logged
    in again and the script prints the new cookie. Two asks within `fresh` s make one check;
    without an answer the script prints the file as it is."""
    vc = FakeVCenter()
    cookies = SessionCookies(vc.si(), interval=3600, fresh=3600)
    (tmp_path / "nbd").mkdir()
    kept = tmp_path / "nbd" / "cookie"
    cookies.keep(kept)
    script = cookies.script(kept)
    assert "52a01262" not in script
    first = cookie_of(vc)
    cookies.fresh = 0.0
    vc.end()
    done = subprocess.run(["sh", "-c", script], capture_output=True, check=True, timeout=30)
    assert vc.logins == 2 and cookies.renewals == 1
    assert done.stdout.decode() == cookie_of(vc) != first
    checks = cookies.checks
    cookies.fresh = 3600  # a check this recent answers the next ask
    again = subprocess.run(["sh", "-c", script], capture_output=True, check=True, timeout=30)
    assert again.stdout == done.stdout and cookies.checks == checks

    thread = cookies._thread
    assert thread is not None
    shutil.rmtree(tmp_path / "nbd")  # its nbdkit stopped: the thread, its socket go
    thread.join(timeout=10)
    assert not thread.is_alive()
    (tmp_path / "other").mkdir()
    write_secret(tmp_path / "other" / "cookie", "as it is")
    orphan = script.replace(str(kept), str(tmp_path / "other" / "cookie"))
    alone = subprocess.run(["sh", "-c", orphan], capture_output=True, check=True, timeout=30)
    assert alone.stdout == b"as it is"


def test_reads_and_opens_are_retried_by_nbdkit(tmp_path: Path) -> None:
    """The curl plugin's open is an HTTP request carrying the cookie: an NBD connection made
    right after vCenter ended the session meets 401 there, so opens are retried too."""
    server = NbdkitServer(HttpsDiskSource(URL, "c", Path("/ca.pem")))
    try:
        argv = server.argv()
    finally:
        server.stop()
    assert "--filter=retry-request" in argv
    assert {"retry-request-retries=4", "retry-request-delay=2"} <= set(argv)
    assert not any(a.startswith("retry-request-open") for a in argv)  # nbdkit's default: true


def test_an_ended_session_is_logged_in_again_and_every_file_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vc = FakeVCenter()
    cookies = SessionCookies(vc.si(), interval=3600)
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        files.append(tmp_path / name / "cookie")
        cookies.keep(files[-1])
    first = cookie_of(vc)
    assert cookies.check() is False and cookies.renewals == 0  # a live session: nothing to do
    assert [f.read_text() for f in files] == [first, first]

    vc.end()
    with caplog.at_level(logging.WARNING, logger="ferry.vsphere"):
        assert cookies.check() is True
    assert vc.logins == 2 and cookies.renewals == 1
    renewed = cookie_of(vc)
    assert renewed != first
    for f in files:
        assert f.read_text() == renewed and f.stat().st_mode & 0o777 == 0o600
    assert "1 https reader" not in caplog.text and "2 https reader cookie file(s)" in caplog.text
    assert "52a01262" not in caplog.text  # the cookie is never logged


def test_the_thread_renews_and_ends_with_the_last_file(tmp_path: Path) -> None:
    vc = FakeVCenter()
    cookies = SessionCookies(vc.si(), interval=0.05)
    (tmp_path / "nbd").mkdir()
    kept = tmp_path / "nbd" / "cookie"
    cookies.keep(kept)
    first = kept.read_text()
    vc.end()
    deadline = time.monotonic() + 10
    while kept.read_text() == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert vc.logins == 2 and kept.read_text() == cookie_of(vc)
    thread = cookies._thread
    assert thread is not None and thread.is_alive()
    shutil.rmtree(tmp_path / "nbd")  # its nbdkit stopped
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_write_secret_replaces_a_file_with_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "cookie"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_secret(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["cookie"]


def test_the_https_sources_share_one_keeper_with_their_intervals() -> None:
    target = VCenterTarget("vc", 443, "u", "p", cafile=Path("/etc/ca.pem"))
    sources = HttpsSources(target, FakeVCenter().si(), cookie_check=2.5, renew=3)
    assert sources.cookies.interval == 2.5 and sources.renew == 3
    assert "cookies" not in repr(sources)
