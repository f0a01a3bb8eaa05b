"""zonegate.lab.outage: outages from probe samples (pure)."""

from __future__ import annotations

import pytest

from zonegate.lab.outage import Sample, summarize

STEP = 0.01


def stream(spec: str, node_of=lambda i: "a") -> list[Sample]:
    """'.' ok, 'x' failed, one probe every 10 ms; `node_of(i)` names the answerer."""
    return [
        Sample(i * STEP, c == ".", node_of(i) if c == "." else None) for i, c in enumerate(spec)
    ]


def test_no_failure_no_outage():
    s = summarize(stream("....."), STEP)
    assert (s.probes, s.ok, s.failed, s.longest_outage, s.outages) == (5, 5, 0, 0.0, ())
    assert s.first_node == s.last_node == "a"
    assert s.per_node == {"a": 5}


def test_gap_is_failed_probes_times_interval():
    s = summarize(stream("..xxx.."), STEP)
    assert s.longest_outage == pytest.approx(0.03)
    (o,) = s.outages
    assert (o.failed, o.open_end) == (3, False)
    assert o.start == pytest.approx(0.01)
    assert o.end == pytest.approx(0.05)


def test_longest_of_several_and_switches():
    s = summarize(stream(".x..xxxx.", lambda i: "a" if i < 4 else "b"), STEP)
    assert s.longest_outage == pytest.approx(0.04)
    assert [round(o.seconds, 3) for o in s.outages] == [0.01, 0.04]
    assert s.per_node == {"a": 3, "b": 1}
    assert [(f, t) for _, f, t in s.switches] == [(None, "a"), ("a", "b")]
    assert s.last_node == "b"


def test_open_end_and_leading_failures():
    s = summarize(stream("xx...xxx"), STEP)
    first, last = s.outages
    assert first.seconds == pytest.approx(0.02)
    assert first.start == 0.0
    assert last.open_end
    assert last.seconds == pytest.approx(0.03)


def test_all_failed():
    s = summarize(stream("xxxx"), STEP)
    assert s.ok == 0
    assert s.last_node is None
    assert s.first_node is None
    assert s.longest_outage == pytest.approx(0.03)


def test_empty_and_bad_input():
    assert summarize([], STEP).probes == 0
    with pytest.raises(ValueError, match="interval"):
        summarize([], 0)
    with pytest.raises(ValueError, match="sorted"):
        summarize([Sample(1.0, True, "a"), Sample(0.5, True, "a")], STEP)


def test_json_shape():
    j = summarize(stream("..x.."), STEP).to_json()
    assert j["longest_outage_ms"] == 10.0
    assert j["per_node"] == {"a": 4}
    assert j["last_node"] == "a"
    assert j["outages"][0]["failed"] == 1
