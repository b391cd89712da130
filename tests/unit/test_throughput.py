"""Measured throughput (the plan's downtime estimate divides by it) is data read per second of
copying: zeros written to a sparse disk's volume move no data and must not inflate it."""

from __future__ import annotations

from dataclasses import replace

from engine.model.desired import DesiredVM, FlavorChoice
from engine.model.observed import SourceVM
from engine.model.plan import Action, Change
from engine.model.state import ZERO_RATE, ResourceRecord, State, Status, zero_rate
from engine.planner.diff.estimates import (
    Rates,
    downtime,
    measured,
    measured_throughput,
    measured_zero_rate,
)

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
    return downtime(_web01(), changes, Rates(10 * MiB, 100 * MiB))


def test_the_downtime_counts_a_full_copys_zeros_at_the_zero_rate() -> None:
    """Break-it 12n M2: 100 MiB to read and ~7.9 GiB of holes written as zeros onto the volume's
    older bytes: 10 s of data + 81 s of zeros + 60 s of boot (the zeros were not counted)."""
    full = Change("vm.web01.disk[2000]", "volume", Action.UPDATE, "full", {}, {}, 100 * MiB)
    zeros = replace(full, zeros=8 * GiB - 100 * MiB)
    assert _cutover([full]) == 70.0
    assert _cutover([zeros]) == round(10 + (8 * GiB - 100 * MiB) / (100 * MiB) + 60, 1)
    # never measured: zeros at the assumed 100 MiB/s, not the source's read rate (break-it 12o
    # M1: 622 s estimated at 3 MiB/s of reads, 15.5 s measured)
    unmeasured = downtime(_web01(), [zeros], Rates(10 * MiB))
    assert unmeasured == round(10 + (8 * GiB - 100 * MiB) / (100 * MiB) + 60, 1)


def test_a_measured_zero_rate_outlives_later_deltas() -> None:
    """Break-it 12o M1: the zero rate came from each volume's last sync only; one delta later
    it was gone. Kept in the record (ZERO_RATE) from the last sync that zeroed enough."""
    assert zero_rate(10 * MiB, 1.0) is None  # too few zeros to measure
    kept = zero_rate(GiB, 4.0)
    assert kept == {"bytes": GiB, "seconds": 4.0}
    delta = {"kind": "delta", "bytes": 4 * MiB, "read": 4 * MiB, "seconds": 1.0}
    record = ResourceRecord(
        "vm.web01.disk[2000]", "volume", Status.READY, {"last_sync": delta, ZERO_RATE: kept}
    )
    assert measured_zero_rate(State(1, "l", 1, {record.address: record})) == GiB / 4


def test_an_image_mode_downtime_counts_files_uploads_and_volumes_made() -> None:
    """output: image: the final sync into local files, the uploads to Glance and the volumes
    Cinder makes from the images all happen with the source off (the estimate counted only
    the conversion and the boot: 360 s for 300 MiB to copy and 1 GiB to upload)."""
    files = Change("vm.web01.disk[2000]", "disk_file", Action.UPDATE, "delta", {}, {}, 300 * MiB)
    image = Change("vm.web01.image[2000]", "image", Action.CREATE, "upload", None, {}, GiB)
    made = Change(
        "vm.web01.volume[2000]", "image_volume", Action.CREATE, "made", None, {"size_gib": 2}
    )
    rates = Rates(10 * MiB, upload=50 * MiB, made=200 * MiB)
    assert downtime(_web01(), [files, image, made], rates) == 30 + 20.5 + 10.2 + 60
    adopted = replace(made, action=Action.READ)
    assert downtime(_web01(), [adopted], rates) == 60.0


def test_the_rates_are_measured_from_the_records() -> None:
    records = {
        "vm.a.disk[2000]": ResourceRecord(
            "vm.a.disk[2000]",
            "disk_file",
            Status.READY,
            {"last_sync": {"bytes": 40 * MiB, "read": 40 * MiB, "seconds": 4.0}},
        ),
        "vm.a.image[2000]": ResourceRecord(
            "vm.a.image[2000]",
            "image",
            Status.READY,
            {"upload": {"bytes": 60 * MiB, "seconds": 2.0}},
        ),
        "vm.a.volume[2000]": ResourceRecord(
            "vm.a.volume[2000]",
            "image_volume",
            Status.READY,
            {"made": {"bytes": 2 * GiB, "seconds": 8.0}},
        ),
    }
    rates = measured(State(1, "l", 1, records))
    assert (rates.data, rates.upload, rates.made) == (10 * MiB, 30 * MiB, GiB / 4)
    assert rates.zeros is None and rates.conversions == {}
    assert measured(State(1, "l", 1, {})) == Rates()
