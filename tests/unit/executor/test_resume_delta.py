"""An interrupted delta sync continues from its checkpoint (break-it 14 F7: a killed apply's or
coordinator's delta was read again from byte 0): below the checkpoint the volume holds the bytes
of the snapshot the killed delta read (its record's copy_change_id), so what changed since that
snapshot is rewritten first, then the delta's areas from the checkpoint. Anything that makes
that untrue (CBT reset, a tainted record, no checkpoint) gives the whole delta from 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.executor.apply import Applier
from engine.executor.volume_steps import ToCopy
from engine.model.plan import Action, Change
from engine.providers.openstack import volumes
from engine.providers.vsphere.snapshots import DiskInfo
from tests.unit.executor.fakes import one_vm_applier


@pytest.fixture(autouse=True)
def unstamped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The volume carries no `ferry_updated_at` stamp (nothing known of it: the checkpoint is
    trusted, as before)."""
    monkeypatch.setattr(
        "engine.providers.openstack.volumes.seen_if_found", lambda _c, _v: volumes.Seen([], None)
    )


MiB = 1024**2
STORED, KILLED, NOW = "52 aa/10", "52 aa/14", "52 aa/20"
DELTA = [(0, 4 * MiB), (64 * MiB, 4 * MiB), (512 * MiB, 4 * MiB)]  # changed since STORED
SINCE_KILLED = [(MiB, MiB)]  # changed since the killed delta's snapshot
INTERRUPTED = {"volume_id": "v1", "change_id": STORED, "copy": "delta",
               "copied_bytes": 128 * MiB, "copy_change_id": KILLED}  # fmt: skip


@pytest.fixture
def cbt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """CBT's answers: what changed since each changeId (the ones asked, in order)."""
    asked: list[str] = []

    def changed_areas(vm: Any, snapshot: Any, key: int, capacity: int, since: str) -> list:
        asked.append(since)
        return {STORED: DELTA, KILLED: SINCE_KILLED}[since]

    monkeypatch.setattr("engine.executor.volume_steps.changed_areas", changed_areas)
    return asked


def _what(tmp_path: Path, before: dict[str, Any], change_id: str = NOW) -> ToCopy:
    applier: Applier = one_vm_applier(tmp_path, "web01", "replicate")
    change = Change("vm.web01.disk[2000]", "volume", Action.UPDATE, "delta", before, {})
    disk = DiskInfo(2000, 2048 * MiB, "[ds] web01/web01.vmdk", True, change_id)
    return applier._what_to_copy(change, before, None, None, disk)


def test_an_interrupted_delta_resumes_at_its_checkpoint(tmp_path: Path, cbt: list[str]) -> None:
    what = _what(tmp_path, dict(INTERRUPTED))
    assert (what.kind, what.areas, what.start_at) == ("delta", DELTA, 128 * MiB)
    assert (what.rewrite, what.began, what.dst_is_zero) == (SINCE_KILLED, KILLED, False)
    assert "the interrupted delta resumes at 128.0 MiB: first the 1.0 MiB" in what.why
    assert cbt == [STORED, KILLED]


def test_nothing_written_since_resumes_without_a_rewrite(tmp_path: Path, cbt: list[str]) -> None:
    what = _what(tmp_path, dict(INTERRUPTED), change_id=KILLED)
    assert (what.start_at, what.rewrite, what.began) == (128 * MiB, [], KILLED)


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        ({"copy": None}, "a delta that completed (its record says no copy)"),
        ({"copied_bytes": 0}, "no checkpoint yet"),
        ({"copy_change_id": None}, "a record of an older ferry"),
        ({"copy_change_id": "52 bb/3"}, "CBT reset since the killed delta's snapshot"),
    ],
)
def test_otherwise_the_whole_delta_from_0(
    tmp_path: Path, cbt: list[str], changed: dict[str, Any], why: str
) -> None:
    before = {k: v for k, v in {**INTERRUPTED, **changed}.items() if v is not None}
    what = _what(tmp_path, before)
    assert what == ToCopy("delta", DELTA, 0, False), why


def test_a_record_tainted_after_the_plan_is_copied_in_full_not_by_its_delta(
    tmp_path: Path, cbt: list[str]
) -> None:
    """Break-it 12h M1's kind: a saved back-out plan (a delta after the conversion's delete),
    the protection snapshot deleted by hand before the apply: the revert cannot happen, the
    conversion's delete marks the volume tainted, and the delta the plan holds would go on
    top of the unconfirmed guest's writes, then READY. A tainted record is never a delta or a
    resume: a full copy from 0 onto the volume's bytes (not assumed zero)."""
    why = "its protection snapshot snap-0 is gone and what the unconfirmed server wrote stays"
    what = _what(tmp_path, {**INTERRUPTED, "tainted": why})
    assert (what.kind, what.areas, what.start_at, what.dst_is_zero) == ("full", None, 0, False)
    assert what.why == (f"the volume is marked tainted ({why}): a full copy, not the planned delta")
    assert cbt == []
