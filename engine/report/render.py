"""The report as HTML (self-contained: inline SVG and CSS) or Markdown (SVGs beside it)."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from engine.addresses import Address
from engine.model.state import VERIFIED_AREAS, VERIFIED_WHOLE
from engine.planner.diff.cutover import source_left_off
from engine.report import svg
from engine.report.data import Report, Sync, Verify, VMReport, hosts_of, unfinished_cutover
from engine.units import duration, human, rate

CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}h2{margin-top:1.6em}.concern{color:#8a5a00}code{font-size:12px}"""


def _seconds(value: float | None) -> str:
    return "—" if value is None else duration(value)


def _sync_text(sync: Sync) -> str:
    """'full 42.0 MiB in 16.0 s (20.0 GiB of holes skipped)': data moved, the step's wall time
    (the copy's when the step's was not recorded)."""
    took = sync.step_seconds if sync.step_seconds is not None else sync.seconds
    text = f"{sync.kind} {human(sync.moved)} in {duration(took)}"
    return f"{text} ({human(sync.skipped)} of holes skipped)" if sync.skipped else text


def _verify_text(check: Verify) -> str:
    """'verify: equal, nothing copied, in 2.1 s': a verify-only step in a disk's history."""
    took = f" in {duration(check.seconds)}" if check.seconds is not None else ""
    return f"verify: equal, nothing copied{took}"


def _of_volume(disk: dict[str, Any], address: str, volume_id: str | None) -> bool:
    """Whether a sync or verify of `address` on `volume_id` (None: not recorded) was of the
    disk's recorded volume."""
    return address == disk["address"] and (volume_id is None or volume_id == disk.get("volume_id"))


def current(disk: dict[str, Any], syncs: list[Sync]) -> list[Sync]:
    """The syncs of the disk's recorded volume: not those of a volume deleted since (destroy,
    a replaced volume), nor of another volume id."""
    return [s for s in syncs if not s.deleted and _of_volume(disk, s.address, s.volume_id)]


def _disk_rows(vm: VMReport) -> list[list[str]]:
    rows = []
    for disk in vm.disks:
        last = disk.get("last_sync") or {}
        syncs = current(disk, vm.syncs)
        checks = [v for v in vm.verifies if _of_volume(disk, v.address, v.volume_id)]
        if syncs:  # a verify of an earlier volume at this address is not this one's
            checks = [v for v in checks if v.at >= syncs[0].at]
        timed = [(s.at, _sync_text(s)) for s in syncs] + [(v.at, _verify_text(v)) for v in checks]
        history = ", ".join(text for _, text in sorted(timed, key=lambda item: item[0]))
        rows.append(
            [
                disk["address"],
                f"{disk.get('size_gib', '?')} GiB",
                str(disk.get("volume_id", "")),
                _converted(vm, disk),
                history or (f"{last['kind']} {human(int(last.get('bytes', 0)))}" if last else "—"),
                _digest(last, syncs[-1] if syncs else None, disk.get("last_verify") or {}),
            ]
        )
    return rows


def _converted(vm: VMReport, disk: dict[str, Any]) -> str:
    """'yes (virt-v2v-in-place)' when a conversion tool ran on the volume's content (a server
    booted from it, or the conversion recorded its epoch), 'no (convert: false)' when the VM is
    not converted (a server may still boot from it), else 'no'."""
    conversion = vm.conversion or {}
    tool = conversion.get("tool")
    if vm.conversion is not None and not tool:
        return "no (convert: false)"
    key = str(Address.parse(disk["address"]).index)
    at_epoch = conversion.get("status") == "ready" and disk.get("epoch") is not None
    if disk.get("converted") or (at_epoch and conversion["epochs"].get(key) == disk["epoch"]):
        return f"yes ({tool})" if tool else "yes"
    return "no"


def _digest(last: dict[str, Any], sync: Sync | None, check: dict[str, Any]) -> str:
    """The last verified sha256 with what it covers: 'whole disk: <sha>', or 'changed areas
    only (not a disk digest): <sha>' for a delta verified over the areas it copied; a later
    verify-only step's (`check`, the volume's last_verify) is a whole disk's."""
    sha, over = last.get("sha256"), last.get("verified")
    if not sha and sync is not None:
        sha, over = sync.sha256, sync.verified
    if check.get("sha256") and float(check.get("at") or 0) >= float(last.get("at") or 0):
        sha, over = check["sha256"], VERIFIED_WHOLE
    if not sha:
        return "—"
    if over == VERIFIED_AREAS:
        return f"{VERIFIED_AREAS} only (not a disk digest): {sha}"
    return f"{VERIFIED_WHOLE}: {sha}"


DISK_HEAD = [
    "disk",
    "size",
    "Cinder volume",
    "converted",
    "syncs (data moved, step time)",
    "verified (sha256)",
]


def earlier(vm: VMReport) -> list[str]:
    """Syncs of volumes no longer recorded (deleted by a destroy, or replaced by another)."""
    kept = [s for disk in vm.disks for s in current(disk, vm.syncs)]
    return [
        f"{s.address}{f' (volume {s.volume_id})' if s.volume_id else ''}: {_sync_text(s)}"
        for s in vm.syncs
        if s not in kept
    ]


def status(vm: VMReport) -> str:
    """The VM in one phrase: cut over, cutover not finished, last apply failed, replicating."""
    if (vm.server or {}).get("status") == "ready":
        return "cut over"
    if unfinished_cutover(vm):
        return "cutover not finished"
    if vm.failures:
        return "last apply failed"
    if not vm.disks:
        return "no volume recorded"
    return "replicating" if vm.mode == "replicate" else vm.mode or "—"


