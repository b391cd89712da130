"""The report as HTML (self-contained: inline SVG and CSS) or Markdown (SVGs beside it)."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from engine.model.state import VERIFIED_AREAS
from engine.planner.diff.cutover import source_left_off
from engine.report import svg
from engine.report.data import Report, Sync, VMReport
from engine.units import human

CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}h2{margin-top:1.6em}.concern{color:#8a5a00}code{font-size:12px}"""


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


def _disk_rows(vm: VMReport) -> list[list[str]]:
    rows = []
    for disk in vm.disks:
        last = disk.get("last_sync") or {}
        syncs = [s for s in vm.syncs if s.address == disk["address"]]
        history = ", ".join(f"{s.kind} {human(s.bytes)} in {s.seconds:.1f} s" for s in syncs)
        rows.append(
            [
                disk["address"],
                f"{disk.get('size_gib', '?')} GiB",
                str(disk.get("volume_id", "")),
                "yes" if disk.get("converted") else "no",
                history or f"{last.get('kind', '—')} {human(int(last.get('bytes', 0)))}",
                _digest(last, syncs[-1] if syncs else None),
            ]
        )
    return rows


def _digest(last: dict[str, Any], sync: Sync | None) -> str:
    """The last verified sha256, and what it covers when not the whole disk."""
    sha, over = last.get("sha256"), last.get("verified")
    if not sha and sync is not None:
        sha, over = sync.sha256, sync.verified
    if not sha:
        return "—"
    return f"{sha} ({VERIFIED_AREAS})" if over == VERIFIED_AREAS else str(sha)


DISK_HEAD = ["disk", "size", "Cinder volume", "converted", "syncs (bytes copied, time)", "sha256"]


def _notes(vm: VMReport) -> list[str]:
    """The VM's concerns, and a source ferry left powered off with no server yet."""
    left = [source_left_off(vm.source_off_since)] if vm.source_off_since else []
    return left + vm.concerns


def summary_rows(report: Report) -> list[list[str]]:
    rows = []
    for vm in report.vms:
        copied = sum(s.bytes for s in vm.syncs)
        rows.append(
            [
                vm.name,
                vm.mode or "—",
                str(len(vm.disks)),
                human(copied),
                _seconds(vm.conversion_seconds),
                "off, no server yet" if vm.source_off_since else _seconds(vm.downtime_seconds),
                str((vm.server or {}).get("server_id") or "—"),
            ]
        )
    return rows


SUMMARY_HEAD = ["VM", "mode", "disks", "copied", "conversion", "downtime", "server"]


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
    for path in files:
        lines += [f"![{path.name}]({path.name})", ""]
    for vm in report.vms:
        lines += [f"## {vm.name}", "", *(f"- {c}" for c in _notes(vm)), ""]
        lines += table(DISK_HEAD, _disk_rows(vm))
    return "\n".join(lines), files
