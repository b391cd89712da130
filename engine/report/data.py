"""The report's facts, gathered from recorded state and the apply event logs (pure: the caller
reads the files)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.addresses import Address
from engine.model.state import ResourceRecord

CONVERSION_KINDS = ("volume", "conversion")  # nodes that hold a conversion-host slot


@dataclass
class Sync:
    address: str
    kind: str  # full | delta
    bytes: int
    seconds: float
    at: float
    sha256: str | None = None
    verified: str | None = None  # what the sha256 covers: whole disk | changed areas

    @property
    def throughput(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VMReport:
    name: str
    target: str | None = None
    mode: str | None = None
    concerns: list[str] = field(default_factory=list)
    disks: list[dict[str, Any]] = field(default_factory=list)
    syncs: list[Sync] = field(default_factory=list)
    ports: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] | None = None
    conversion_seconds: float | None = None
    downtime_seconds: float | None = None  # source off → server ACTIVE, as measured
    source_off_since: float | None = None  # ferry powered the source off; no server yet


@dataclass(frozen=True)
class Bar:
    """One node of the apply timeline, on a lane."""

    address: str
    kind: str
    lane: str
    start: float
    end: float
    outcome: str


@dataclass
class Report:
    vms: list[VMReport]
    timeline: list[Bar]
    applies: int


def collect(records: Mapping[str, ResourceRecord], logs: list[list[dict[str, Any]]]) -> Report:
    """Per VM its recorded objects and sync history; the last apply's timeline."""
    vms: dict[str, VMReport] = {}
    for address, record in sorted(records.items()):
        parsed = Address.parse(address)
        if parsed.kind != "vm":
            continue
        vm = vms.setdefault(parsed.name, VMReport(parsed.name))
        _record(vm, address, record)
    off: dict[str, float] = {}  # across applies: downtime runs from the first power-off
    for events in logs:
        _history(vms, events, off)
    for vm in vms.values():
        _measured(vm)
    timeline = lanes(next((e for e in reversed(logs) if _has_nodes(e)), []))
    touched = [v for v in vms.values() if v.disks or v.syncs or v.ports or v.server]
    return Report(sorted(touched, key=lambda v: v.name), timeline, len(logs))


def _record(vm: VMReport, address: str, record: ResourceRecord) -> None:
    attrs = dict(record.attributes)
    kind = record.kind
    if kind == "volume":
        vm.disks.append({"address": address, "status": record.status.value, **attrs})
    elif kind == "port":
        vm.ports.append({"address": address, **attrs})
    elif kind == "server":
        vm.server = {"status": record.status.value, **attrs}
    elif kind == "conversion":
        if attrs.get("seconds"):
            vm.conversion_seconds = float(attrs["seconds"])
        if attrs.get("powered_off_at"):
            vm.source_off_since = float(attrs["powered_off_at"])


def _measured(vm: VMReport) -> None:
    """The server's record holds when ferry first powered the source off and when the server
    was ACTIVE: that is the downtime (over the events' when both are there); a source left off
    with no server is only that."""
    server = vm.server or {}
    if server.get("source_off_at") and server.get("at"):
        vm.downtime_seconds = round(float(server["at"]) - float(server["source_off_at"]), 1)
    if server:
        vm.source_off_since = None


def _history(
    vms: dict[str, VMReport], events: Iterable[dict[str, Any]], off: dict[str, float]
) -> None:
    for event in events:
        kind = event.get("event")
        if kind == "apply_start":
            for v in event.get("vms") or []:
                vm = vms.setdefault(v["name"], VMReport(v["name"]))
                vm.target, vm.mode, vm.concerns = v.get("target"), v.get("mode"), v["concerns"]
        elif kind == "synced":
            vm = vms.setdefault(event["vm"], VMReport(event["vm"]))
            vm.syncs.append(
                Sync(
                    event["address"],
                    event["kind"],
                    int(event["bytes"]),
                    float(event["seconds"]),
                    float(event["ts"]),
                    event.get("sha256"),
                    event.get("verified"),
                )
            )
        elif kind == "source_off":  # `since`: the first power-off, maybe an earlier apply's
            off.setdefault(event["vm"], float(event.get("since") or event["ts"]))
        elif kind == "source_on":
            off.pop(event["vm"], None)
        elif kind == "node_end" and event.get("outcome") == "done":
            address = Address.parse(event["address"])
            if address.part == "server" and address.name in off:
                vm = vms.setdefault(address.name, VMReport(address.name))
                vm.downtime_seconds = round(float(event["ts"]) - off.pop(address.name), 1)


def _has_nodes(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "node_start" for e in events)


def lanes(events: list[dict[str, Any]]) -> list[Bar]:
    """Nodes as bars: copies and conversions on conversion-host slot lanes ('slot 1', ...), the
    rest on control lanes; each lane holds bars that do not overlap (first fit in time order)."""
    started: dict[str, tuple[float, str]] = {}
    spans: list[tuple[float, float, str, str, str]] = []
    for event in events:
        if event.get("event") == "node_start":
            started[event["address"]] = (float(event["ts"]), event.get("kind", ""))
        elif event.get("event") == "node_end" and event["address"] in started:
            start, kind = started.pop(event["address"])
            spans.append((start, float(event["ts"]), event["address"], kind, event["outcome"]))
    last = max((e["ts"] for e in events if "ts" in e), default=0.0)
    spans += [(s, float(last), a, k, "killed") for a, (s, k) in started.items()]
    bars: list[Bar] = []
    ends: dict[str, list[float]] = {"slot": [], "control": []}
    for start, end, address, kind, outcome in sorted(spans):
        group = "slot" if kind in CONVERSION_KINDS else "control"
        free = next((i for i, e in enumerate(ends[group]) if e <= start), None)
        if free is None:
            ends[group].append(end)
            free = len(ends[group]) - 1
        else:
            ends[group][free] = end
        bars.append(Bar(address, kind, f"{group} {free + 1}", start, end, outcome))
    return bars
