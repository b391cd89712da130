"""Shared fixtures. The lab is started once per test session (in a temporary directory, so a
developer's own lab in ./state/lab is untouched) and stopped at the end.

FERRY_TEST_LAB_DIR=<dir> runs the tests against an already running lab instead (a developer's
shortcut while iterating; it is neither started nor stopped). CI never sets it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.lab.lab import Lab
from engine.proc import live_processes
from engine.providers.vsphere.session import session


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.environ.get("FERRY_TEST_LAB_DIR"):
        yield Lab(Path(os.environ["FERRY_TEST_LAB_DIR"]))
        return
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.up()
    records = lab.processes()
    try:
        yield lab
    finally:
        lab.down()
        groups = {r.pid for r in records}
        leftovers = [p for p in live_processes() if p.pgid in groups or p.sid in groups]
        assert not leftovers, f"lab down left processes behind: {leftovers}"


@pytest.fixture(scope="session")
def si(lab: Lab) -> Iterator[Any]:
    with session(lab.vcenter_target()) as service_instance:
        yield service_instance
