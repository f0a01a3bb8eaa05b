"""A two-zone zonegate on loopback for the SDK's integration tests, all real processes:

    backends cp1 cp2 (zone cp), yq1 yq2 (zone yq)      python -m zonegate.lab.backend
    zonegate lb --zone cp  on 127.0.0.2:PORT  ─┐        both follow the control plane and
    zonegate lb --zone yq  on 127.0.0.3:PORT  ─┤        stamp X-Zonegate-Version
    zonegate control (SQLite in tmp)  ◄────────┘
    zonegate httpdns: api-cp.example.test A 127.0.0.2, api-yq.example.test A 127.0.0.3

The two LBs listen on the same port of two loopback addresses, so what HTTPDNS
answers (addresses, no ports) is all the SDK needs: `http://api.example.test:PORT/`.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.lbharness import fast_health
from tests.peers.processes import BackendProc, Proc, free_port, retry_addr_in_use
from zonegate.control.api import hash_token

CONTROL_READY = r"zonegate control ready: (?P<url>http://\S+) version (?P<version>\d+)"
HTTPDNS_READY = r"zonegate httpdns ready: listening on 127\.0\.0\.1:(?P<port>\d+)"
LB_READY = r"zonegate lb ready"
OPERATOR = "op-secret"
DOMAIN = "api.example.test"
VIPS = {"cp": "127.0.0.2", "yq": "127.0.0.3"}
DNS_TTL = "1s"
ENV = {"ZONEGATE_BUG_RAISE": "0"}


def port_free_on(*hosts: str) -> int:
    """A port that was free on every host a moment ago."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for h in hosts[1:]:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on all of " + ", ".join(hosts))


def devices(zone: str, n: int) -> list[str]:
    """`n` DeviceIDs whose shard (sharding 100, cp [0, 50)) falls in `zone`."""
    from zonegate.client import shard_of

    out = []
    i = 0
    while len(out) < n:
        d = f"dev-{i}"
        if (shard_of(d, 100) < 50) == (zone == "cp"):
            out.append(d)
        i += 1
    return out


def topology(port: int, backends: dict[str, list[BackendProc]]) -> dict[str, Any]:
    return {
        "zones": {z: {"vips": [VIPS[z]]} for z in ("cp", "yq")},
        "pools": {
            f"web-{z}": {
                "zone": z,
                "backends": [{"address": b.address, "name": b.name} for b in bs],
                "health": fast_health(),
            }
            for z, bs in backends.items()
        },
        "listeners": {
            f"http-{z}": {"zone": z, "bind": f"{VIPS[z]}:{port}", "routes": [{"pool": f"web-{z}"}]}
            for z in ("cp", "yq")
        },
        "dns": {
            "domains": {
                "example.test": {
                    "ns": ["ns1.example.test"],
                    "records": {
                        "ns1": [{"type": "A", "value": "127.0.0.53"}],
                        "api-cp": [{"type": "A", "value": VIPS["cp"], "ttl": DNS_TTL}],
                        "api-yq": [{"type": "A", "value": VIPS["yq"], "ttl": DNS_TTL}],
                    },
                }
            }
        },
        "split": {
            DOMAIN: {
                "sharding": 100,
                "zones": {
                    "cp": {"lower": 0, "upper": 50, "domain": "api-cp.example.test"},
                    "yq": {"lower": 50, "upper": 100, "domain": "api-yq.example.test"},
                },
            }
        },
    }


@dataclass
class World:
    tmp: Path
    port: int = 0
    backends: list[BackendProc] = field(default_factory=list)
    control: Proc | None = None
    control_url: str = ""
    httpdns: Proc | None = None
    httpdns_url: str = ""
    lbs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The split domain's URL, as an app writes it."""
        return f"http://{DOMAIN}:{self.port}"

    def start(self) -> World:
        self.backends = [
            BackendProc(name, zone).spawn()
            for name, zone in (("cp1", "cp"), ("cp2", "cp"), ("yq1", "yq"), ("yq2", "yq"))
        ]
        for b in self.backends:
            b.wait_ready()
        by_zone = {z: [b for b in self.backends if b.zone == z] for z in ("cp", "yq")}
        topo = self.tmp / "topology.yaml"
        self.port = port_free_on(VIPS["cp"], VIPS["yq"])
        topo.write_text(json.dumps(topology(self.port, by_zone), indent=1))
        tokens = self.tmp / "tokens.yaml"
        tokens.write_text(
            f"tokens:\n  - {{name: ops, role: operator, sha256: {hash_token(OPERATOR)}}}\n"
        )
        py = sys.executable
        self.control = Proc(
            [py, "-m", "zonegate.control.server", topo, "--store",
             f"sqlite://{self.tmp / 'control.db'}", "--listen", "127.0.0.1:0",
             "--tokens", tokens],
            CONTROL_READY, env=ENV,
        ).spawn()  # fmt: skip
        self.httpdns = Proc(
            [py, "-m", "zonegate.httpdns.api", topo, "--listen", "127.0.0.1:0"],
            HTTPDNS_READY,
            env=ENV,
        ).spawn()
        self.control.wait_ready(20)
        self.httpdns.wait_ready(20)
        assert self.control.match is not None
        assert self.httpdns.match is not None
        self.control_url = self.control.match["url"]
        self.httpdns_url = f"http://127.0.0.1:{self.httpdns.match['port']}"
        retry_addr_in_use(lambda: self._start_lbs(topo, by_zone))
        return self

    def _start_lbs(self, topo: Path, by_zone: dict[str, list[BackendProc]]) -> None:
        """Start both LBs; the listener and admin ports are picked again (and the
        file rewritten) when one was taken before an LB bound it."""
        if self.lbs:
            for lb in self.lbs.values():
                lb.kill()
            self.port = port_free_on(VIPS["cp"], VIPS["yq"])
            topo.write_text(json.dumps(topology(self.port, by_zone), indent=1))
        py = sys.executable
        for z in ("cp", "yq"):
            self.lbs[z] = Proc(
                [py, "-m", "zonegate", "lb", topo, "--zone", z,
                 "--admin", f"127.0.0.1:{free_port()}", "--control", self.control_url,
                 "--control-cache", self.tmp / f"lb-{z}.json"],
                LB_READY, env=ENV,
            ).spawn()  # fmt: skip
        for lb in self.lbs.values():
            lb.wait_ready(20)

    def cutover(self, to: str) -> int:
        """POST /v1/cutover/api.example.test; returns the new version."""
        r = httpx.post(
            f"{self.control_url}/v1/cutover/{DOMAIN}",
            params={"reason": "sdk test"},
            json={"to": to},
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
        return int(r.json()["version"])

    def stop(self) -> None:
        procs = [*self.lbs.values(), self.httpdns, self.control, *self.backends]
        for p in procs:
            if p is not None:
                p.kill()
