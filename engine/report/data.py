"""The report's facts, gathered from recorded state and the apply event logs (pure: the caller
reads the files)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.addresses import Address
from engine.model.state import RECORDED_HOST, ResourceRecord

CONVERSION_KINDS = ("volume", "conversion")  # nodes that hold a conversion-host slot
CUTOVER_MODES = ("cutover", "cold")


@dataclass
class Sync:
    address: str
    kind: str  # full | delta
    bytes: int  # read + zeroed: the disk's bytes this sync wrote
    seconds: float  # the copy's own seconds
    at: float
    sha256: str | None = None
    verified: str | None = None  # what the sha256 covers: whole disk | changed areas
    read: int | None = None  # data read and written (None: an event from before it was kept)
    skipped: int = 0  # holes and zeros left alone: no transfer
    step_seconds: float | None = None  # the step's wall time (None: not recorded)
    volume_id: str | None = None  # the volume written (None: not recorded)
    deleted: bool = False  # its volume was deleted later (destroy, or a replace)
    host: str | None = None  # the conversion host that wrote it (None: not recorded)

    @property
    def moved(self) -> int:
        """Bytes of data actually moved: read (zeros written and holes skipped are not)."""
        return self.bytes if self.read is None else self.read

    @property
    def throughput(self) -> float:
        """Bytes of data moved per second of copying (holes and zeros count for nothing); 0.0
        for an event from before the data read was kept (its bytes count holes written)."""
        if self.read is None or self.seconds <= 0:
            return 0.0
        return self.read / self.seconds


@dataclass(frozen=True)
class Verify:
    """A verify-only step (`apply --verify` over a replica in sync): the volume compared whole
    with a new snapshot and found equal, nothing copied. `seconds` is the compare's (None: an
    event from before it was kept), `volume_id` the volume compared (None: likewise)."""

    address: str
    at: float
    sha256: str | None
    seconds: float | None = None
    volume_id: str | None = None


@dataclass(frozen=True)
class ApplyRun:
    """One recorded apply: when it began (epoch s), its wall seconds (None: it ended without
    an apply_end, killed), its outcome (complete | failed | stopped | blocked | killed), the
    counts of steps done/failed/skipped, each failed step as 'address: error', and the bytes
    its copies read from the source (stopped copies included, up to their stop)."""

    started: float
    seconds: float | None
    outcome: str
    done: int
    failed: int
    skipped: int
    errors: tuple[str, ...] = ()
    read: int = 0


@dataclass
class VMReport:
    name: str
    target: str | None = None
    mode: str | None = None
    concerns: list[str] = field(default_factory=list)
    disks: list[dict[str, Any]] = field(default_factory=list)
    syncs: list[Sync] = field(default_factory=list)
    verifies: list[Verify] = field(default_factory=list)  # verify-only steps, oldest first
    ports: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = (
        None  # the conversion record: status, tool (None: no conversion)
    )
    failures: list[str] = field(default_factory=list)  # failed steps of its last apply
    conversion_seconds: float | None = None
    downtime_seconds: float | None = None  # source off → server ACTIVE, as measured
    source_off_since: float | None = None  # ferry powered the source off; no server yet
    # seconds the source was off in each cutover attempt that failed and powered it back on
    # (break-it 12o M3: three power-offs, the report showed only the last one's downtime)
    outages: list[float] = field(default_factory=list)
    # each re-placement an apply made (its conversion host gone): 'HH:MM:SS UTC: re-placed from
    # conversion host A to B: why' or '...: not re-placed from A: why', oldest first
    replacements: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Bar:
    """One node of the apply timeline, on a lane; `host` the conversion host a copy or
    conversion ran on ("" for the coordinator's control lanes, or not recorded)."""

    address: str
    kind: str
    lane: str
    start: float
    end: float
    outcome: str
    host: str = ""


@dataclass(frozen=True)
class HostTotal:
    """One conversion host's copies over every recorded apply: the VMs it wrote, the bytes of
    data it moved (read from the source and written: holes skipped and zeros written count for
    nothing), its seconds of copying (the union of its copies' intervals: copies at once count
    once) and so its throughput in bytes of data per second."""

    host: str
    vms: int
    moved: int
    seconds: float
    copies: int

    @property
    def throughput(self) -> float:
        """Bytes of data moved per second the host was copying (0.0: no time measured)."""
        return self.moved / self.seconds if self.seconds > 0 else 0.0


UNRECORDED_HOST = "(host not recorded)"


@dataclass
class Report:
    vms: list[VMReport]
    timeline: list[Bar]
    applies: int
    runs: list[ApplyRun] = field(default_factory=list)
    hosts: list[HostTotal] = field(default_factory=list)


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
    runs = [run(events) for events in logs if events]
    ordered = sorted(touched, key=lambda v: v.name)
    return Report(ordered, timeline, len(logs), runs, host_totals(ordered))


def host_totals(vms: Iterable[VMReport]) -> list[HostTotal]:
    """Per conversion host (by name; syncs with no host recorded under UNRECORDED_HOST, last)
    its VMs, data moved and seconds of copying, over the syncs with their data read recorded
    (an older event's bytes count holes written, not data)."""
    per: dict[str, list[tuple[str, Sync]]] = {}
    for vm in vms:
        for sync in vm.syncs:
            if sync.read is not None:
                per.setdefault(sync.host or UNRECORDED_HOST, []).append((vm.name, sync))
    totals = [
        HostTotal(
            host,
            len({name for name, _ in syncs}),
            sum(s.moved for _, s in syncs),
            round(busy([(s.at - s.seconds, s.at) for _, s in syncs]), 3),
            len(syncs),
        )
        for host, syncs in per.items()
    ]
    return sorted(totals, key=lambda t: (t.host == UNRECORDED_HOST, t.host))


def busy(spans: Iterable[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans: overlapping spans count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def of_state(logs: list[list[dict[str, Any]]], identity: str) -> list[list[dict[str, Any]]]:
    """The apply logs of the state `identity` (StateLocation.identity): PostgreSQL states share
    one log_dir, so a log whose apply_start names another state is left out (one naming none,
    from an older ferry, is kept)."""
    return [events for events in logs if _state_of(events) in (None, identity)]


def _state_of(events: list[dict[str, Any]]) -> str | None:
    start = next((e for e in events if e.get("event") == "apply_start"), None)
    return None if start is None or not start.get("state") else str(start["state"])


def run(events: list[dict[str, Any]]) -> ApplyRun:
    """An apply's outcome from its events: apply_end's counts, 'stopped' after a stop signal,
    'killed' with no apply_end (then counted from node_end)."""
    ends = [e for e in events if e.get("event") == "node_end"]
    errors = tuple(
        f"{e['address']}: {e.get('error') or 'failed'}" for e in ends if e.get("outcome") != "done"
    )
    end = next((e for e in events if e.get("event") == "apply_end"), None)
    started = float(events[0].get("ts", 0.0))
    copies = ("synced", "copy_stopped")  # a killed apply's: those it recorded
    read = sum(int(e.get("read") or 0) for e in events if e.get("event") in copies)
    if end is None:
        done = sum(e.get("outcome") == "done" for e in ends)
        ended = {e["address"] for e in ends}
        running = tuple(
            f"{e['address']}: running when the apply ended unrecorded (killed)"
            for e in events
            if e.get("event") == "node_start" and e["address"] not in ended
        )
        return ApplyRun(started, None, "killed", done, len(errors), 0, errors + running, read)
    stopped = any(e.get("event") == "stopping" for e in events)
    outcome = (
        "stopped"
        if stopped
        else "failed"
        if int(end.get("failed", 0))
        else "blocked"
        if int(end.get("blocked", 0))
        else "complete"
    )
    done, failed, skipped = (int(end.get(k, 0)) for k in ("done", "failed", "skipped"))
    read = int(end.get("bytes_read", read))
    seconds = float(end.get("seconds", 0.0))
    return ApplyRun(started, seconds, outcome, done, failed, skipped, errors, read)


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
        vm.conversion = {
            "status": record.status.value,
            "tool": attrs.get("tool"),
            "epochs": dict(attrs.get("epochs") or {}),  # disk key → content epoch converted
            "host": attrs.get(RECORDED_HOST),  # where it converted (None: not recorded)
        }
        if attrs.get("seconds"):
            vm.conversion_seconds = float(attrs["seconds"])
        if attrs.get("powered_off_at"):
            vm.source_off_since = float(attrs["powered_off_at"])


def hosts_of(vm: VMReport) -> list[str]:
    """The conversion hosts that wrote the VM's recorded volumes or converted it, by name."""
    named = [d.get(RECORDED_HOST) for d in vm.disks] + [(vm.conversion or {}).get("host")]
    return sorted({str(h) for h in named if h})


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
                vm.failures = []  # what its last apply left failed
        elif kind in ("node_start", "node_end"):
            _node(vms, event, off)
        elif kind == "synced":
            vm = vms.setdefault(event["vm"], VMReport(event["vm"]))
            vm.syncs.append(_sync(event))
        elif kind == "verified":
            vm = vms.setdefault(event["vm"], VMReport(event["vm"]))
            seconds = event.get("seconds")
            vm.verifies.append(
                Verify(
                    event["address"],
                    float(event["ts"]),
                    event.get("sha256"),
                    None if seconds is None else float(seconds),
                    event.get("volume_id"),
                )
            )
        elif kind == "replaced":
            vm = vms.setdefault(event["vm"], VMReport(event["vm"]))
            vm.replacements.append(_replacement(event))
        elif kind == "source_off":  # `since`: the first power-off, maybe an earlier apply's
            off.setdefault(event["vm"], float(event.get("since") or event["ts"]))
        elif kind == "source_on":
            since = off.pop(event["vm"], None)
            if since is not None:
                vm = vms.setdefault(event["vm"], VMReport(event["vm"]))
                vm.outages.append(round(float(event["ts"]) - since, 1))


def _replacement(event: dict[str, Any]) -> str:
    """A `replaced` event (the apply re-placed a VM whose conversion host was gone: `placed`
    the plan's host, `host` the new one or None, `reason`) as the report says it."""
    at = time.strftime("%H:%M:%S UTC", time.gmtime(float(event["ts"])))
    placed, host, why = event.get("placed"), event.get("host"), event.get("reason") or ""
    if host:
        return f"{at}: re-placed from conversion host {placed} to {host}: {why}"
    return f"{at}: not re-placed from conversion host {placed}: {why}"


def _sync(event: dict[str, Any]) -> Sync:
    return Sync(
        event["address"],
        event["kind"],
        int(event["bytes"]),
        float(event["seconds"]),
        float(event["ts"]),
        event.get("sha256"),
        event.get("verified"),
        event.get("read"),
        int(event.get("skipped") or 0),
        event.get("step_seconds"),
        event.get("volume_id"),
        host=event.get("host"),
    )


def _node(vms: dict[str, VMReport], event: dict[str, Any], off: dict[str, float]) -> None:
    """A step's start or end: a delete's start marks the syncs so far of its address as of a
    deleted volume; a failed end is the VM's failure; a server's end measures the downtime."""
    address = Address.parse(event["address"])
    if address.kind != "vm":
        return
    if event["event"] == "node_start":
        if event.get("action") in ("delete", "forget"):
            for sync in vms[address.name].syncs if address.name in vms else []:
                sync.deleted |= sync.address == event["address"]
        return
    vm = vms.setdefault(address.name, VMReport(address.name))
    if event.get("outcome") != "done":
        vm.failures.append(f"{event['address']}: {event.get('error') or 'failed'}")
    elif address.part == "server" and address.name in off:
        vm.downtime_seconds = round(float(event["ts"]) - off.pop(address.name), 1)


def unfinished_cutover(vm: VMReport) -> str | None:
    """A cutover-mode VM with no server ACTIVE that a cutover began for (its conversion record,
    a source ferry powered off, or a failed step): what is done and what is not; else None."""
    server = vm.server or {}
    if vm.mode not in CUTOVER_MODES or server.get("status") == "ready":
        return None
    conversion = vm.conversion or {}
    if conversion.get("status") == "ready":
        return "cutover not finished: the guest is converted but no server runs yet"
    if conversion:
        return "cutover not finished: the conversion did not complete"
    if vm.source_off_since or vm.failures:
        return "cutover not finished: no server yet"
    return None


def _has_nodes(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "node_start" for e in events)


def lanes(events: list[dict[str, Any]]) -> list[Bar]:
    """Nodes as bars: copies and conversions on their conversion host's slot lanes ('slot 1',
    ... per host: node_start's `host`, one lane group per host), the rest on control lanes;
    each lane holds bars that do not overlap (first fit in time order)."""
    started: dict[str, tuple[float, str, str]] = {}
    spans: list[tuple[float, float, str, str, str, str]] = []
    for event in events:
        if event.get("event") == "node_start":
            kind = event.get("kind", "")
            host = str(event.get("host") or "") if kind in CONVERSION_KINDS else ""
            started[event["address"]] = (float(event["ts"]), kind, host)
        elif event.get("event") == "node_end" and event["address"] in started:
            start, kind, host = started.pop(event["address"])
            spans.append(
                (start, float(event["ts"]), event["address"], kind, event["outcome"], host)
            )
    last = max((e["ts"] for e in events if "ts" in e), default=0.0)
    spans += [(s, float(last), a, k, "killed", h) for a, (s, k, h) in started.items()]
    bars: list[Bar] = []
    ends: dict[tuple[str, str], list[float]] = {}
    for start, end, address, kind, outcome, host in sorted(spans):
        group = "slot" if kind in CONVERSION_KINDS else "control"
        free_at = ends.setdefault((host, group), [])
        free = next((i for i, e in enumerate(free_at) if e <= start), None)
        if free is None:
            free_at.append(end)
            free = len(free_at) - 1
        else:
            free_at[free] = end
        bars.append(Bar(address, kind, f"{group} {free + 1}", start, end, outcome, host))
    return bars
