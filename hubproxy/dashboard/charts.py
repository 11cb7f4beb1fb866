"""The overview's two charts as inline SVG, drawn here: no chart library, nothing fetched by the page.

Colours are CSS classes (`s0` … `s11`, `err`), so the stylesheet sets them for light and dark mode;
none of the series is red, which means failures. Past SERIES - 1 models, the rest share the last
colour as "other models", so no two models look alike.
Each bar has a <title>, which browsers show on hover.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from html import escape

from hubproxy.money import format_usd

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 220, 56, 24, 8
SERIES = 12
OTHER = "other models"


def _usd(pico: int) -> str:
    return "$" + format_usd(round(pico, -8), min_places=2)


def _axis(peak: float, label) -> tuple[str, float]:
    """Three gridlines with labels; returns the SVG and the value at the top of the plot."""
    top = peak if peak > 0 else 1
    plot = HEIGHT - BOTTOM - TOP
    parts = []
    for i in range(4 if peak > 0 else 1):
        value = top * i / 3
        y = HEIGHT - BOTTOM - plot * i / 3
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(value)}</text>')
    return "".join(parts), top


def spend_by_day(days: dict[str, dict[str, int]], today: date, span: int = 30) -> tuple[str, list[tuple[str, int]]]:
    """Spend per day stacked by model over `span` days; returns the SVG and the legend (model, series)."""
    totals: dict[str, int] = {}
    for by_model in days.values():
        for model, cost in by_model.items():
            totals[model] = totals.get(model, 0) + cost
    ranked = sorted(totals, key=lambda m: -totals[m])
    if len(ranked) > SERIES:
        rest = set(ranked[SERIES - 1 :])
        days = {
            day: {**{m: c for m, c in by.items() if m not in rest}, OTHER: sum(c for m, c in by.items() if m in rest)}
            for day, by in days.items()
        }
        ranked = [*ranked[: SERIES - 1], OTHER]
    series = {model: i for i, model in enumerate(ranked)}
    dates = [(today - timedelta(days=span - 1 - i)).isoformat() for i in range(span)]
    peak = max((sum(days.get(d, {}).values()) for d in dates), default=0)
    grid, top = _axis(peak, lambda v: _usd(int(v)))
    plot = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / span
    bars = []
    for i, day in enumerate(dates):
        y: float = HEIGHT - BOTTOM
        x = LEFT + i * step + step * 0.15
        for model in ranked:
            cost = days.get(day, {}).get(model, 0)
            if cost <= 0:
                continue
            h = plot * cost / top
            y -= h
            tip = escape(f"{day} {model}: {_usd(cost)}")
            bars.append(
                f'<rect class="s{series[model]}" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}">'
                f"<title>{tip}</title></rect>"
            )
        if i % 5 == 4 or i == span - 1:
            bars.append(_tick(x + step * 0.35, day[5:]))
    svg = _frame("Spend per day by model", grid + "".join(bars))
    return svg, [(model, series[model]) for model in ranked]


def calls_by_hour(hours: dict[str, tuple[int, int, int]], now: datetime, span: int = 48) -> str:
    """Calls per hour over `span` hours, the failed part of each bar in the error colour."""
    labels = [(now - timedelta(hours=span - 1 - i)).strftime("%Y-%m-%dT%H") for i in range(span)]
    peak = max((hours.get(h, (0, 0, 0))[0] for h in labels), default=0)
    grid, top = _axis(peak, lambda v: f"{v:,.0f}" if v >= 10 or v == 0 else f"{v:.1f}")
    plot = HEIGHT - BOTTOM - TOP
    step = (WIDTH - LEFT) / span
    bars = []
    for i, hour in enumerate(labels):
        calls, errors, _ = hours.get(hour, (0, 0, 0))
        x = LEFT + i * step + step * 0.1
        if calls:
            h = plot * calls / top
            e = plot * errors / top
            tip = escape(f"{hour[:10]} {hour[11:]}:00 UTC: {calls:,} calls, {errors:,} failed")
            bars.append(
                f'<g><title>{tip}</title><rect class="s0" x="{x:.1f}" y="{HEIGHT - BOTTOM - h:.1f}" '
                f'width="{step * 0.8:.1f}" height="{h - e:.1f}"/>'
                f'<rect class="err" x="{x:.1f}" y="{HEIGHT - BOTTOM - e:.1f}" width="{step * 0.8:.1f}" '
                f'height="{e:.1f}"/></g>'
            )
        if i % 12 == 11:
            bars.append(_tick(x + step * 0.4, f"{hour[11:]}:00"))
    return _frame("Calls per hour (UTC), failed in red", grid + "".join(bars))


def _tick(x: float, text: str) -> str:
    anchor = "end" if x > WIDTH - 20 else "middle"  # the last label stays inside the chart
    return f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{text}</text>'


def _frame(title: str, body: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet">{body}</svg>'
    )
