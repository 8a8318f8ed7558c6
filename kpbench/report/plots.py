"""Offline, script-free SVG line plots (a line per series, optional ± std error bars and hover
titles). The SVG is built here as text; every label in it is HTML-escaped on the way in, so the
renderers may insert it as markup."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kpbench.report.formatting import format_mean_std, format_number

# Okabe-Ito colours (colour-blind safe), assigned to variants in display order.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D31",
)
DASHES: tuple[str, ...] = ("", "6 3", "2 3", "8 3 2 3")
REFERENCE_COLOR = "#6b7580"  # baselines and reference lines in plots
WIDTH, HEIGHT = 330, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 38  # margins around the plot area


@dataclass(frozen=True)
class PlotLine:
    color: str
    dash: str
    label: str
    points: list[tuple[float, float, float]]  # (x, mean, std); std NaN when one seed


@dataclass(frozen=True)
class Frame:
    """What a plot shows: tick values on each axis and the data ranges the axes span."""

    x_ticks: list[float]
    y_ticks: list[float]
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def plot_frame(lines: Sequence[PlotLine], x_min: float | None = None) -> Frame | None:
    """Ticks and ranges covering every point (and its ± std bar) of ``lines``, the x axis reaching
    down to ``x_min`` when given; None when no point has a value. Evenly spaced x values (at
    most 10) are the x ticks themselves; otherwise ticks are round numbers (:func:`nice_ticks`)."""
    xs = [x for line in lines for x, _, _ in line.points] + ([] if x_min is None else [x_min])
    ys = [
        value
        for line in lines
        for _, mean, std in line.points
        if not math.isnan(mean)
        for value in ((mean,) if math.isnan(std) else (mean - std, mean + std))
    ]
    if not ys:
        return None
    distinct_x = sorted(set(xs))
    steps = {round(b - a, 9) for a, b in zip(distinct_x, distinct_x[1:])}
    x_ticks = distinct_x if len(steps) == 1 and len(distinct_x) <= 10 else nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    x_range = (min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs)))
    return Frame(x_ticks, y_ticks, x_range, (y_ticks[0], y_ticks[-1]))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]; an empty range is
    padded by 10 % of its value (or 1 around zero) on each side."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The fewest decimals (at least those of the spacing) that show every tick as it is (0.25,
    not 0.2) and keep them distinct; past 6 decimals, the fewest significant digits that do."""
    spacing = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0)

    def exact(style: str) -> list[str] | None:
        labels = [f"{tick:{style}}" for tick in ticks]
        shown = len(set(labels)) == len(ticks) and all(
            abs(float(label) - tick) <= spacing * 1e-6 for label, tick in zip(labels, ticks)
        )
        return labels if shown else None

    for decimals in range(max(0, -math.floor(math.log10(spacing))), 7):
        if labels := exact(f".{decimals}f"):
            return labels
    for digits in range(1, 13):
        if labels := exact(f".{digits}g"):
            return labels
    return [f"{tick:g}" for tick in ticks]


def svg_line_plot(lines: list[PlotLine], x_label: str, y_label: str, markers: bool = True,
                  x_min: float | None = None) -> str:
    """A line plot as SVG markup; ``markers=False`` draws bare lines (long series), each with a
    hover title; ``x_min`` extends the x axis down to it. Labels are escaped here."""
    esc = _esc
    frame = plot_frame(lines, x_min)
    if frame is None:
        return '<p class="muted">no values</p>'
    x_lo, x_hi = frame.x_range
    y_lo, y_hi = frame.y_range
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return TOP + (y_hi - y) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(y_label)} against {esc(x_label)}" '
        'font-family="inherit" font-size="10.5">'
    ]
    for tick, label in zip(frame.y_ticks, tick_labels(frame.y_ticks)):
        y = py(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ed"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 3.5:.1f}" text-anchor="end" fill="#5f6b76">'
            f"{esc(label)}</text>"
        )
    for tick, label in zip(frame.x_ticks, tick_labels(frame.x_ticks)):
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}" stroke="#8a949e"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" fill="#5f6b76">'
            f"{esc(label)}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" stroke="#8a949e"/>'
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" text-anchor="middle" fill="#1b1f24" '
        f'font-size="11.5">{esc(x_label)}</text>'
    )
    for line in lines:
        parts.append(_svg_line(line, px, py, markers))
    parts.append("</svg>")
    return "".join(parts)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _svg_line(line: PlotLine, px: Callable[[float], float], py: Callable[[float], float],
              markers: bool = True) -> str:
    """Polyline segments between finite points, error bars, and markers with hover titles (or,
    without markers, a title on each segment)."""
    parts = []
    segment: list[str] = []
    segments = []
    for x, mean, _ in line.points:
        if math.isnan(mean):
            segments.append(segment)
            segment = []
        else:
            segment.append(f"{px(x):.1f},{py(mean):.1f}")
    segments.append(segment)
    dash = f' stroke-dasharray="{_esc(line.dash)}"' if line.dash else ""
    color = _esc(line.color)
    title = f"<title>{_esc(line.label)}</title>"
    for points in segments:
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}" '
                f'stroke-width="1.8"{dash}>{"" if markers else title}</polyline>'
            )
        elif points and not markers:  # a lone point would not show as a line
            lone_x, lone_y = points[0].split(",")
            parts.append(f'<circle cx="{lone_x}" cy="{lone_y}" r="2.6" fill="{color}">{title}</circle>')
    if not markers:
        return "".join(parts)
    for x, mean, std in line.points:
        if math.isnan(mean):
            continue
        if not math.isnan(std) and std > 0:
            parts.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(mean - std):.1f}" '
                f'y2="{py(mean + std):.1f}" stroke="{color}" stroke-width="1" opacity="0.7"/>'
            )
        hover = f"{line.label}: {format_number(x)} → {format_mean_std(mean, std)}"
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(mean):.1f}" r="2.6" fill="{color}">'
            f"<title>{_esc(hover)}</title></circle>"
        )
    return "".join(parts)
