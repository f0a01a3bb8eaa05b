"""The demo's report: a timeline of what clients saw, as JSON data, SVG and HTML.

Theory of operation
-------------------
`bucket_samples` cuts the run into fixed buckets (250 ms by default) and counts, per
zone, the requests that zone's LB answered successfully, the requests that zone's
backends served (the zone a backend names in `X-Zone`: in kill-all the changping LB
still answers, but yanqing's backends serve), and the failed requests of that zone's
devices. `timeline_svg` draws those counts as rates (per second) in panels sharing
one time axis, each with its title and ticks, with every step as a labelled band,
every fault as a dashed line and the legend above the plot::

     — changping  — yanqing  - - fault  - - repair  ▲ client version
      kill-one   drain    kill-all    kill-lb  cutover  restore
     requests/s, by the zone whose LB answered
    ┌─────────┬────────┬───────────┬─────────┬────────┬────────┐
    │  ─── changping ───────────────.___ ...                    │
    └─────────┴────────┴───────────┴─────────┴────────┴────────┘
     requests/s, by the zone whose backends served
    ┌─────────┬────────┬───────────┬─────────┬────────┬────────┐
    │  ─── changping ──────.___________ ...                     │
    └─────────┴────────┴───────────┴─────────┴────────┴────────┘
     errors/s, by the zone of the device
    ┌─────────┬────────┬───────────┬─────────┬────────┬────────┐
    │                ▮                                          │
    └─────────┴────────┴───────────┴─────────┴────────┴────────┘

`render_html` builds one self-contained page (inline CSS and SVG, no script, no
network) from the JSON report document alone, so the page can be rebuilt from
``report.json`` later.

This module is pure: no I/O, no clock; the caller writes the files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zonegate.lab.drills import Sample

__all__ = [
    "BUCKET_S",
    "Timeline",
    "axis_ticks",
    "bucket_samples",
    "nice_ceiling",
    "render_html",
    "timeline_svg",
]

BUCKET_S = 0.25
ZONE_COLORS = ("#1f6fb4", "#2a9d3f", "#8e44ad", "#b5651d", "#7f8c8d")
FAULT_COLOR = "#c0392b"
REPAIR_COLOR = "#148f77"


@dataclass(frozen=True, slots=True)
class Timeline:
    """Counts per bucket: `ok[zone][i]`, `served[zone][i]` and `errors[zone][i]` cover
    `[start + i * bucket_s, start + (i + 1) * bucket_s)`.

    `ok` counts successes by the zone whose LB answered, `served` by the zone whose
    backend served (empty in reports written before it existed), `errors` failures by
    the zone of the device.
    """

    bucket_s: float
    start: float
    ok: dict[str, list[int]]
    errors: dict[str, list[int]]
    served: dict[str, list[int]] = field(default_factory=dict)

    @property
    def buckets(self) -> int:
        return len(next(iter(self.ok.values()), []))

    @property
    def end(self) -> float:
        return self.start + self.buckets * self.bucket_s

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket_s": self.bucket_s,
            "start_s": self.start,
            "ok": self.ok,
            "served": self.served,
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Timeline:
        return cls(
            doc["bucket_s"],
            doc["start_s"],
            dict(doc["ok"]),
            dict(doc["errors"]),
            dict(doc.get("served") or {}),
        )


def bucket_samples(
    samples: Iterable[Sample],
    zones: Sequence[str],
    start: float,
    end: float,
    bucket_s: float = BUCKET_S,
) -> Timeline:
    """Count requests per zone and bucket.

    Args:
        samples: the requests; each counts in the bucket of its start time `t`.
        zones: the zones to chart, in legend order; a sample of another zone is
            skipped.
        start, end: the charted time range; samples outside it are skipped, and so
            are those of a last bucket that would end after `end`.
        bucket_s: the bucket width in seconds (> 0).

    Returns:
        A `Timeline` whose `ok` counts successes by the zone that answered, `served`
        successes by the zone of the backend that served (`Sample.served`; a sample
        without it is not counted there), and `errors` failures by the zone of the
        device (`Sample.owner`): which zone's users saw the error.

    Raises:
        ValueError: `bucket_s` is not positive or `end` is before `start`.
    """
    if bucket_s <= 0 or end < start:
        raise ValueError(f"bad timeline: bucket {bucket_s}, range {start}..{end}")
    # Whole buckets only: a partial last bucket would draw a false drop in the rate.
    n = max(1, math.floor((end - start) / bucket_s + 1e-9))
    ok = {z: [0] * n for z in zones}
    served = {z: [0] * n for z in zones}
    errors = {z: [0] * n for z in zones}
    for s in samples:
        if not start <= s.t < end:
            continue
        i = int((s.t - start) / bucket_s)
        if i >= n:
            continue
        if s.ok:
            if s.zone in ok:
                ok[s.zone][i] += 1
            if s.served in served:
                served[s.served][i] += 1
        elif s.owner in errors:
            errors[s.owner][i] += 1
    return Timeline(bucket_s, start, ok, errors, served)


def nice_ceiling(x: float) -> float:
    """The smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times 10^k that is ≥ `x` (1 for
    x ≤ 1): an axis top."""
    if x <= 1:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= x - 1e-9:
            return m * exp
    return 10 * exp  # pragma: no cover - the loop always returns


def axis_ticks(peak: float, most: int = 5) -> list[float]:
    """Tick values for a rate axis from 0 up to at least `peak`: evenly spaced by 1, 2,
    2.5 or 5 times 10^k (never less than 1: counts are whole), at most `most`
    intervals; `[0, 1]` when `peak` ≤ 0."""
    if peak <= 0:
        return [0.0, 1.0]
    want = max(1.0, peak / most)
    exp = 10 ** math.floor(math.log10(want))
    step = next(m * exp for m in (1, 2, 2.5, 5, 10) if m * exp >= want - 1e-9)
    n = math.ceil(peak / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _f(x: float) -> str:
    return f"{x:.1f}"


def _kind(step: Mapping[str, Any]) -> str:
    kind = str(step.get("kind") or ("fault" if step.get("fault_s") is not None else "traffic"))
    return kind if kind in ("fault", "repair") else "traffic"


@dataclass(frozen=True, slots=True)
class _Panel:
    key: str
    title: str
    top: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height


def timeline_svg(
    tl: Timeline,
    steps: Sequence[Mapping[str, Any]],
    versions: Sequence[tuple[float, int]] = (),
    width: int = 960,
) -> str:
    """The timeline as one ``<svg>`` element.

    Args:
        tl: the counts.
        steps: step dicts as in the JSON report (`name`, `start_s`, `end_s`, `title`,
            `kind`: "fault", "repair" or "traffic", and `fault_s`, when the action
            happened).
        versions: (time, version) when the client started following each control
            version: a labelled mark in a row under the time axis.
        width: the drawing width in pixels.

    Returns:
        SVG markup, panels stacked on one time axis, each with its title above it and
        its own ticks: requests/s by the zone whose LB answered, requests/s by the zone
        whose backends served (when the timeline has those counts), one line per zone
        (class ``series``, ``data-panel`` "answered" or "served"); errors/s by the
        zone of the device (bars, class ``errors``). A band per step labelled with its
        name (class ``step``, attribute ``data-step``), a dashed line at each fault
        (class ``fault``) or repair (``repair``), and a legend above the plot, where
        it covers no line.
    """
    left, right = 56, 16
    plot_w = width - left - right
    legend_y, labels_y, top = 16, 40, 56
    title_h = 24  # room above each panel for its title
    rate = 1.0 / tl.bucket_s
    zones = list(tl.ok)
    has_served = any(any(v) for v in tl.served.values())
    panels: list[_Panel] = []
    y = top
    specs = [("answered", "requests/s, by the zone whose LB answered", 150.0)]
    if has_served:
        specs.append(("served", "requests/s, by the zone whose backends served", 150.0))
    specs.append(("errors", "errors/s, by the zone of the device", 60.0))
    for key, title, h in specs:
        panels.append(_Panel(key, title, y + title_h, h))
        y = panels[-1].bottom
    bottom = y
    axis_h = 24
    versions_h = 24 if versions else 0
    height = int(bottom + axis_h + versions_h + 8)
    t0, t1 = tl.start, max(tl.end, tl.start + tl.bucket_s)

    def x(t: float) -> float:
        return left + (min(max(t, t0), t1) - t0) / (t1 - t0) * plot_w

    peak_ok = max((max(v, default=0) for v in (*tl.ok.values(), *tl.served.values())), default=0)
    peak_err = max((max(v, default=0) for v in tl.errors.values()), default=0)
    ticks = {
        "answered": axis_ticks(peak_ok * rate),
        "served": axis_ticks(peak_ok * rate),  # the same scale: the two panels compare
        "errors": axis_ticks(peak_err * rate, most=2),
    }
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" class="timeline" '
        'font-family="system-ui, sans-serif" font-size="11">',
        "<title>requests/s by the zone that answered and that served, and errors/s, "
        "with the drill steps</title>",
    ]
    # Step bands and labels: alternate shades, fault steps tinted.
    for i, st in enumerate(steps):
        a, b = x(float(st["start_s"])), x(float(st.get("end_s") or st["start_s"]))
        kind = _kind(st)
        fill = {"fault": "#fdebd0", "repair": "#e8f6f3"}.get(
            kind, "#f4f6f7" if i % 2 == 0 else "#ffffff"
        )
        name = html.escape(str(st["name"]))
        out.append(
            f'<g class="step" data-step="{name}"><rect x="{_f(a)}" y="{top}" '
            f'width="{_f(max(0.0, b - a))}" height="{bottom - top}" fill="{fill}"/>'
            f'<line x1="{_f(a)}" y1="{labels_y - 10}" x2="{_f(a)}" y2="{bottom}" '
            'stroke="#aab7b8" stroke-width="0.8"/>'
            f'<text x="{_f(a + 3)}" y="{labels_y + (i % 2) * 11}" fill="#2c3e50">{name}</text>'
            f"<title>{name}: {html.escape(str(st.get('title', '')))}</title></g>"
        )
    for st in steps:
        kind = _kind(st)
        if st.get("fault_s") is None or kind == "traffic":
            continue
        fx = x(float(st["fault_s"]))
        color = FAULT_COLOR if kind == "fault" else REPAIR_COLOR
        out.append(
            f'<line class="{kind}" data-step="{html.escape(str(st["name"]))}" x1="{_f(fx)}" '
            f'y1="{top}" x2="{_f(fx)}" y2="{bottom}" stroke="{color}" '
            'stroke-width="1.2" stroke-dasharray="4 3"/>'
        )
    # Each panel: title above it, grid and ticks of its own, a frame.
    for p in panels:
        out.append(
            f'<text class="panel-title" x="{left}" y="{_f(p.top - 7)}" fill="#2c3e50" '
            f'font-weight="600">{html.escape(p.title)}</text>'
            f'<rect x="{left}" y="{_f(p.top)}" width="{plot_w}" height="{_f(p.height)}" '
            'fill="none" stroke="#aab7b8" stroke-width="0.8"/>'
        )
        values = ticks[p.key]
        if p.key == "errors" and not peak_err:
            values = []  # "no failed requests" says it; a 0-1 scale would only confuse
        for v in values:
            ty = p.bottom - v / values[-1] * p.height
            out.append(
                f'<line x1="{left}" y1="{_f(ty)}" x2="{left + plot_w}" y2="{_f(ty)}" '
                'stroke="#d5dbdb" stroke-width="0.6"/>'
                f'<text class="tick" data-panel="{p.key}" x="{left - 5}" y="{_f(ty + 4)}" '
                f'text-anchor="end" fill="#566573">{v:g}</text>'
            )
    # The time axis.
    span = t1 - t0
    tick = nice_ceiling(span / 10)
    t = math.ceil(t0 / tick) * tick
    while t <= t1 + 1e-9:
        tx = x(t)
        out.append(
            f'<line x1="{_f(tx)}" y1="{bottom}" x2="{_f(tx)}" y2="{bottom + 4}" stroke="#566573"/>'
            f'<text x="{_f(tx)}" y="{bottom + 16}" text-anchor="middle" fill="#566573">'
            f"{t:g}s</text>"
        )
        t += tick
    # Control versions: a row of their own under the time axis.
    vy = bottom + axis_h
    label_x = math.inf
    for vt, v in sorted(versions, reverse=True):
        if not t0 <= vt <= t1:
            continue
        vx = x(vt)
        # Versions a few ms apart share one label: the latest.
        label = ""
        if label_x - vx > 24:
            label = f'<text x="{_f(vx + 6)}" y="{vy + 12}" fill="#5d6d7e">v{v}</text>'
            label_x = vx
        out.append(
            f'<g class="version"><path d="M{_f(vx - 4)},{vy + 12} L{_f(vx + 4)},{vy + 12} '
            f'L{_f(vx)},{vy + 4} Z" fill="#5d6d7e"/>{label}'
            f"<title>the client follows control version {v} from {vt:.2f}s</title></g>"
        )
    # Series.
    by_panel = {p.key: p for p in panels}
    top_ok = ticks["answered"][-1]
    for zi, zone in enumerate(zones):
        color = ZONE_COLORS[zi % len(ZONE_COLORS)]
        for key, counts in (("answered", tl.ok[zone]), ("served", tl.served.get(zone, []))):
            if key not in by_panel:
                continue
            p = by_panel[key]
            pts = []
            for i, n in enumerate(counts):
                px = x(t0 + (i + 0.5) * tl.bucket_s)
                py = p.bottom - min(1.0, n * rate / top_ok) * p.height
                pts.append(f"{_f(px)},{_f(py)}")
            out.append(
                f'<polyline class="series" data-zone="{html.escape(zone)}" '
                f'data-panel="{key}" fill="none" stroke="{color}" stroke-width="1.6" '
                f'points="{" ".join(pts)}"/>'
            )
        errors = by_panel["errors"]
        top_err = ticks["errors"][-1]
        bar_w = max(1.0, plot_w * tl.bucket_s / (t1 - t0) / max(1, len(zones)))
        for i, n in enumerate(tl.errors.get(zone, [])):
            if not n:
                continue
            h = min(1.0, n * rate / top_err) * errors.height
            bx = x(t0 + i * tl.bucket_s) + zi * bar_w
            out.append(
                f'<rect class="errors" data-zone="{html.escape(zone)}" x="{_f(bx)}" '
                f'y="{_f(errors.bottom - h)}" width="{_f(bar_w)}" height="{_f(h)}" '
                f'fill="{color}"><title>{html.escape(zone)}: {n * rate:g} errors/s</title></rect>'
            )
    if not peak_err:
        e = by_panel["errors"]
        out.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{e.top + e.height / 2 + 4:.1f}" '
            'text-anchor="middle" fill="#1e8449" font-size="13">no failed requests</text>'
        )
    # Legend: one row above the plot, where it covers no line.
    lx = float(left)
    items: list[tuple[str, str]] = [
        (f'stroke="{ZONE_COLORS[zi % len(ZONE_COLORS)]}" stroke-width="3"', zone)
        for zi, zone in enumerate(zones)
    ]
    items.append((f'stroke="{FAULT_COLOR}" stroke-width="1.2" stroke-dasharray="4 3"', "fault"))
    items.append((f'stroke="{REPAIR_COLOR}" stroke-width="1.2" stroke-dasharray="4 3"', "repair"))
    for style, label in items:
        out.append(
            f'<g class="legend"><line x1="{_f(lx)}" y1="{legend_y - 4}" x2="{_f(lx + 18)}" '
            f'y2="{legend_y - 4}" {style}/><text x="{_f(lx + 23)}" y="{legend_y}" '
            f'fill="#2c3e50">{html.escape(label)}</text></g>'
        )
        lx += 23 + 7 * len(label) + 18
    if versions:
        out.append(
            f'<g class="legend"><path d="M{_f(lx + 5)},{legend_y} L{_f(lx + 13)},{legend_y} '
            f'L{_f(lx + 9)},{legend_y - 8} Z" fill="#5d6d7e"/><text x="{_f(lx + 18)}" '
            f'y="{legend_y}" fill="#2c3e50">the client follows a new control version</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


# --- the page -------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1c2833; max-width: 1100px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
.meta { color: #566573; margin-bottom: 12px; }
.verdict { font-weight: bold; padding: 2px 8px; border-radius: 4px; }
.ok { background: #d5f5e3; color: #145a32; } .bad { background: #fadbd8; color: #78281f; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e8e8; padding: 4px 8px; text-align: right; }
th { background: #f4f6f7; } td { white-space: nowrap; }
td.l, th.l { text-align: left; white-space: normal; }
ul { margin: 2px 0 6px; padding-left: 18px; font-size: 13px; }
.check-fail { color: #922b21; } .check-warn { color: #9a7d0a; } .dim { color: #7f8c8d; }
svg.timeline { border: 1px solid #e5e8e8; background: #fff; }
"""


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def _step_rows(steps: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for st in steps:
        met = st.get("met")
        verdict = (
            '<span class="verdict ok">met</span>'
            if met
            else ('<span class="verdict bad">missed</span>')
        )
        failed = str(st.get("failed", 0))
        if st.get("budget", {}).get("failed_after_detect"):
            failed += f" ({st.get('failed_counted', 0)} after detect)"
        rows.append(
            "<tr>"
            f'<td class="l"><b>{html.escape(str(st["name"]))}</b></td>'
            f'<td class="l">{html.escape(str(st.get("title", "")))}</td>'
            f"<td>{st.get('requests', 0)}</td><td>{html.escape(failed)}</td>"
            f"<td>{st.get('failovers', 0)}</td>"
            f"<td>{_ms(st.get('p50_ms'))}</td><td>{_ms(st.get('p99_ms'))}</td>"
            f"<td>{_s(st.get('detect_s'))}</td><td>{_s(st.get('recover_s'))}</td>"
            f'<td class="l">{html.escape(str(st.get("budget_text", "")))}</td>'
            f'<td class="l">{verdict}</td></tr>'
        )
    head = "".join(
        f'<th class="{"l" if h in ("step", "what", "budget", "") else ""}">{h}</th>'
        for h in (
            "step",
            "what",
            "requests",
            "failed",
            "failovers",
            "p50",
            "p99",
            "detect",
            "recover",
            "budget",
            "",
        )
    )
    return f'<table class="steps"><tr>{head}</tr>{"".join(rows)}</table>'


def _step_details(steps: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for st in steps:
        items = []
        if st.get("detect_means") and st.get("detect_s") is not None:
            items.append(f'<li><span class="dim">detect:</span> {html.escape(st["detect_means"])}')
        if st.get("recover_means") and st.get("recover_s") is not None:
            items.append(
                f'<li><span class="dim">recover:</span> {html.escape(st["recover_means"])}'
            )
        for c in st.get("checks", []):
            cls = "" if c["ok"] else ("check-fail" if c.get("required", True) else "check-warn")
            mark = "ok" if c["ok"] else ("FAIL" if c.get("required", True) else "warn")
            items.append(
                f'<li class="{cls}">{mark} {html.escape(c["name"])}: {html.escape(c["detail"])}'
            )
        if st.get("routes"):
            moved = "; ".join(
                f"{html.escape(home)}'s devices: "
                + ", ".join(f"{html.escape(z)} {n}" for z, n in by.items())
                for home, by in st["routes"].items()
            )
            items.append(f'<li><span class="dim">answered by zone:</span> {moved}')
        if st.get("errors"):
            kinds = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(st["errors"].items()))
            items.append(f'<li class="check-fail">errors: {kinds}')
        for ev in st.get("events", []):
            items.append(
                f'<li class="dim">{ev["t_s"]:.2f}s {html.escape(str(ev["event"]))}'
                if ev.get("t_s") is not None
                else f'<li class="dim">{html.escape(str(ev["event"]))}'
            )
        parts.append(f"<h3>{html.escape(str(st['name']))}</h3><ul>{''.join(items)}</ul>")
    return "".join(parts)


def render_html(doc: Mapping[str, Any]) -> str:
    """The whole report page from the JSON report document.

    Args:
        doc: the report as `zonegate demo` writes it to report.json (`steps`,
            `timeline`, `ok`, `duration_s`, ...); `timeline` may be missing (no chart);
            `name` titles the page (default "zonegate demo"; `zonegate lab` sets it).

    Returns:
        A complete HTML document with inline CSS and SVG, no script, no external
        resource.
    """
    steps = list(doc.get("steps", []))
    ok = bool(doc.get("ok"))
    name = html.escape(str(doc.get("name") or "zonegate demo"))
    verdict = (
        '<span class="verdict ok">every budget met</span>'
        if ok
        else '<span class="verdict bad">budget missed or run failed</span>'
    )
    meta = [
        f"{doc.get('duration_s', 0):.1f} s",
        f"{'quick' if doc.get('quick') else 'full'} drill",
        f"client: {doc.get('router', '?')}",
    ]
    if doc.get("rate"):
        meta.append(f"about {doc['rate']:g} req/s")
    if doc.get("topology"):
        meta.append(f"topology {doc['topology']}")
    extra = ""
    if doc.get("error"):
        extra += f'<p class="check-fail">error: {html.escape(str(doc["error"]))}</p>'
    if doc.get("interrupted"):
        extra += f'<p class="check-fail">interrupted by {html.escape(str(doc["interrupted"]))}</p>'
    chart = ""
    if doc.get("timeline"):
        versions = [(float(v["t_s"]), int(v["version"])) for v in doc.get("versions", [])]
        chart = timeline_svg(Timeline.from_json(doc["timeline"]), steps, versions)
    procs = doc.get("processes", {})
    proc_rows = "".join(
        f'<tr><td class="l">{html.escape(name)}</td>'
        f'<td class="l">{", ".join(str(p) for p in pids)}</td></tr>'
        for name, pids in procs.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{name} report</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{name}: what clients saw {verdict}</h1>"
        f'<div class="meta">{html.escape(" · ".join(meta))}</div>{extra}'
        f"<h2>Timeline</h2>{chart}"
        f"<h2>Steps</h2>{_step_rows(steps)}"
        f"<h2>Details</h2>{_step_details(steps)}"
        f'<h2>Processes</h2><table><tr><th class="l">process</th><th class="l">pids</th></tr>'
        f"{proc_rows}</table>"
        "</body></html>\n"
    )
