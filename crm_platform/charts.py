"""Server-rendered SVG charts for admin pages: no JavaScript, no CDN."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe


def bar_chart(rows: list[tuple[str, float]], *, width: int = 640, bar: int = 22, unit: str = "") -> SafeString:
    """Horizontal bars, one per (label, value), labelled with their values."""
    if not rows:
        return mark_safe('<p class="help">No data yet.</p>')
    label_width, gap = 170, 6
    top = max(value for _, value in rows) or 1
    height = len(rows) * (bar + gap) + gap
    parts = [
        f'<svg class="crm-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    span = width - label_width - 90
    for index, (label, value) in enumerate(rows):
        y = gap + index * (bar + gap)
        length = max(1, round(span * value / top)) if value else 0
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
        baseline = f"{y + bar * 0.7:.1f}"
        parts.append(
            f'<text x="{label_width - 8}" y="{baseline}" text-anchor="end" font-size="12">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length}" height="{bar}" fill="#417690"><title>'
            f"{escape(label)}: {shown}{escape(unit)}</title></rect>"
            f'<text x="{label_width + length + 6}" y="{baseline}" font-size="12">{shown}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label and value above is escaped
