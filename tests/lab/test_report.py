"""The report (pure): bucketing, the SVG timeline and the HTML page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from zonegate.lab.drills import Sample
from zonegate.lab.report import (
    Timeline,
    axis_ticks,
    bucket_samples,
    nice_ceiling,
    render_html,
    timeline_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def s(t, zone, ok=True, home="") -> Sample:
    return Sample(t, zone, "b", 200 if ok else 0, 0.001, "" if ok else "refused", home)


def test_bucket_samples_counts_successes_by_zone_answering_and_errors_by_device_zone():
    samples = [
        s(0.0, "a"),
        s(0.1, "a"),
        s(0.3, "b"),
        s(0.3, "b", ok=False, home="a"),  # a's device failed on b: an error of zone a
        s(0.6, "a", ok=False),
        s(0.9, "c"),  # not charted
        s(-0.1, "a"),  # before the range
        s(1.0, "a"),  # at the end: outside
    ]

    tl = bucket_samples(samples, ["a", "b"], start=0.0, end=1.0, bucket_s=0.25)

    assert tl.buckets == 4
    assert tl.ok == {"a": [2, 0, 0, 0], "b": [0, 1, 0, 0]}
    assert tl.errors == {"a": [0, 1, 1, 0], "b": [0, 0, 0, 0]}
    assert tl.end == pytest.approx(1.0)
    assert Timeline.from_json(tl.to_json()) == tl


def test_bucket_samples_drops_a_partial_last_bucket():
    tl = bucket_samples([s(0.95, "a"), s(0.3, "a")], ["a"], start=0.0, end=0.99, bucket_s=0.25)
    assert tl.ok == {"a": [0, 1, 0]}


@pytest.mark.parametrize(("bucket", "start", "end"), [(0.0, 0, 1), (-1.0, 0, 1), (0.25, 2, 1)])
def test_bucket_samples_rejects_bad_ranges(bucket, start, end):
    with pytest.raises(ValueError, match="bad timeline"):
        bucket_samples([], ["a"], start, end, bucket)


@pytest.mark.parametrize(
    ("x", "top"),
    [(0, 1), (0.5, 1), (1, 1), (1.2, 1.5), (7, 8), (150, 150), (301, 400), (999, 1000)],
)
def test_nice_ceiling(x, top):
    assert nice_ceiling(x) == pytest.approx(top)


STEPS = [
    {"name": "baseline", "title": "traffic", "start_s": 0.0, "end_s": 2.0, "kind": "traffic"},
    {"name": "kill-lb", "title": "<kill>", "start_s": 2.0, "end_s": 4.0, "fault_s": 2.1},
    {
        "name": "restore",
        "title": "back",
        "start_s": 4.0,
        "end_s": 6.0,
        "fault_s": 4.0,
        "kind": "repair",
    },
]


def _timeline(errors: bool = True) -> Timeline:
    samples = [s(i / 100, "a" if i % 2 else "b") for i in range(600)]
    if errors:
        samples.append(s(2.2, "b", ok=False, home="a"))
    return bucket_samples(samples, ["a", "b"], 0.0, 6.0)


def test_timeline_svg_marks_every_step_and_fault_and_is_valid_xml():
    svg = timeline_svg(_timeline(), STEPS, versions=[(2.5, 3), (4.1, 4), (4.11, 5)])

    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]
    assert [g.get("data-step") for g in groups] == ["baseline", "kill-lb", "restore"]
    # Each step band is labelled with its name, the title escaped in a tooltip.
    assert [g.find(f"{SVG}text").text for g in groups] == ["baseline", "kill-lb", "restore"]
    assert "kill-lb: <kill>" in [g.find(f"{SVG}title").text for g in groups]
    faults = [e for e in root.iter(f"{SVG}line") if e.get("class") == "fault"]
    repairs = [e for e in root.iter(f"{SVG}line") if e.get("class") == "repair"]
    assert [f.get("data-step") for f in faults] == ["kill-lb"]
    assert [r.get("data-step") for r in repairs] == ["restore"]
    series = [e.get("data-zone") for e in root.iter(f"{SVG}polyline")]
    assert series == ["a", "b"]
    bars = [e for e in root.iter(f"{SVG}rect") if e.get("class") == "errors"]
    assert [b.get("data-zone") for b in bars] == ["a"]
    # v4 and v5 are 10 ms apart: one label, the latest.
    labels = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("v")]
    assert sorted(labels) == ["v3", "v5"]


def test_timeline_svg_fault_line_at_the_fault_time():
    svg = timeline_svg(_timeline(), STEPS, width=1000)
    root = ET.fromstring(svg)
    fault = next(e for e in root.iter(f"{SVG}line") if e.get("class") == "fault")
    band = next(g for g in root.iter(f"{SVG}g") if g.get("data-step") == "kill-lb")
    rect = band.find(f"{SVG}rect")
    start, width = float(rect.get("x")), float(rect.get("width"))
    # 2.1 s is 5% into the 2 s step.
    assert float(fault.get("x1")) == pytest.approx(start + 0.05 * width, abs=0.2)


def test_timeline_svg_says_when_nothing_failed():
    assert "no failed requests" in timeline_svg(_timeline(errors=False), STEPS)
    assert "no failed requests" not in timeline_svg(_timeline(errors=True), STEPS)


def test_render_html_is_self_contained():
    doc = {
        "ok": False,
        "quick": True,
        "duration_s": 12.3,
        "router": "demo split router",
        "rate": 300.0,
        "error": "lb <x> died",
        "steps": [
            {
                **STEPS[1],
                "requests": 10,
                "failed": 1,
                "failed_counted": 1,
                "failovers": 4,
                "p50_ms": 0.5,
                "p99_ms": 2.0,
                "detect_s": None,
                "recover_s": 0.01,
                "recover_means": "first success",
                "budget": {"failed_after_detect": False},
                "budget_text": "fail<=0 rec<=1s",
                "checks": [{"name": "moved", "ok": False, "detail": "3/4", "required": True}],
                "routes": {"a": {"b": 9}},
                "errors": {"refused": 1},
                "events": [{"t_s": 2.1, "event": "SIGKILL lb"}],
                "met": False,
            }
        ],
        "timeline": _timeline().to_json(),
        "versions": [{"t_s": 2.5, "version": 3}],
        "processes": {"lb a": [1, 2]},
    }

    page = render_html(doc)

    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page
    assert 'data-step="kill-lb"' in page
    assert "<script" not in page
    # No resource from the network: the only URL is the SVG namespace.
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    assert "lb &lt;x&gt; died" in page
    assert "missed" in page
    assert "FAIL moved: 3/4" in page
    assert "a's devices: b 9" in page
    assert "fail&lt;=0 rec&lt;=1s" in page
    assert "1, 2" in page


def test_render_html_without_a_timeline():
    page = render_html({"ok": True, "steps": []})
    assert "every budget met" in page
    assert "<svg" not in page


# --- issue 12 item 27: served zone, legend, ticks ----------------------------------


def served(t, answered, by) -> Sample:
    return Sample(t, answered, "b", 200, 0.001, "", answered, served=by)


def test_bucket_samples_counts_by_the_zone_whose_backends_served():
    # kill-all: a's LB answers every request, b's backends serve the second half
    samples = [served(i / 10, "a", "a" if i < 5 else "b") for i in range(10)]

    tl = bucket_samples(samples, ["a", "b"], 0.0, 1.0, bucket_s=0.5)

    assert tl.ok == {"a": [5, 5], "b": [0, 0]}
    assert tl.served == {"a": [5, 0], "b": [0, 5]}
    assert Timeline.from_json(tl.to_json()) == tl


def test_a_report_without_served_counts_still_loads():
    doc = {"bucket_s": 0.25, "start_s": 0.0, "ok": {"a": [1]}, "errors": {"a": [0]}}
    assert Timeline.from_json(doc).served == {}


@pytest.mark.parametrize(
    ("peak", "most", "ticks"),
    [
        (400, 5, [0, 100, 200, 300, 400]),
        (405, 5, [0, 100, 200, 300, 400, 500]),
        (1200, 5, [0, 250, 500, 750, 1000, 1250]),
        (4, 2, [0, 2, 4]),
        (8, 2, [0, 5, 10]),
        (0.5, 5, [0, 1]),
        (0, 2, [0, 1]),
    ],
)
def test_axis_ticks_are_round_and_cover_the_peak(peak, most, ticks):
    assert axis_ticks(peak, most) == ticks


def _kill_all_timeline() -> Timeline:
    samples = [served(i / 100, "a", "a" if i < 300 else "b") for i in range(600)]
    samples += [served(i / 100 + 0.005, "b", "b") for i in range(600)]
    samples.append(s(2.2, "b", ok=False, home="a"))
    return bucket_samples(samples, ["a", "b"], 0.0, 6.0)


def _ticks(root, panel: str) -> list[str]:
    return [
        t.text
        for t in root.iter(f"{SVG}text")
        if t.get("class") == "tick" and t.get("data-panel") == panel
    ]


def test_timeline_svg_plots_answered_and_served_with_their_own_ticks():
    root = ET.fromstring(timeline_svg(_kill_all_timeline(), STEPS))

    series = [(e.get("data-panel"), e.get("data-zone")) for e in root.iter(f"{SVG}polyline")]
    assert series == [("answered", "a"), ("served", "a"), ("answered", "b"), ("served", "b")]
    titles = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "panel-title"]
    assert titles == [
        "requests/s, by the zone whose LB answered",
        "requests/s, by the zone whose backends served",
        "errors/s, by the zone of the device",
    ]
    # 100 req/s per zone, 200 on b's backends once a's spill there: one scale, round ticks
    assert _ticks(root, "answered") == ["0", "50", "100", "150", "200"]
    assert _ticks(root, "served") == _ticks(root, "answered")
    assert _ticks(root, "errors") == ["0", "2", "4"]  # one failure in a 250 ms bucket


def test_timeline_svg_without_served_counts_or_errors_has_no_empty_scale():
    root = ET.fromstring(timeline_svg(_timeline(errors=False), STEPS))

    assert {e.get("data-panel") for e in root.iter(f"{SVG}polyline")} == {"answered"}
    assert _ticks(root, "errors") == []  # not the 0/1 of an empty scale
    assert "no failed requests" in ET.tostring(root, encoding="unicode")


def test_timeline_svg_legend_is_above_every_plotted_line():
    svg = timeline_svg(_kill_all_timeline(), STEPS, versions=[(2.5, 3)])
    root = ET.fromstring(svg)

    legend_bottom = max(
        float(t.get("y"))
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "legend"
        for t in g.iter(f"{SVG}text")
    )
    bands_top = min(
        float(g.find(f"{SVG}rect").get("y"))
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "step"
    )
    points_top = min(
        float(pt.split(",")[1])
        for e in root.iter(f"{SVG}polyline")
        for pt in e.get("points").split()
    )
    assert legend_bottom < bands_top <= points_top
    labels = [
        t.text
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "legend"
        for t in g.iter(f"{SVG}text")
    ]
    assert labels[:4] == ["a", "b", "fault", "repair"]
