"""Charts as SVG text, in pure Python: the benchmarks draw their results with it.

A plotting library would be a large dependency for two kinds of chart; SVG is text, renders in
every browser and in the docs site, and a test can read back what was drawn. Every series is one
`<g class="series" data-name=…>` holding its `<polyline>` and, unless it has too many points to mark,
a `<circle>` per point (data-x, data-y: the values given),
every timeline lane one `<g class="lane" data-name=…>` holding a `<line>` per event (data-t).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

SVG_NS = "http://www.w3.org/2000/svg"
# Distinguishable in colour-blind palettes (Okabe-Ito) and in grey.
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
FONT = "font-family:sans-serif;font-size:12px"
WIDTH, HEIGHT = 720, 360
MARGIN = {"left": 70, "right": 36, "top": 36, "bottom": 48}
LEGEND = 24  # the legend's row, under the x axis's label


@dataclass(frozen=True)
class Series:
    """One line of a line chart: its name (the legend) and its (x, y) points."""

    name: str
    points: Sequence[tuple[float, float]]
    markers: bool = True  # a dot per point; off for curves of thousands of points


@dataclass(frozen=True)
class Mark:
    """A vertical line at `at`, labelled (an event on the x axis: a kill, a restart)."""

    at: float
    label: str


@dataclass(frozen=True)
class Span:
    """A shaded stretch of the x axis, labelled (a blackout)."""

    start: float
    end: float
    label: str


@dataclass
class _Frame:
    """The plot area and the value ranges it maps."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = WIDTH
    height: int = HEIGHT
    margin: dict[str, int] = field(default_factory=lambda: dict(MARGIN))

    def x(self, v: float) -> float:
        left, right = self.margin["left"], self.width - self.margin["right"]
        return left + (v - self.x0) / ((self.x1 - self.x0) or 1) * (right - left)

    def y(self, v: float) -> float:
        top, bottom = self.margin["top"], self.height - self.margin["bottom"]
        return bottom - (v - self.y0) / ((self.y1 - self.y0) or 1) * (bottom - top)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi], about `count` of them (steps of 1, 2 or 5 times 10^k)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v < hi + step / 2:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _label(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"


def _svg(title: str, width: int = WIDTH, height: int = HEIGHT) -> ET.Element:
    root = ET.Element("svg", xmlns=SVG_NS, width=str(width), height=str(height),
                      viewBox=f"0 0 {width} {height}", role="img", style=FONT)
    ET.SubElement(root, "title").text = title
    ET.SubElement(root, "rect", width=str(width), height=str(height), fill="white")
    ET.SubElement(root, "text", x=str(width / 2), y="20", attrib={"text-anchor": "middle",
                  "font-weight": "bold"}).text = title
    return root


def _text(parent: ET.Element, x: float, y: float, s: str, anchor: str = "middle", **attrib: str) -> None:
    ET.SubElement(parent, "text", x=f"{x:.1f}", y=f"{y:.1f}", attrib={"text-anchor": anchor, **attrib}).text = s


def _axes(root: ET.Element, f: _Frame, x_label: str, y_label: str | None, y_ticks: bool = True) -> None:
    axes = ET.SubElement(root, "g", attrib={"class": "axes", "stroke": "#888"})
    bottom, left = f.height - f.margin["bottom"], f.margin["left"]
    for t in nice_ticks(f.x0, f.x1):
        if f.x0 <= t <= f.x1:
            ET.SubElement(axes, "line", x1=f"{f.x(t):.1f}", x2=f"{f.x(t):.1f}", y1=str(bottom), y2=str(bottom + 5))
            _text(root, f.x(t), bottom + 18, _label(t))
    if y_ticks:
        for t in nice_ticks(f.y0, f.y1):
            if f.y0 <= t <= f.y1:
                ET.SubElement(axes, "line", x1=str(left), x2=str(f.width - f.margin["right"]),
                              y1=f"{f.y(t):.1f}", y2=f"{f.y(t):.1f}", stroke="#eee")
                _text(root, left - 6, f.y(t) + 4, _label(t), anchor="end")
    ET.SubElement(axes, "line", x1=str(left), x2=str(f.width - f.margin["right"]), y1=str(bottom), y2=str(bottom))
    ET.SubElement(axes, "line", x1=str(left), x2=str(left), y1=str(f.margin["top"]), y2=str(bottom))
    _text(root, (left + f.width - f.margin["right"]) / 2, bottom + 36, x_label)
    if y_label:
        cy = (f.margin["top"] + bottom) / 2
        _text(root, 16, cy, y_label, transform=f"rotate(-90 16 {cy:.1f})")


def _marks(root: ET.Element, f: _Frame, marks: Sequence[Mark], spans: Sequence[Span]) -> None:
    top, bottom = f.margin["top"], f.height - f.margin["bottom"]
    for s in spans:
        g = ET.SubElement(root, "g", attrib={"class": "span", "data-start": repr(s.start), "data-end": repr(s.end)})
        width = max(1.0, f.x(s.end) - f.x(s.start))
        ET.SubElement(g, "rect", x=f"{f.x(s.start):.1f}", y=str(top), width=f"{width:.1f}", height=str(bottom - top),
                      fill="#d55e00", attrib={"fill-opacity": "0.12"})
        _text(g, (f.x(s.start) + f.x(s.end)) / 2, top + 14, s.label, fill="#a04000")
    for m in marks:
        g = ET.SubElement(root, "g", attrib={"class": "mark", "data-at": repr(m.at)})
        ET.SubElement(g, "line", x1=f"{f.x(m.at):.1f}", x2=f"{f.x(m.at):.1f}", y1=str(top), y2=str(bottom),
                      stroke="#333", attrib={"stroke-dasharray": "4 3"})
        _text(g, f.x(m.at) + 4, top + 30, m.label, anchor="start")


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               marks: Sequence[Mark] = (), from_zero: bool = True) -> str:
    """A line per series, with a legend; both axes cover every point, and start at 0 unless told."""
    xs = [x for s in series for x, _ in s.points] + [m.at for m in marks]
    ys = [y for s in series for _, y in s.points]
    if not xs or not ys:
        raise ValueError("nothing to draw")
    x_ticks = nice_ticks(min(0, *xs) if from_zero else min(xs), max(xs))
    y_ticks = nice_ticks(min(0, *ys) if from_zero else min(ys), max(ys))
    height = HEIGHT + LEGEND
    f = _Frame(x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1], height=height,
               margin={**MARGIN, "bottom": MARGIN["bottom"] + LEGEND})
    root = _svg(title, height=height)
    _axes(root, f, x_label, y_label)
    _marks(root, f, marks, ())
    legend_x = float(f.margin["left"])
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        g = ET.SubElement(root, "g", attrib={"class": "series", "data-name": s.name})
        ET.SubElement(g, "polyline", fill="none", stroke=colour, attrib={"stroke-width": "2"},
                      points=" ".join(f"{f.x(x):.1f},{f.y(y):.1f}" for x, y in s.points))
        for x, y in s.points if s.markers else ():
            dot = ET.SubElement(g, "circle", cx=f"{f.x(x):.1f}", cy=f"{f.y(y):.1f}", r="3.5",
                                fill=colour, attrib={"data-x": repr(x), "data-y": repr(y)})
            ET.SubElement(dot, "title").text = f"{s.name}: {_label(x)}, {_label(y)}"
        # Side by side under the plot, where no data can be; 6.5 px a character is about right at 12 px.
        ET.SubElement(g, "rect", x=f"{legend_x:.1f}", y=str(height - 14), width="14", height="4", fill=colour)
        _text(g, legend_x + 20, height - 8, s.name, anchor="start")
        legend_x += 36 + 6.5 * len(s.name)
    return _serialize(root)


