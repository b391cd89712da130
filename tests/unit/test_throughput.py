"""Measured throughput (the plan's downtime estimate divides by it) is data read per second of
copying: zeros written to a sparse disk's volume move no data and must not inflate it."""

from __future__ import annotations

from engine.model.state import ResourceRecord, State, Status
from engine.planner.diff.estimates import measured_throughput

MiB, GiB = 1024**2, 1024**3


def _state(last: dict[str, float]) -> State:
    record = ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, {"last_sync": last})
    return State(1, "l", 1, {record.address: record})


def test_zeros_written_do_not_count_as_data_moved() -> None:
    sparse = {"bytes": 20 * GiB, "read": 40 * MiB, "seconds": 2.0}
    assert measured_throughput(_state(sparse)) == 20 * MiB


def test_a_record_from_before_read_was_recorded_uses_its_bytes() -> None:
    assert measured_throughput(_state({"bytes": 40 * MiB, "seconds": 2.0})) == 20 * MiB
