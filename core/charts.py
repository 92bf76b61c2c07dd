"""Server-rendered SVG line charts for the admin: no JavaScript library, nothing to fetch, works offline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from django.utils.safestring import mark_safe

PALETTE = ["#2f6fb0", "#d9822b", "#3b9c5a", "#b03a48", "#7a5cb8", "#6b6b6b"]


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float | None]]  # a point without a value (None) is left out of the line
    colour: str = ""


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    if integer:
        raw = max(raw, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [round(start + i * step, 10) for i in range(count + 3)]
    last = next(i for i, t in enumerate(ticks) if t >= high - step * 1e-9)
    return ticks[: last + 1]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:g}" if abs(value) >= 1 else f"{value:.3g}"


def line_chart(
    series: list[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 240,
    y_min: float | None = None,
    y_max: float | None = None,
    x_integer: bool = False,
) -> str:
    """An SVG with one polyline per series, axes with ticks, and a legend. Empty series give a note instead."""
    series = [
        Series(
            s.label,
            [(float(x), float(y)) for x, y in s.points if y is not None and math.isfinite(y)],
            s.colour or PALETTE[i % len(PALETTE)],
        )
        for i, s in enumerate(series)
    ]
    left, right, top, bottom = 56, 12, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    points = [(x, y) for s in series for x, y in s.points if y is not None]
    if not points:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2}" font-size="12" fill="#777">No data yet.</text></svg>')
        return "".join(parts)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks = _ticks(min(xs), max(xs), integer=x_integer)
    y_ticks = _ticks(min(ys) if y_min is None else y_min, max(ys) if y_max is None else y_max)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x):
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def sy(y):
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    for tick in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(tick):.1f}" y2="{sy(tick):.1f}" '
            f'stroke="#e3e3e3"/><text x="{left - 6}" y="{sy(tick) + 4:.1f}" font-size="10" '
            f'text-anchor="end">{_fmt(tick)}</text>'
        )
    for tick in x_ticks:
        parts.append(
            f'<text x="{sx(tick):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="middle">{_fmt(tick)}</text>'
        )
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    for i, s in enumerate(series):
        if not s.points:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        parts.append(
            f'<polyline fill="none" stroke="{s.colour}" stroke-width="1.8" points="{path}">'
            f"<title>{escape(s.label)}</title></polyline>"
        )
        if len(s.points) <= 60:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.colour}"/>' for x, y in s.points)
        lx = left + plot_w - 150
        ly = top + 14 + 14 * i
        parts.append(
            f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{s.colour}"/>'
            f'<text x="{lx + 14}" y="{ly - 3}" font-size="10">{escape(s.label[:28])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def epoch_map_chart(history: list[dict]) -> str:
    """mAP50, mAP and mAP75 per epoch from a metrics history (a run's or a model's)."""
    return mark_safe(
        line_chart(
            [
                Series(name, [(e["epoch"], e.get(key)) for e in history])
                for name, key in (("mAP50", "bbox_mAP_50"), ("mAP", "bbox_mAP"), ("mAP75", "bbox_mAP_75"))
            ],
            title="Validation mAP",
            x_label="epoch",
            y_label="mAP",
            y_min=0,
            y_max=1,
            x_integer=True,
        )
    )


def pr_chart(curves: dict[str, list], *, iou: str) -> str:
    """Precision against recall, one line per class, from an evaluation's ``pr_curves[iou]``."""
    return mark_safe(
        line_chart(
            [Series(name, [(r, p) for r, p in points]) for name, points in curves.items()],
            title=f"Precision-recall at IoU {iou}",
            x_label="recall",
            y_label="precision",
            y_min=0,
            y_max=1,
        )
    )


def _heat(value: int, peak: int, diagonal: bool) -> str:
    """A cell's background: green on the diagonal, red off it, stronger with a larger share of the row."""
    if not value or not peak:
        return "#ffffff"
    strength = 0.15 + 0.65 * value / peak
    r, g, b = (46, 160, 67) if diagonal else (214, 39, 40)
    mix = [round(255 - (255 - c) * strength) for c in (r, g, b)]
    return "#{:02x}{:02x}{:02x}".format(*mix)


def confusion_table(confusion: dict) -> str:
    """The confusion matrix as an HTML table: rows the true class, columns the predicted class, background last
    (its row: false detections; its column: missed boxes). Cells shaded by their share of the row."""
    labels, matrix = confusion.get("labels") or [], confusion.get("matrix") or []
    if not labels:
        return mark_safe('<p class="help">No confusion matrix.</p>')
    head = "".join(f'<th scope="col">{escape(label)}</th>' for label in labels)
    rows = []
    for i, (label, row) in enumerate(zip(labels, matrix, strict=True)):
        peak = max(sum(row), 1)
        cells = "".join(
            f'<td style="background:{_heat(v, peak, i == j and i < len(labels) - 1)}" '
            f'title="true {escape(label)}, predicted {escape(labels[j])}: {v}">{v}</td>'
            for j, v in enumerate(row)
        )
        rows.append(f'<tr><th scope="row">{escape(label)}</th>{cells}<td class="total">{sum(row)}</td></tr>')
    return mark_safe(
        '<table class="confusion" id="confusion-matrix"><thead><tr><th>true \\ predicted</th>'
        f"{head}<th>total</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
