"""Estimates shown in the plan (pure): cutover downtime from measured rates and conversion
times, and the downtime budget."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.plan import Action, Change
from engine.model.state import ZERO_RATE, State
from engine.planner.diff.common import CUTOVER_MODES

DEFAULT_THROUGHPUT = 100 * 1024**2  # bytes/s assumed before any copy was measured
CONVERSION_SECONDS = {"windows": 900.0, "linux": 300.0}
BOOT_SECONDS = 60.0
GiB = 1024**3
COPIES = ("volume", "disk_file")  # the kinds of changes that copy a disk's data


@dataclass(frozen=True)
class Rates:
    """What the downtime estimate divides by, in bytes/s (None: measured never: `data` then,
    but zeros at DEFAULT_THROUGHPUT: zero writes do not read the source, whose rate `data` is),
    and the mean seconds of a conversion per guest family ("linux", "windows"), as measured
    from the state's records (`measured`)."""

    data: float = float(DEFAULT_THROUGHPUT)  # data read per second of copying
    zeros: float | None = None  # zeros written onto volumes per second (a lower bound)
    upload: float | None = None  # image bytes uploaded to Glance per second (output: image)
    made: float | None = None  # volume GiB Cinder made from an image, as bytes per second
    conversions: Mapping[str, float] = field(default_factory=dict)


def family(guest_id: str | None) -> str:
    return "windows" if (guest_id or "").startswith("windows") else "linux"


def downtime(vm: DesiredVM, changes: list[Change], rates: Rates | None = None) -> float | None:
    """Estimated cutover downtime in seconds, None when `vm` is not cut over: its final syncs'
    data (volumes or, with output: image, local files) at `rates.data`, the zeros full copies
    write onto volumes not known to read as zeros (Change.zeros) at `rates.zeros` (else
    DEFAULT_THROUGHPUT: zeroing reads nothing from the source), with
    output: image the uploads to Glance (the image changes' bytes) at `rates.upload` and the
    volumes Cinder makes from them (their GiB) at `rates.made`, then the conversion (the
    measured mean per guest family, else a default) and the boot."""
    if vm.mode not in CUTOVER_MODES:
        return None
    rates = rates or Rates()
    moving = [c for c in changes if c.action is not Action.NOOP]
    copies = [c for c in moving if c.kind in COPIES]
    seconds = sum(c.bytes or 0 for c in copies) / rates.data
    seconds += sum(c.zeros or 0 for c in copies) / (rates.zeros or DEFAULT_THROUGHPUT)
    seconds += sum(c.bytes or 0 for c in moving if c.kind == "image") / (rates.upload or rates.data)
    made = sum(_made_bytes(c) for c in moving if c.kind == "image_volume")
    seconds += made / (rates.made or rates.data)
    kind = family(vm.source.guest_id)
    convert = (rates.conversions.get(kind) or CONVERSION_SECONDS[kind]) if vm.convert else 0.0
    return round(seconds + convert + BOOT_SECONDS, 1)


def _made_bytes(change: Change) -> int:
    """The bytes of a volume made from an image: its GiB (Cinder writes the image into it)."""
    if change.action in (Action.READ, Action.UPDATE, Action.DELETE, Action.FORGET):
        return 0  # adopted, relabelled or removed: nothing is made
    size = (change.after or {}).get("size_gib")
    return int(size) * GiB if isinstance(size, int) else 0


def measured(state: State) -> Rates:
    """The rates the state's records measured (Rates' fields; defaults where none did)."""
    return Rates(
        measured_throughput(state),
        measured_zero_rate(state),
        _rate(state, "image", "upload"),
        _rate(state, "image_volume", "made"),
        measured_conversions(state),
    )


def measured_conversions(state: State) -> dict[str, float]:
    """Mean seconds of the conversions recorded so far, per guest family."""
    runs: dict[str, list[float]] = {}
    for record in state.resources.values():
        seconds = record.attributes.get("seconds") if record.kind == "conversion" else None
        if isinstance(seconds, int | float) and seconds > 0:
            runs.setdefault(family(record.attributes.get("guest_id")), []).append(float(seconds))
    return {kind: sum(v) / len(v) for kind, v in runs.items()}


def _syncs(state: State) -> Iterator[dict[str, Any]]:
    """Every recorded sync's last_sync (volumes and, with output: image, local files)."""
    for record in state.resources.values():
        last = (
            record.attributes.get("last_sync") if record.kind in ("volume", "disk_file") else None
        )
        if isinstance(last, dict) and last.get("seconds"):
            yield last


def measured_throughput(state: State) -> float:
    """Bytes/s of data read over every recorded sync's copy seconds (zeros written move no data:
    a sparse disk's must not count); the default before anything was copied."""
    moved = seconds = 0.0
    for last in _syncs(state):
        moved += float(last["read"] if "read" in last else last.get("bytes", 0))
        seconds += float(last["seconds"])
    return moved / seconds if seconds > 0 and moved > 0 else float(DEFAULT_THROUGHPUT)


def measured_zero_rate(state: State) -> float | None:
    """Bytes/s of zeros written over the copy seconds of the volumes' measured zero writes
    (model.state.ZERO_RATE: kept across later deltas), else of the recorded last syncs that
    wrote some (last_sync's bytes minus its data read); None when none did. A lower bound:
    those seconds also read and wrote the syncs' data."""
    kept = _rate(state, "volume", ZERO_RATE)
    if kept is not None:
        return kept
    zeroed = seconds = 0.0
    for last in _syncs(state):
        wrote = float(last.get("bytes", 0)) - float(last.get("read", last.get("bytes", 0)))
        if wrote > 0:
            zeroed += wrote
            seconds += float(last["seconds"])
    return zeroed / seconds if seconds > 0 else None


def _rate(state: State, kind: str, key: str) -> float | None:
    """Bytes/s over the `key` measurements ({"bytes", "seconds"}) of `kind`'s records (the
    executor's: an image's upload, an image volume's making); None when none has one."""
    done = seconds = 0.0
    for record in state.resources.values():
        took = record.attributes.get(key) if record.kind == kind else None
        if isinstance(took, dict) and took.get("seconds") and took.get("bytes"):
            done += float(took["bytes"])
            seconds += float(took["seconds"])
    return done / seconds if seconds > 0 else None


def over_budget(vm: DesiredVM, estimate: float | None) -> tuple[Concern, ...]:
    if estimate is None or vm.max_downtime is None or estimate <= vm.max_downtime:
        return ()
    return (
        Concern(
            ConcernLevel.ERROR,
            "over-downtime-budget",
            f"estimated cutover downtime {estimate:.0f} s exceeds max_downtime {vm.max_downtime} s",
        ),
    )