def timeline(lanes: Sequence[tuple[str, Sequence[float]]], *, title: str, x_label: str,
             marks: Sequence[Mark] = (), spans: Sequence[Span] = ()) -> str:
    """One lane per name, a tick at every time in it (which MAC answered when)."""
    times = [t for _, ts in lanes for t in ts] + [m.at for m in marks] + [v for s in spans for v in (s.start, s.end)]
    if not times:
        raise ValueError("nothing to draw")
    lane_h = 44
    height = MARGIN["top"] + MARGIN["bottom"] + 24 + lane_h * len(lanes)
    margin = {**MARGIN, "left": 190}
    pad = (max(times) - min(times)) * 0.02  # the first and last ticks clear of the axes
    f = _Frame(min(times) - pad, max(times) + pad, 0, len(lanes), height=height, margin=margin)
    root = _svg(title, height=height)
    _axes(root, f, x_label, None, y_ticks=False)
    _marks(root, f, marks, spans)
    for i, (name, ts) in enumerate(lanes):
        colour = COLOURS[i % len(COLOURS)]
        g = ET.SubElement(root, "g", attrib={"class": "lane", "data-name": name})
        mid = margin["top"] + 24 + lane_h * i + lane_h / 2
        _text(g, margin["left"] - 8, mid + 4, name, anchor="end")
        for t in ts:
            ET.SubElement(g, "line", x1=f"{f.x(t):.1f}", x2=f"{f.x(t):.1f}", y1=f"{mid - 12:.1f}", y2=f"{mid + 12:.1f}",
                          stroke=colour, attrib={"stroke-width": "1.5", "data-t": repr(t)})
    return _serialize(root)


def _serialize(root: ET.Element) -> str:
    ET.indent(root, space=" ")
    return ET.tostring(root, encoding="unicode") + "\n"
