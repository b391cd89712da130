"""Estimates shown in the plan (pure): cutover downtime from measured throughput and conversion
times, and the downtime budget."""

from __future__ import annotations

from collections.abc import Mapping

from engine.model.desired import Concern, ConcernLevel, DesiredVM
from engine.model.plan import Action, Change
from engine.model.state import State
from engine.planner.diff.common import CUTOVER_MODES

DEFAULT_THROUGHPUT = 100 * 1024**2  # bytes/s assumed before any copy was measured
CONVERSION_SECONDS = {"windows": 900.0, "linux": 300.0}
BOOT_SECONDS = 60.0


def family(guest_id: str | None) -> str:
    return "windows" if (guest_id or "").startswith("windows") else "linux"


def downtime(
    vm: DesiredVM,
    changes: list[Change],
    throughput: float,
    conversions: Mapping[str, float] | None = None,
    zero_rate: float | None = None,
) -> float | None:
    """Estimated cutover downtime in seconds: final delta / throughput (bytes/s) + the zeros
    full copies write onto volumes not known to read as zeros (Change.zeros) / `zero_rate`
    (bytes/s; None: `throughput`) + conversion (measured mean per guest family, else a
    default) + boot. None when `vm` is not cut over."""
    if vm.mode not in CUTOVER_MODES:
        return None
    moving = [c for c in changes if c.kind == "volume" and c.action is not Action.NOOP]
    delta = sum(c.bytes or 0 for c in moving)
    zeros = sum(c.zeros or 0 for c in moving)
    kind = family(vm.source.guest_id)
    measured = (conversions or {}).get(kind)
    convert = (measured or CONVERSION_SECONDS[kind]) if vm.convert else 0.0
    zeroing = zeros / (zero_rate or throughput)
    return round(delta / throughput + zeroing + convert + BOOT_SECONDS, 1)


def measured_conversions(state: State) -> dict[str, float]:
    """Mean seconds of the conversions recorded so far, per guest family."""
    runs: dict[str, list[float]] = {}
    for record in state.resources.values():
        seconds = record.attributes.get("seconds") if record.kind == "conversion" else None
        if isinstance(seconds, int | float) and seconds > 0:
            runs.setdefault(family(record.attributes.get("guest_id")), []).append(float(seconds))
    return {kind: sum(v) / len(v) for kind, v in runs.items()}


def measured_throughput(state: State) -> float:
    """Bytes/s of data read over every recorded sync's copy seconds (zeros written move no data:
    a sparse disk's must not count); the default before anything was copied."""
    moved = seconds = 0.0
    for record in state.resources.values():
        last = record.attributes.get("last_sync") if record.kind == "volume" else None
        if isinstance(last, dict) and last.get("seconds"):
            moved += float(last["read"] if "read" in last else last.get("bytes", 0))
            seconds += float(last["seconds"])
    return moved / seconds if seconds > 0 and moved > 0 else float(DEFAULT_THROUGHPUT)


def measured_zero_rate(state: State) -> float | None:
    """Bytes/s of zeros written over the copy seconds of every recorded sync that wrote some
    (last_sync's bytes minus its data read); None when none did. A lower bound: those seconds
    also read and wrote the syncs' data, so a plan never counts zeros faster than seen."""
    zeroed = seconds = 0.0
    for record in state.resources.values():
        last = record.attributes.get("last_sync") if record.kind == "volume" else None
        if not isinstance(last, dict) or not last.get("seconds") or "read" not in last:
            continue
        wrote = float(last.get("bytes", 0)) - float(last["read"])
        if wrote > 0:
            zeroed += wrote
            seconds += float(last["seconds"])
    return zeroed / seconds if seconds > 0 else None


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
