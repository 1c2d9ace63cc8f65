"""A source's timeline as inline SVG, drawn on the server: one bar per
recovery point at its time, its height the point's bytes (relative to the
source's largest), the newest points at the right edge (now). No script and
no style attribute: colours come from the stylesheet's classes, so the
page's Content-Security-Policy holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

from strongroom.services.dashboard import RecoveryPoint, point_bytes

WIDTH = 600
HEIGHT = 64
MAX_BARS = 2000  # beyond this, the newest


def timeline_svg(points: Sequence[RecoveryPoint], now: datetime) -> Markup:
    shown = list(points)[-MAX_BARS:]
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
    for p in shown:
        x = (p.time - start).total_seconds() / span * (WIDTH - 4) + 1
        size = point_bytes(p)
        h = max(2.0, size / largest * (HEIGHT - 4))
        title = escape(f"{p.time:%Y-%m-%d %H:%M} UTC, {size} bytes, point {p.short_id}")
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{HEIGHT - h:.1f}" width="3" height="{h:.1f}">'
            f"<title>{title}</title></rect>"
        )
    parts.append(
        f'<text class="tick" x="0" y="{HEIGHT + 12}">{escape(f"{start:%Y-%m-%d}")}</text>'
        f'<text class="tick" x="{WIDTH}" y="{HEIGHT + 12}" text-anchor="end">now</text></svg>'
    )
    return Markup("".join(parts))
