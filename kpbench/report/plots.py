"""Offline, script-free SVG line plots (a line per series, optional ± std error bars and hover
titles). The geometry is computed here as plain text values (:class:`SvgPlot`); the markup comes
from ``templates/plot.svg.j2``, rendered with autoescaping, so every label in the SVG is escaped
and the renderers may insert it as markup."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kpbench.report.formatting import format_mean_std, format_number
from kpbench.report.templating import template_environment

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


@dataclass(frozen=True)
class Tick:
    """A tick of an axis laid out: where it sits along its axis and where its label does (pixels,
    formatted), and the label."""

    at: str
    label_at: str
    label: str


@dataclass(frozen=True)
class Shape:
    """A stretch of a line between gaps: a polyline through ``points`` ("x,y x,y ..."), or, when
    ``points`` is empty, a circle at (``cx``, ``cy``) for a lone point that would not show as a
    line."""

    points: str = ""
    cx: str = ""
    cy: str = ""


@dataclass(frozen=True)
class Marker:
    """A point of a line drawn with markers: its circle, hover title, and ± std bar from
    ``bar_y1`` to ``bar_y2`` (both empty when it has none)."""

    cx: str
    cy: str
    title: str
    bar_y1: str = ""
    bar_y2: str = ""


@dataclass(frozen=True)
class SvgLine:
    """A line laid out: its shapes, and either ``title`` (hover title of every shape, for lines
    without markers) or ``markers`` (each with its own title)."""

    color: str
    dash: str
    title: str | None
    shapes: list[Shape]
    markers: list[Marker]


@dataclass(frozen=True)
class SvgPlot:
    """Everything ``templates/plot.svg.j2`` draws, as text: coordinates come formatted, labels
    raw (the template escapes them)."""

    width: int
    height: int
    x_label: str
    y_label: str
    left: int  # x of the plot area's left edge, where the y grid lines start
    right: int  # x of its right edge
    bottom: int  # y of the x axis
    y_label_x: int  # right end of the y tick labels
    x_tick_end: int  # lower end of the x tick marks
    x_tick_label_y: int
    x_label_at: str  # x of the axis label (centred under the plot area)
    x_label_y: int
    y_ticks: list[Tick]  # at: y of the grid line; label_at: baseline of its label
    x_ticks: list[Tick]
    lines: list[SvgLine]


NO_VALUES = '<p class="muted">no values</p>'


def svg_line_plot(lines: list[PlotLine], x_label: str, y_label: str, markers: bool = True,
                  x_min: float | None = None) -> str:
    """A line plot as SVG markup; ``markers=False`` draws bare lines (long series), each with a
    hover title; ``x_min`` extends the x axis down to it. Labels are escaped by the template."""
    plot = layout_plot(lines, x_label, y_label, markers, x_min)
    if plot is None:
        return NO_VALUES
    return template_environment().get_template("plot.svg.j2").render(plot=plot)


def layout_plot(lines: Sequence[PlotLine], x_label: str, y_label: str, markers: bool = True,
                x_min: float | None = None) -> SvgPlot | None:
    """The plot of ``lines`` laid out in pixels (see :func:`svg_line_plot`); None when no point
    has a value."""
    frame = plot_frame(lines, x_min)
    if frame is None:
        return None
    x_lo, x_hi = frame.x_range
    y_lo, y_hi = frame.y_range
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return TOP + (y_hi - y) / (y_hi - y_lo) * plot_h

    y_ticks = [
        Tick(f"{py(tick):.1f}", f"{py(tick) + 3.5:.1f}", label)
        for tick, label in zip(frame.y_ticks, tick_labels(frame.y_ticks))
    ]
    x_ticks = [
        Tick(f"{px(tick):.1f}", f"{px(tick):.1f}", label)
        for tick, label in zip(frame.x_ticks, tick_labels(frame.x_ticks))
    ]
    return SvgPlot(
        width=WIDTH, height=HEIGHT, x_label=x_label, y_label=y_label,
        left=LEFT, right=WIDTH - RIGHT, bottom=TOP + plot_h,
        y_label_x=LEFT - 6, x_tick_end=TOP + plot_h + 4, x_tick_label_y=TOP + plot_h + 16,
        x_label_at=f"{LEFT + plot_w / 2:.1f}", x_label_y=HEIGHT - 4,
        y_ticks=y_ticks, x_ticks=x_ticks,
        lines=[_layout_line(line, px, py, markers) for line in lines],
    )


def _layout_line(line: PlotLine, px: Callable[[float], float], py: Callable[[float], float],
                 markers: bool = True) -> SvgLine:
    """Polylines between finite points, and markers with hover titles and error bars (or,
    without markers, a title on each polyline and a circle for each lone point)."""
    segments: list[list[tuple[str, str]]] = [[]]
    for x, mean, _ in line.points:
        if math.isnan(mean):
            segments.append([])
        else:
            segments[-1].append((f"{px(x):.1f}", f"{py(mean):.1f}"))
    shapes = []
    for points in segments:
        if len(points) > 1:
            shapes.append(Shape(points=" ".join(f"{x},{y}" for x, y in points)))
        elif points and not markers:  # a lone point would not show as a line
            shapes.append(Shape(cx=points[0][0], cy=points[0][1]))
    if not markers:
        return SvgLine(line.color, line.dash, line.label, shapes, [])
    shown = []
    for x, mean, std in line.points:
        if math.isnan(mean):
            continue
        title = f"{line.label}: {format_number(x)} → {format_mean_std(mean, std)}"
        marker = Marker(f"{px(x):.1f}", f"{py(mean):.1f}", title)
        if not math.isnan(std) and std > 0:
            marker = replace(marker, bar_y1=f"{py(mean - std):.1f}", bar_y2=f"{py(mean + std):.1f}")
        shown.append(marker)
    return SvgLine(line.color, line.dash, None, shapes, shown)
