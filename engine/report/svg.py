"""The report's pictures as self-contained SVG: the apply timeline (one lane per conversion-host
slot and per control lane) and the throughput of every sync."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from engine.report.data import Bar, Sync
from engine.units import duration, human, rate

COLORS = {
    "volume": "#2b7bb9",
    "conversion": "#d17b0f",
    "server": "#2e9e5b",
    "port": "#8a63b8",
    "source_snapshot": "#7a7a7a",
    "source_cbt": "#7a7a7a",
    "flavor": "#b85c8a",
}
FAILED = "#c62828"
WIDTH, LABEL, LANE = 960, 90, 26
MiB = 1024**2


def rows(bars: list[Bar]) -> list[tuple[str, str]]:
    """The timeline's rows top down as (host, lane): per conversion host (by name) a header row
    (host, "") then its slot lanes, then the lanes of no recorded host (slots, then control)."""
    lanes = sorted(
        {(b.host, b.lane) for b in bars},
        key=lambda r: (r[0] == "", r[0], r[1].split()[0] != "slot", r[1]),
    )
    out: list[tuple[str, str]] = []
    for host, lane in lanes:
        if host and (host, "") not in out:
            out.append((host, ""))
        out.append((host, lane))
    return out


def timeline(bars: list[Bar]) -> str:
    """Bars on lanes over the apply's time, one lane group per conversion host (its name
    above its slot lanes); a tooltip per bar."""
    if not bars:
        return _empty("no apply has run yet")
    t0 = min(b.start for b in bars)
    span = max(max(b.end for b in bars) - t0, 0.001)
    names = rows(bars)
    scale = (WIDTH - LABEL - 10) / span
    height = LANE * len(names) + 40
    parts = [
        _open(height),
        f'<text x="4" y="14" font-size="12">apply timeline, {duration(span)}</text>',
    ]
    for row, (host, lane) in enumerate(names):
        y = 24 + row * LANE
        if not lane:
            parts.append(
                f'<text class="host" x="4" y="{y + 16}" font-size="11" font-weight="bold">'
                f"{escape(host)}</text>"
            )
            continue
        parts.append(f'<text x="{14 if host else 4}" y="{y + 16}" font-size="11">'
                     f"{escape(lane)}</text>")  # fmt: skip
        parts.append(
            f'<line x1="{LABEL}" y1="{y + LANE - 2}" x2="{WIDTH - 10}" y2="{y + LANE - 2}" '
            'stroke="#ddd"/>'
        )
    for bar in bars:
        y = 24 + names.index((bar.host, bar.lane)) * LANE
        x = LABEL + (bar.start - t0) * scale
        w = max((bar.end - bar.start) * scale, 2.0)
        color = FAILED if bar.outcome != "done" else COLORS.get(bar.kind, "#999")
        on = f" on {bar.host}" if bar.host else ""
        tip = f"{bar.address} ({bar.kind}{on}, {bar.outcome}): {duration(bar.end - bar.start)}"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{LANE - 8}" '
            f'fill="{color}" rx="2"><title>{escape(tip)}</title></rect>'
        )
    parts.append(_axis(height - 12, span))
    parts.append("</svg>")
    return "\n".join(parts)


def throughput(syncs: list[Sync]) -> str:
    """One bar per disk sync: data moved per second of copying in MiB/s (holes and zeros move
    nothing: a sparse disk's full copy is as fast as its data), labelled with the disk and
    full/delta; the tooltip gives data moved, holes skipped and seconds. A sync with no data
    read recorded (an older event) has no bar."""
    shown = [s for s in syncs if s.throughput > 0]
    if not shown:
        return _empty("no copy measured yet")
    top = max(s.throughput for s in shown) / MiB
    row = 20
    height = row * len(shown) + 30
    scale = (WIDTH - 330) / top
    title = "sync throughput: data moved per second of copying (MiB/s)"
    parts = [_open(height), f'<text x="4" y="14" font-size="12">{title}</text>']
    for i, sync in enumerate(shown):
        y = 22 + i * row
        mib = sync.throughput / MiB
        label = f"{sync.address} {sync.kind}"
        holes = f", {human(sync.skipped)} of holes skipped" if sync.skipped else ""
        tip = (
            f"{rate(sync.throughput)}: {human(sync.moved)} moved in {duration(sync.seconds)}{holes}"
        )
        parts.append(f'<text x="4" y="{y + 13}" font-size="11">{escape(label)}</text>')
        parts.append(
            f'<rect class="bar" x="260" y="{y + 2}" width="{max(mib * scale, 1):.1f}" '
            f'height="{row - 6}" fill="{COLORS["volume"]}"><title>{escape(tip)}</title></rect>'
        )
        parts.append(
            f'<text class="rate" x="{266 + mib * scale:.1f}" y="{y + 13}" font-size="11">'
            f"{escape(rate(sync.throughput))}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _open(height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">'
    )


def ticks(span: float, most: int = 6) -> list[tuple[float, str]]:
    """Axis ticks for a timeline of `span` seconds: (seconds, label) at a round step (1, 2 or 5
    times a power of ten, or whole minutes/hours) so that at most `most` ticks fit, every label
    different ('0 s', '0.5 s', '1 s'; '0 min', '2 min'; '0 h', '1 h')."""
    unit, size = ("h", 3600.0) if span >= 7200 else ("min", 60.0) if span >= 120 else ("s", 1.0)
    scaled = span / size
    steps = (m * 10.0**e for e in range(-3, 8) for m in (1, 2, 5))
    step = next(s for s in steps if math.floor(scaled / s + 1e-9) + 1 <= most)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    count = math.floor(scaled / step + 1e-9) + 1
    return [(i * step * size, f"{i * step:.{decimals}f} {unit}") for i in range(count)]


def _axis(y: int, span: float) -> str:
    width = WIDTH - LABEL - 10
    marks = []
    for at, label in ticks(span):
        x = LABEL + width * at / span
        anchor = "start" if at == 0 else "end" if x > WIDTH - 40 else "middle"
        marks.append(
            f'<text class="tick" x="{x:.0f}" y="{y}" font-size="10" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    return "\n".join(marks)


def _empty(message: str) -> str:
    return f'{_open(30)}<text x="4" y="18" font-size="12">{escape(message)}</text></svg>'