def _notes(vm: VMReport) -> list[str]:
    """The VM's concerns, a source ferry left powered off with no server yet, an unfinished
    cutover, the steps its last apply failed, its re-placements (its conversion host gone),
    and syncs of volumes deleted since."""
    left = [source_left_off(vm.source_off_since)] if vm.source_off_since else []
    unfinished = [u] if (u := unfinished_cutover(vm)) else []
    failed = [f"failed in its last apply: {f}" for f in vm.failures]
    gone = [f"sync of a volume deleted since: {e}" for e in earlier(vm)]
    return left + unfinished + failed + vm.concerns + vm.replacements + gone


def run_rows(report: Report) -> list[list[str]]:
    """One row per recorded apply, oldest first: when, how long, outcome, counts, data read
    (a stopped copy's up to its stop), errors."""
    rows = []
    for i, r in enumerate(report.runs, 1):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.started))
        rows.append(
            [
                str(i),
                when,
                "—" if r.seconds is None else duration(r.seconds),
                r.outcome if r.seconds is not None else "killed (no end recorded)",
                f"{r.done} done, {r.failed} failed, {r.skipped} skipped",
                human(r.read),
                "; ".join(r.errors) or "—",
            ]
        )
    return rows


RUN_HEAD = ["apply", "started", "took", "outcome", "steps", "data read", "failed steps"]


def summary_rows(report: Report) -> list[list[str]]:
    rows = []
    for vm in report.vms:
        copied = sum(s.moved for s in vm.syncs)
        rows.append(
            [
                vm.name,
                vm.mode or "—",
                status(vm),
                str(len(vm.disks)),
                human(copied),
                _seconds(vm.conversion_seconds),
                downtime_cell(vm),
                str((vm.server or {}).get("server_id") or "—"),
                ", ".join(hosts_of(vm)) or "—",
            ]
        )
    return rows


def downtime_cell(vm: VMReport) -> str:
    """The VM's measured downtime: source off → server ACTIVE ("off, no server yet" while it
    is off), then each failed attempt's time off before ferry powered it back on, e.g.
    '49.8 s (+ 21.0 s, 24.0 s off in failed attempts)'."""
    now = "off, no server yet" if vm.source_off_since else _seconds(vm.downtime_seconds)
    if not vm.outages:
        return now
    failed = ", ".join(_seconds(s) for s in vm.outages)
    return f"{now} (+ {failed} off in failed attempts)"


def host_rows(report: Report) -> list[list[str]]:
    """One row per conversion host: VMs, copies, data moved, seconds copying, throughput."""
    return [
        [
            t.host,
            str(t.vms),
            str(t.copies),
            human(t.moved),
            duration(t.seconds),
            rate(t.throughput) if t.seconds > 0 else "—",
        ]
        for t in report.hosts
    ]


HOST_HEAD = ["conversion host", "VMs", "copies", "data moved", "copying", "throughput"]
HOST_NOTE = (
    "Throughput is data moved per second: the bytes read from the source and written to the "
    "volume, over the seconds the host was copying (copies at once count once). Holes skipped "
    "and zeros written are not data and count for nothing."
)


SUMMARY_HEAD = [
    "VM",
    "mode",
    "status",
    "disks",
    "data moved",
    "conversion",
    "downtime",
    "server",
    "conversion host",
]


def html(report: Report) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        cells = "".join(f"<th>{escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><tr>{cells}</tr>{body}</table>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ferry migration report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>ferry migration report</h1>",
        f"<p>{time.strftime('%Y-%m-%d %H:%M:%S')} — {len(report.vms)} VMs, "
        f"{report.applies} applies recorded.</p>",
        table(SUMMARY_HEAD, summary_rows(report)),
        "<h2>Applies</h2>",
        table(RUN_HEAD, run_rows(report)),
        "<h2>Conversion hosts</h2>",
        f"<p>{escape(HOST_NOTE)}</p>",
        table(HOST_HEAD, host_rows(report)),
        "<h2>Timeline of the last apply</h2>",
        svg.timeline(report.timeline),
        "<h2>Throughput</h2>",
        svg.throughput([s for vm in report.vms for s in vm.syncs]),
    ]
    for vm in report.vms:
        parts.append(f"<h2>{escape(vm.name)}</h2>")
        parts += [f"<p class='concern'>{escape(c)}</p>" for c in _notes(vm)]
        parts.append(table(DISK_HEAD, _disk_rows(vm)))
        if vm.ports:
            rows = [[p["address"], p.get("mac", ""), p.get("network", ""), p.get("port_id", "")]
                    for p in vm.ports]  # fmt: skip
            parts.append(table(["port", "MAC", "network", "id"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown(report: Report, svg_prefix: Path) -> tuple[str, dict[Path, str]]:
    """The Markdown text and the SVG files it links to (`<prefix>.timeline.svg`, ...)."""
    files = {
        svg_prefix.with_name(svg_prefix.name + ".timeline.svg"): svg.timeline(report.timeline),
        svg_prefix.with_name(svg_prefix.name + ".throughput.svg"): svg.throughput(
            [s for vm in report.vms for s in vm.syncs]
        ),
    }

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
            "",
        ]

    lines = ["# ferry migration report", "", *table(SUMMARY_HEAD, summary_rows(report))]
    lines += ["## Applies", "", *table(RUN_HEAD, run_rows(report))]
    lines += ["## Conversion hosts", "", HOST_NOTE, "", *table(HOST_HEAD, host_rows(report))]
    for path in files:
        lines += [f"![{path.name}]({path.name})", ""]
    for vm in report.vms:
        lines += [f"## {vm.name}", "", *(f"- {c}" for c in _notes(vm)), ""]
        lines += table(DISK_HEAD, _disk_rows(vm))
    return "\n".join(lines), files
