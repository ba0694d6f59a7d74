"""The benchmarks' charts: what was given is what is drawn, as SVG that parses."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from leifur_dev import benchfigures
from leifur_dev.svgplot import MARGIN, SVG_NS, Mark, Series, Span, line_chart, nice_ticks, timeline

NS = {"s": SVG_NS}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NS}}}svg"
    return root


def groups(root: ET.Element, kind: str) -> dict[str, ET.Element]:
    return {g.get("data-name", ""): g for g in root.iterfind(f".//s:g[@class='{kind}']", NS)}


@pytest.mark.parametrize("lo, hi, expected", [
    pytest.param(0, 100, [0, 20, 40, 60, 80, 100], id="round range"),
    pytest.param(0, 146, [0, 50, 100, 150], id="ends above the highest value"),
    pytest.param(-250, 730, [-400, -200, 0, 200, 400, 600, 800], id="negative start"),
    pytest.param(0, 0.5, [0, 0.1, 0.2, 0.3, 0.4, 0.5], id="fractions"),
    pytest.param(5, 5, [5, 5.2, 5.4, 5.6, 5.8, 6], id="empty range widened"),
])
def test_nice_ticks(lo, hi, expected):
    assert nice_ticks(lo, hi) == pytest.approx(expected)


def test_a_line_chart_holds_every_series_and_point_it_was_given():
    given = [Series("run E", [(1000, 146.0), (5000, 140.0)]), Series("run A", [(1000, 83.0), (5000, 65.0)])]
    root = parse(line_chart(given, title="Throughput", x_label="Services", y_label="per second"))
    series = groups(root, "series")
    assert list(series) == ["run E", "run A"]
    for s in given:
        dots = series[s.name].findall("s:circle", NS)
        assert [(float(d.get("data-x", "")), float(d.get("data-y", ""))) for d in dots] == list(s.points)
    # Higher values are drawn higher (smaller y), further right along x.
    e = series["run E"].findall("s:circle", NS)
    assert float(e[0].get("cx", "")) < float(e[1].get("cx", ""))
    assert float(e[0].get("cy", "")) < float(e[1].get("cy", ""))
    a = series["run A"].findall("s:circle", NS)
    assert float(e[0].get("cy", "")) < float(a[0].get("cy", ""))


def test_a_curve_without_markers_is_one_polyline_of_all_its_points():
    points = [(t / 10, t) for t in range(500)]
    root = parse(line_chart([Series("with IPs", points, markers=False)], title="t", x_label="s", y_label="n"))
    g = groups(root, "series")["with IPs"]
    assert g.findall("s:circle", NS) == []
    line = g.find("s:polyline", NS)
    assert line is not None and len(line.get("points", "").split()) == 500


@pytest.mark.parametrize("from_zero, at_the_axis", [
    pytest.param(True, False, id="from zero: the first point is inside"),
    pytest.param(False, True, id="from the data: the first point is on the y axis"),
])
def test_the_axes_start_at_zero_unless_told(from_zero, at_the_axis):
    root = parse(line_chart([Series("s", [(2.5, 10.0), (4.0, 20.0)])], title="t", x_label="x", y_label="y",
                            from_zero=from_zero))
    first = groups(root, "series")["s"].findall("s:circle", NS)[0]
    assert (float(first.get("cx", "")) == MARGIN["left"]) is at_the_axis


def test_text_is_escaped():
    root = parse(line_chart([Series("a < b & c", [(0, 1)])], title="<x> & 'y'", x_label="s", y_label="n"))
    assert root.find("s:title", NS).text == "<x> & 'y'"  # type: ignore[union-attr]
    assert "a < b & c" in groups(root, "series")


def test_a_timeline_has_a_lane_per_name_a_tick_per_event_and_its_marks():
    lanes = [("node1", [-20.0, -10.0, 0.0]), ("node2", [480.0, 490.0])]
    root = parse(timeline(lanes, title="failover", x_label="ms", marks=[Mark(0, "SIGKILL")],
                          spans=[Span(0, 480, "no answer for 480 ms")]))
    drawn = groups(root, "lane")
    assert list(drawn) == ["node1", "node2"]
    for name, times in lanes:
        assert [float(t.get("data-t", "")) for t in drawn[name].findall("s:line", NS)] == times
    mark = root.find(".//s:g[@class='mark']", NS)
    assert mark is not None and float(mark.get("data-at", "")) == 0
    span = root.find(".//s:g[@class='span']", NS)
    assert span is not None and (float(span.get("data-start", "")), float(span.get("data-end", ""))) == (0, 480)
    assert "no answer for 480 ms" in ET.tostring(span, encoding="unicode")


@pytest.mark.parametrize("draw", [
    pytest.param(lambda: line_chart([Series("x", [])], title="t", x_label="x", y_label="y"), id="line chart"),
    pytest.param(lambda: timeline([("x", [])], title="t", x_label="x"), id="timeline"),
])
def test_nothing_to_draw_is_an_error(draw):
    with pytest.raises(ValueError):
        draw()


def probe_result() -> dict:
    """A probe's report (leifur_dev.probe.summarize): node1 answers every 10 ms from 0 to 2 s, then
    silence for 0.5 s, then node2 every 10 ms to 4 s."""
    answers = [[round(i / 100, 6), "02:00:00:00:00:01"] for i in range(201)]
    answers += [[round(2.5 + i / 100, 6), "02:00:00:00:00:02"] for i in range(151)]
    return {"answers": answers, "longest_gap": 0.5, "longest_gap_at": 2.0, "start": 1000.0}


def test_a_failover_record_keeps_the_window_around_the_gap():
    record = benchfigures.failover_record(probe_result(), killed_at=1.95, names={"02:00:00:00:00:01": "node1"},
                                          fault="SIGKILL")
    times = [t for t, _ in record["answers"]]
    assert min(times) == pytest.approx(1.95 - benchfigures.CONTEXT)
    assert max(times) == pytest.approx(2.5 + benchfigures.CONTEXT)
    assert {mac for _, mac in record["answers"]} == {"02:00:00:00:00:01", "02:00:00:00:00:02"}


def test_the_failover_timeline_puts_each_mac_in_its_lane_around_the_fault():
    record = benchfigures.failover_record(probe_result(), killed_at=2.0, names={"02:00:00:00:00:01": "node1",
                                                                                "02:00:00:00:00:02": "node2"},
                                          fault="SIGKILL")
    root = parse(benchfigures.failover_timeline(record, "failover"))
    lanes = groups(root, "lane")
    assert list(lanes) == ["node1 (02:00:00:00:00:01)", "node2 (02:00:00:00:00:02)"]
    node1 = [float(t.get("data-t", "")) for t in lanes["node1 (02:00:00:00:00:01)"].findall("s:line", NS)]
    node2 = [float(t.get("data-t", "")) for t in lanes["node2 (02:00:00:00:00:02)"].findall("s:line", NS)]
    assert max(node1) == 0 and min(node2) == 500  # milliseconds since the kill
    span = root.find(".//s:g[@class='span']", NS)
    assert span is not None and (float(span.get("data-start", "")), float(span.get("data-end", ""))) == (0, 500)


def test_the_committed_images_are_what_the_recorded_results_draw(tmp_path):
    """docs/img holds the images as `python -m leifur_dev.benchfigures docs/img` draws them."""
    for drawn in benchfigures.recorded(tmp_path):
        committed = benchfigures.REPO / "docs" / "img" / drawn.name
        redraw = "python -m leifur_dev.benchfigures docs/img"
        assert committed.read_text() == drawn.read_text(), f"{drawn.name} differs; redraw: {redraw}"
