"""A snapshot of ferry's removed outside ferry during an apply (an admin's "Delete all", a
snapshot-hygiene script): removing it is a no-op that says so, not a traceback (break-it 15:
the cleanup raised ManagedObjectNotFound, typer failed on top of it, no summary, no apply_end).
A fake snapshot object (pure unit test)."""

from __future__ import annotations

from typing import Any

from pyVmomi import vmodl

from engine.providers.vsphere.snapshots import remove_snapshot


class GoneSnapshot:
    _moId = "snapshot-182"  # noqa: N815 (pyVmomi's attribute name)

    def RemoveSnapshot_Task(self, **_: Any) -> Any:  # noqa: N802 (vSphere's method name)
        raise vmodl.fault.ManagedObjectNotFound()


def test_a_snapshot_already_gone_is_not_an_error() -> None:
    assert remove_snapshot(None, GoneSnapshot()) is False
