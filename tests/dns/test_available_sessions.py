"""`available_sessions` end to end (issue 12 item 15): a real `zonegate dns` probes two
LB admin endpoints (fakes serving a real /status over HTTP), and answers the zone with
the most free sessions, following the sessions as the LBs report them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest

from tests.dns.conftest import DnsProc, start_dns
from tests.dns.test_zonehealth import FakeLb

pytestmark = pytest.mark.timeout(60)

TOPOLOGY = """\
zones:
  z1:
    vips: [127.0.0.11]
    lb_admin: "{z1}"
    health: {{interval: 100ms, timeout: 500ms}}
  z2:
    vips: [127.0.0.12]
    lb_admin: "{z2}"
    capacity: 100          # configured: beats the LB's pool capacities
    health: {{interval: 100ms, timeout: 500ms}}
dns:
  domains:
    example.test:
      ns: [ns1]
      records:
        ns1: [{{type: A, value: 192.0.2.1}}]
      gslb:
        api: {{preferred: [available_sessions], alternate: []}}
"""


@pytest.fixture
def lbs() -> Iterator[tuple[FakeLb, FakeLb]]:
    z1 = FakeLb("z1", web={"healthy": 3, "total": 3, "inflight": 10, "capacity": 50})
    z2 = FakeLb("z2", web={"healthy": 3, "total": 3, "inflight": 90, "capacity": 1000})
    yield z1, z2
    z1.close()
    z2.close()


def answered(srv: DnsProc) -> list[str]:
    q = dns.message.make_query("api.example.test", "A")
    r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=2)
    return [rd.address for rrset in r.answer for rd in rrset]


def wait_for(srv: DnsProc, expected: list[str], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while answered(srv) != expected:
        assert time.monotonic() < deadline, f"not answered {expected} within {within} s"
        time.sleep(0.02)


def test_the_zone_with_most_free_sessions_is_answered(tmp_path: Path, lbs) -> None:
    z1, z2 = lbs
    path = tmp_path / "topo.yaml"
    path.write_text(TOPOLOGY.format(z1=z1.address, z2=z2.address))
    srv = start_dns(path)
    try:
        # z1: 50 - 10 = 40 free; z2: 100 (configured) - 90 = 10 free.
        assert answered(srv) == ["127.0.0.11"]
        text = httpx.get(
            f"{srv.admin_url}/explain", params={"name": "api.example.test"}, timeout=5
        ).text
        assert "free sessions z1 40 (50-10), z2 10 (100-90): most first" in text
        # z1 fills up (48 in flight: 2 free), z2 empties (70 free): the answer follows.
        z1.set_pool(inflight=48)
        z2.set_pool(inflight=30)
        wait_for(srv, ["127.0.0.12"])
        text = httpx.get(
            f"{srv.admin_url}/explain", params={"name": "api.example.test"}, timeout=5
        ).text
        assert "free sessions z2 70 (100-30), z1 2 (50-48): most first" in text
    finally:
        srv.proc.stop()
