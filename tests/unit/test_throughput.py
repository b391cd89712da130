"""Measured throughput (the plan's downtime estimate divides by it) is data read per second of
copying: zeros written to a sparse disk's volume move no data and must not inflate it."""

from __future__ import annotations

from dataclasses import replace

from engine.model.desired import DesiredVM, FlavorChoice
from engine.model.observed import SourceVM
from engine.model.plan import Action, Change
from engine.model.state import ResourceRecord, State, Status
from engine.planner.diff.estimates import downtime, measured_throughput, measured_zero_rate

MiB, GiB = 1024**2, 1024**3


def _state(last: dict[str, float]) -> State:
    record = ResourceRecord("vm.web01.disk[2000]", "volume", Status.READY, {"last_sync": last})
    return State(1, "l", 1, {record.address: record})


def test_zeros_written_do_not_count_as_data_moved() -> None:
    sparse = {"bytes": 20 * GiB, "read": 40 * MiB, "seconds": 2.0}
    assert measured_throughput(_state(sparse)) == 20 * MiB


def test_a_record_from_before_read_was_recorded_uses_its_bytes() -> None:
    assert measured_throughput(_state({"bytes": 40 * MiB, "seconds": 2.0})) == 20 * MiB


def test_the_zero_rate_is_zeros_written_over_the_seconds_of_syncs_that_wrote_some() -> None:
    """Break-it 12n M2: a lower bound (those seconds also moved the syncs' data)."""
    sparse = {"bytes": 2 * GiB, "read": 48 * MiB, "seconds": 20.0}
    assert measured_zero_rate(_state(sparse)) == (2 * GiB - 48 * MiB) / 20.0
    assert measured_zero_rate(_state({"bytes": 40 * MiB, "read": 40 * MiB, "seconds": 2.0})) is None
    assert measured_zero_rate(_state({"bytes": 40 * MiB, "seconds": 2.0})) is None  # unknown


def _web01() -> DesiredVM:
    source = SourceVM(
        "vm-1", "web01", "u", None, None, None, "debian12_64Guest", None, None, 2, 4096,
        "poweredOff", None, True, False, (), (), (),
    )  # fmt: skip
    flavor = FlavorChoice(None, False, "")
    return DesiredVM("web01", source, "cutover", "web01", flavor, (), (), convert=False)


def _cutover(changes: list[Change]) -> float | None:
    return downtime(_web01(), changes, 10 * MiB, None, 100 * MiB)


def test_the_downtime_counts_a_full_copys_zeros_at_the_zero_rate() -> None:
    """Break-it 12n M2: 100 MiB to read and ~7.9 GiB of holes written as zeros onto the volume's
    older bytes: 10 s of data + 81 s of zeros + 60 s of boot (the zeros were not counted)."""
    full = Change("vm.web01.disk[2000]", "volume", Action.UPDATE, "full", {}, {}, 100 * MiB)
    zeros = replace(full, zeros=8 * GiB - 100 * MiB)
    assert _cutover([full]) == 70.0
    assert _cutover([zeros]) == round(10 + (8 * GiB - 100 * MiB) / (100 * MiB) + 60, 1)
    assert downtime(_web01(), [zeros], 10 * MiB) == round((8 * GiB) / (10 * MiB) + 60, 1)
