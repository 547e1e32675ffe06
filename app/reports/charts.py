"""Charts drawn on the server as SVG: no script, no external asset, readable when printed.

Every chart is an `<svg role="img">` with a title and a description; the page puts the numbers
it draws in a table under it. Nothing here reads from the database: the page's content module
hands over numbers, labels and which points to mark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 14, 34
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# Series colours and dashes for several lines: distinguishable by colour and by pattern
# (colour alone fails readers who do not see it), each ≥ 4.5:1 against white.
SERIES_COLOURS = ("#1f56b5", "#b3261e", "#17733a", "#7b3fa6", "#8f4f00", "#3d3d3d")
SERIES_DASHES = ("", "6 3", "2 3", "8 3 2 3", "10 4", "1 2")


@dataclass(frozen=True, slots=True)
class Scale:
    """The value axis: its range, whether smaller values are drawn higher (a rank), and how
    its ticks read."""

    low: float
    high: float
    fmt: Callable[[float], str]
    inverted: bool = False

    def y(self, value: float) -> float:
        span = (self.high - self.low) or 1.0
        share = (value - self.low) / span
        return TOP + (share if self.inverted else 1 - share) * PLOT_H

    def ticks(self, count: int = 5) -> list[float]:
        if self.inverted:  # ranks: whole numbers only
            every = max(1, round((self.high - self.low) / (count - 1)))
            return [float(r) for r in range(int(self.low), int(self.high) + 1, every)]
        step = (self.high - self.low) / (count - 1)
        return [self.low + step * i for i in range(count)]


@dataclass(frozen=True, slots=True)
class TrendPoint:
    label: str  # the period, as the table shows it
    value: float | None
    interval: tuple[float, float] | None
    marked: bool  # a real change from the point before


def _x(index: int, count: int) -> float:
    if count <= 1:
        return LEFT + PLOT_W / 2
    return LEFT + PLOT_W * index / (count - 1)


def _runs(flags: Sequence[bool]) -> list[list[int]]:
    """Indices where the flag holds, in maximal consecutive runs."""
    runs: list[list[int]] = []
    for index, flag in enumerate(flags):
        if not flag:
            continue
        if runs and runs[-1][-1] == index - 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def _num(value: float) -> str:
    return f"{value:.1f}"


def _frame(scale: Scale, labels: Sequence[str]) -> list[str]:
    """Grid lines with their value labels, and a few period labels along the bottom."""
    parts = ['<g class="axis" aria-hidden="true">']
    for tick in scale.ticks():
        y = _num(scale.y(tick))
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(scale.fmt(tick))}</text>'
        )
    count = len(labels)
    shown = sorted({0, count // 2, count - 1}) if count > 2 else list(range(count))
    for index in shown:
        anchor = "start" if index == 0 and count > 1 else "end" if index == count - 1 else "middle"
        if count == 1:
            anchor = "middle"
        parts.append(
            f'<text class="tick" x="{_num(_x(index, count))}" y="{HEIGHT - 10}" '
            f'text-anchor="{anchor}">{escape(labels[index])}</text>'
        )
    parts.append("</g>")
    return parts


def trend_chart(
    points: Sequence[TrendPoint],
    scale: Scale,
    *,
    chart_id: str,
    title: str,
    description: str,
    metric: str,
) -> Markup:
    """A line through the measured points, the 95% interval as a shaded band, and a ring
    around each point that is a real change from the one before."""
    count = len(points)
    parts = [
        f'<svg class="chart trend" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" data-metric="{escape(metric)}" '
        f'data-periods="{count}" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        *_frame(scale, [p.label for p in points]),
    ]
    for run in _runs([p.interval is not None for p in points]):
        upper = [(_x(i, count), scale.y(points[i].interval[1])) for i in run]  # type: ignore[index]
        lower = [(_x(i, count), scale.y(points[i].interval[0])) for i in run]  # type: ignore[index]
        if len(run) == 1:  # a lone interval: a short bar, so it is still seen
            (x, top), (_, bottom) = upper[0], lower[0]
            upper, lower = [(x - 3, top), (x + 3, top)], [(x - 3, bottom), (x + 3, bottom)]
        outline = [*upper, *reversed(lower)]
        d = "M" + " L".join(f"{_num(x)},{_num(y)}" for x, y in outline) + " Z"
        parts.append(f'<path class="band" d="{d}"/>')
    for run in _runs([p.value is not None for p in points]):
        if len(run) > 1:
            d = "M" + " L".join(
                f"{_num(_x(i, count))},{_num(scale.y(points[i].value))}"  # type: ignore[arg-type]
                for i in run
            )
            parts.append(f'<path class="line" d="{d}"/>')
    for index, point in enumerate(points):
        if point.value is None:
            continue
        cx, cy = _num(_x(index, count)), _num(scale.y(point.value))
        if point.marked:
            # A ring drawn as a path, so the chart's circles are its points, one per period
            # measured.
            ring = f"M{_num(float(cx) - 7)},{cy} a7,7 0 1,0 14,0 a7,7 0 1,0 -14,0"
            parts.append(f'<path class="marker" d="{ring}"/>')
        parts.append(
            f'<circle class="point" cx="{cx}" cy="{cy}" r="3.5" '
            f'data-period="{escape(point.label)}"><title>{escape(point.label)}: '
            f"{escape(scale.fmt(point.value))}{' — a real change' if point.marked else ''}"
            "</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]


def lines_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    scale: Scale,
    *,
    chart_id: str,
    title: str,
    description: str,
) -> Markup:
    """Several lines over the same periods, each in its own colour and dash pattern."""
    count = len(labels)
    parts = [
        f'<svg class="chart lines" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" data-periods="{count}" '
        f'preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        *_frame(scale, labels),
    ]
    for number, line in enumerate(series):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        dash = SERIES_DASHES[number % len(SERIES_DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g class="series" data-brand="{escape(line.name)}">')
        for run in _runs([v is not None for v in line.values]):
            coords = [(_x(i, count), scale.y(line.values[i])) for i in run]  # type: ignore[arg-type]
            if len(coords) > 1:
                d = "M" + " L".join(f"{_num(x)},{_num(y)}" for x, y in coords)
                parts.append(f'<path class="series-line" d="{d}" stroke="{colour}"{dash_attr}/>')
            for x, y in coords:
                parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="2.5" fill="{colour}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


def swatch(number: int) -> Markup:
    """The legend's sample of series `number`: its colour and dash."""
    colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
    dash = SERIES_DASHES[number % len(SERIES_DASHES)]
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return Markup(  # noqa: S704 - constants only
        f'<svg class="swatch" viewBox="0 0 28 10" aria-hidden="true">'
        f'<line x1="1" y1="5" x2="27" y2="5" stroke="{colour}" stroke-width="3"{dash_attr}/>'
        "</svg>"
    )
