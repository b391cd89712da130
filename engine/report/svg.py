"""The report's pictures as self-contained SVG: the apply timeline (one lane per conversion-host
slot and per control lane) and the throughput of every sync."""

from __future__ import annotations

from xml.sax.saxutils import escape

from engine.report.data import Bar, Sync

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


def timeline(bars: list[Bar]) -> str:
    """Bars on lanes over the apply's time; a tooltip per bar."""
    if not bars:
        return _empty("no apply has run yet")
    t0 = min(b.start for b in bars)
    span = max(max(b.end for b in bars) - t0, 0.001)
    names = sorted({b.lane for b in bars}, key=lambda n: (n.split()[0] != "slot", n))
    scale = (WIDTH - LABEL - 10) / span
    height = LANE * len(names) + 40
    parts = [
        _open(height),
        f'<text x="4" y="14" font-size="12">apply timeline, {span:.1f} s</text>',
    ]
    for row, name in enumerate(names):
        y = 24 + row * LANE
        parts.append(f'<text x="4" y="{y + 16}" font-size="11">{escape(name)}</text>')
        parts.append(
            f'<line x1="{LABEL}" y1="{y + LANE - 2}" x2="{WIDTH - 10}" y2="{y + LANE - 2}" '
            'stroke="#ddd"/>'
        )
    for bar in bars:
        y = 24 + names.index(bar.lane) * LANE
        x = LABEL + (bar.start - t0) * scale
        w = max((bar.end - bar.start) * scale, 2.0)
        color = FAILED if bar.outcome != "done" else COLORS.get(bar.kind, "#999")
        tip = f"{bar.address} ({bar.kind}, {bar.outcome}): {bar.end - bar.start:.1f} s"
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{LANE - 8}" '
            f'fill="{color}" rx="2"><title>{escape(tip)}</title></rect>'
        )
    parts.append(_axis(height - 12, span))
    parts.append("</svg>")
    return "\n".join(parts)


def throughput(syncs: list[Sync]) -> str:
    """One bar per disk sync: MiB/s, labelled with the disk and full/delta."""
    shown = [s for s in syncs if s.seconds > 0 and s.bytes > 0]
    if not shown:
        return _empty("no copy measured yet")
    top = max(s.throughput for s in shown) / MiB
    row = 20
    height = row * len(shown) + 30
    scale = (WIDTH - 330) / top
    parts = [_open(height), '<text x="4" y="14" font-size="12">sync throughput (MiB/s)</text>']
    for i, sync in enumerate(shown):
        y = 22 + i * row
        rate = sync.throughput / MiB
        label = f"{sync.address} {sync.kind}"
        parts.append(f'<text x="4" y="{y + 13}" font-size="11">{escape(label)}</text>')
        parts.append(
            f'<rect class="bar" x="260" y="{y + 2}" width="{max(rate * scale, 1):.1f}" '
            f'height="{row - 6}" fill="{COLORS["volume"]}"><title>{rate:.0f} MiB/s, '
            f"{sync.bytes / MiB:.1f} MiB in {sync.seconds:.2f} s</title></rect>"
        )
        parts.append(
            f'<text x="{266 + rate * scale:.1f}" y="{y + 13}" font-size="11">{rate:.0f}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _open(height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">'
    )


def _axis(y: int, span: float) -> str:
    ticks = []
    for i in range(6):
        x = LABEL + (WIDTH - LABEL - 10) * i / 5
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        ticks.append(
            f'<text x="{x:.0f}" y="{y}" font-size="10" text-anchor="{anchor}">'
            f"{span * i / 5:.0f}s</text>"
        )
    return "\n".join(ticks)


def _empty(message: str) -> str:
    return f'{_open(30)}<text x="4" y="18" font-size="12">{escape(message)}</text></svg>'
