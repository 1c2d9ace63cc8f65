"""A source's timeline as inline SVG, drawn on the server: a bar per
recovery point at its time, its height the point's bytes (relative to the
source's largest), from the first point (left) to now (right). Points closer
than a bar's width share one bar (the largest of them, the count in its
title), so a chart has at most COLUMNS bars whatever the number of points.
No script and no style attribute: colours come from the stylesheet's
classes, so the page's Content-Security-Policy holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

from strongroom.services.dashboard import RecoveryPoint, point_bytes

WIDTH = 600
HEIGHT = 64
COLUMNS = 150


def timeline_svg(points: Sequence[RecoveryPoint], now: datetime) -> Markup:
    shown = list(points)
    if not shown:
        return Markup("")
    start = shown[0].time
    span = max((now - start).total_seconds(), 1.0)
    largest = max((point_bytes(p) for p in shown), default=0) or 1
    parts = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {HEIGHT + 14}" width="{WIDTH}" '
        f'height="{HEIGHT + 14}" role="img" aria-label="recovery points over time">',
        f'<line class="axis" x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}"/>',
    ]
    columns: dict[int, list[RecoveryPoint]] = {}
    for p in shown:
        at = (p.time - start).total_seconds() / span
        columns.setdefault(min(int(at * COLUMNS), COLUMNS - 1), []).append(p)
    step = (WIDTH - 4) / COLUMNS
    for column, group in sorted(columns.items()):
        size = max(point_bytes(p) for p in group)
        h = max(2.0, size / largest * (HEIGHT - 4))
        last = group[-1]
        text = f"{last.time:%Y-%m-%d %H:%M} UTC, {size} bytes, point {last.short_id}"
        if len(group) > 1:
            text = f"{len(group)} points to {text}"
        parts.append(
            f'<rect class="bar" x="{column * step + 1:.1f}" y="{HEIGHT - h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"><title>{escape(text)}</title></rect>'
        )
    parts.append(
        f'<text class="tick" x="0" y="{HEIGHT + 12}">{escape(f"{start:%Y-%m-%d}")}</text>'
        f'<text class="tick" x="{WIDTH}" y="{HEIGHT + 12}" text-anchor="end">now</text></svg>'
    )
    return Markup("".join(parts))
