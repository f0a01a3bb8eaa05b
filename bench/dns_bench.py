#!/usr/bin/env python3
"""Authoritative DNS benchmark: `zonegate dns` against gdnsd and PowerDNS, on loopback.

Every server serves the same zone, `example.test`: a few static names, and one GSLB
name, `api.example.test`, that answers the VIP of one healthy zone (127.0.0.11 or
127.0.0.12, equal weights, picked at random); a zone is healthy while a TCP port on its
VIP accepts (a listener of this script, on loopback):

| server | static names | GSLB name |
|---|---|---|
| zonegate | `dns.domains` records | `gslb.api`: `preferred: [weight]`, zone health `tcp` |
| PowerDNS | bind backend, packet cache | `LUA A "ifportup(PORT, {z1, z2})"`, shared Lua state |
| gdnsd | zone file | `DYNA weighted!api` with a `tcp_connect` service type |

Each server runs on one core (`taskset`, one UDP thread), dnsperf on the other. For
each scenario (static names, GSLB name) and each server: a short warm-up, then a
capacity run (`dnsperf -l DURATION -c CLIENTS -q OUTSTANDING`, closed loop: QPS is
what the server can do), then, once every server's capacity is known, a latency run at
a fixed rate all of them sustain (`-Q RATE -v`: average, p50 and p99 from every
query's latency). It prints QPS, latencies, CPU use and the ratios against the targets
(static names >= 0.9x PowerDNS with packet cache; GSLB names >= 1.5x PowerDNS LUA
records with a shared Lua state), on raw QPS and on QPS per core of server CPU.

zonegate decides every GSLB query (a weighted draw each time; what it precomputes per
name, type, client region and zone states is the deterministic part of the chain, see
docs/dns.md), so the measured GSLB path is the real one even from dnsperf's single
source address. The script also times zonegate's `DnsService.respond()` in-process
(static, a repeated static query as `UdpResponder` answers it, GSLB, GSLB from a new resolver
or a new ECS subnet each call).

This is a report, not a test: it exits 0 whatever the figures say, 1 if a server did
not start or answer correctly, 2 if tools are missing and cannot be installed, 130 if
interrupted.

    python3 bench/dns_bench.py                 # full: 10 s runs
    python3 bench/dns_bench.py --quick         # smoke run: 2 s runs
    python3 bench/dns_bench.py --json out.json

See bench/README.md ("dns_bench.py") for the details and how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (  # bench/benchlib.py: what the bench scripts share
    Proc,
    Procs,
    apt_install,
    cpu_busy,
    deb_version,
    machine_info,
    machine_times,
    proc_cpu,
    process_times,
    settle,
    tool_version,
    which,
    write_results,
)

SERVERS = ("zonegate", "gdnsd", "pdns")
SCENARIOS = ("static", "gslb")
TARGET_STATIC = 0.9  # zonegate QPS >= 0.9x PowerDNS (packet cache) on static names
TARGET_GSLB = 1.5  # zonegate QPS >= 1.5x PowerDNS LUA records (shared state) on GSLB names
START_TIMEOUT = 20.0  # seconds for a server to answer correctly
ZONE = "example.test"
VIP1, VIP2 = "127.0.0.11", "127.0.0.12"
GSLB_TTL = 30

# name -> [(type, value)]; the same data goes to every server.
STATIC_RECORDS: dict[str, list[tuple[str, str]]] = {
    "ns1": [("A", "192.0.2.1")],
    "www": [("A", "192.0.2.10")],
    "web": [("A", "192.0.2.11"), ("AAAA", "2001:db8::11")],
    "mail": [("A", "192.0.2.25")],
    "txt": [("TXT", "hello world")],
    "h1": [("A", "192.0.2.101")],
    "h2": [("A", "192.0.2.102")],
    "h3": [("A", "192.0.2.103")],
    "h4": [("A", "192.0.2.104"), ("AAAA", "2001:db8::104")],
}
STATIC_QUERIES = [
    ("www", "A"),
    ("web", "A"),
    ("web", "AAAA"),
    ("mail", "A"),
    ("txt", "TXT"),
    ("ns1", "A"),
    ("h1", "A"),
    ("h2", "A"),
    ("h3", "A"),
    ("h4", "AAAA"),
]
GSLB_QUERIES = [("api", "A")]


class StartError(RuntimeError):
    """A server did not come up, or answered wrongly."""


# --------------------------------------------------------------------------- tools

PACKAGES = {
    "dnsperf": ["dnsperf"],
    "gdnsd": ["gdnsd"],
    "pdns_server": ["pdns-server", "pdns-backend-bind"],
}


def bind_backend_present() -> bool:
    return any(Path("/usr/lib").glob("*/pdns/libbindbackend.so")) or any(
        Path("/usr/lib").glob("pdns/libbindbackend.so")
    )


def ensure_tools(install: bool, servers: Sequence[str]) -> dict[str, str]:
    """Find dnsperf, gdnsd, pdns_server (+ bind backend), taskset; apt-get the missing."""
    wanted = ["dnsperf"]
    if "gdnsd" in servers:
        wanted.append("gdnsd")
    if "pdns" in servers:
        wanted.append("pdns_server")

    def missing_now() -> list[str]:
        out = [n for n in wanted if which(n) is None]
        if "pdns_server" in wanted and "pdns_server" not in out and not bind_backend_present():
            out.append("pdns_server")  # the bind backend package is what is missing
        return out

    missing = missing_now()
    if missing and install:
        if os.geteuid() != 0:
            fail_tools(f"missing {', '.join(missing)} and not root to install them")
        pkgs = [p for n in missing for p in PACKAGES[n]]
        print(f"installing {' '.join(pkgs)} from Debian packages ...", flush=True)
        apt_install(pkgs, "dns_bench")
        missing = missing_now()
    if missing:
        fail_tools(f"missing tools: {', '.join(missing)} (packages: see --help)")
    tools = {n: which(n) or n for n in wanted}
    tools["taskset"] = which("taskset") or ""
    tools["pdns_control"] = which("pdns_control") or ""
    if not tools["taskset"]:
        print("dns_bench: no taskset (util-linux): runs are not pinned", file=sys.stderr)
    return tools


def fail_tools(msg: str) -> None:
    print(f"dns_bench: {msg}", file=sys.stderr)
    raise SystemExit(2)


def dns_machine_info(tools: dict[str, str]) -> dict[str, Any]:
    """`benchlib.machine_info` plus the versions of dnsperf, gdnsd and PowerDNS."""
    return machine_info(
        versions={
            "dnsperf": tool_version([tools["dnsperf"], "-h"], r"^Version")
            + " (deb "
            + deb_version("dnsperf")
            + ")",
            "gdnsd": "deb " + deb_version("gdnsd") if "gdnsd" in tools else "-",
            "pdns": "deb " + deb_version("pdns-server") if "pdns_server" in tools else "-",
        }
    )


# --------------------------------------------------------------------------- CPU accounting


# --------------------------------------------------------------------------- processes


# --------------------------------------------------------------------------- network


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                t.close()
            return port
    raise StartError("no free port for UDP and TCP")


class HealthPorts:
    """TCP listeners on VIP1:PORT and VIP2:PORT (loopback): both zones are up.

    They are what every server's health check connects to (zonegate `tcp`, PowerDNS
    `ifportup`, gdnsd `tcp_connect`); each connection is accepted and closed.
    """

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(50):
            socks = []
            try:
                s1 = socket.socket()
                socks.append(s1)
                s1.bind((VIP1, 0))
                port = s1.getsockname()[1]
                s2 = socket.socket()
                socks.append(s2)
                s2.bind((VIP2, port))
            except OSError:
                for s in socks:
                    s.close()
                continue
            self.socks = socks
            self.port = port
            break
        else:
            raise StartError(f"no port free on both {VIP1} and {VIP2}")
        self._stop = False
        self.threads = []
        for s in self.socks:
            s.listen(64)
            s.settimeout(0.2)
            t = threading.Thread(target=self._accept, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _accept(self, s: socket.socket) -> None:
        while not self._stop:
            try:
                conn, _ = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        self._stop = True
        for t in self.threads:
            t.join(1.0)
        for s in self.socks:
            s.close()


def dns_query(port: int, name: str, qtype: str, timeout: float = 1.0) -> Any:
    import dns.message
    import dns.query

    q = dns.message.make_query(name, qtype, use_edns=False)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def answer_key(msg: Any) -> tuple[str, bool, tuple[str, ...]]:
    """rcode, AA flag and the answer records (owner, type, rdata; no TTL), sorted."""
    import dns.flags
    import dns.rcode

    rrs = []
    for rrset in msg.answer:
        for rd in rrset:
            rrs.append(f"{rrset.name.to_text().lower()} {rrset.rdtype!r} {rd.to_text().lower()}")
    aa = bool(msg.flags & dns.flags.AA)
    return dns.rcode.to_text(msg.rcode()), aa, tuple(sorted(rrs))


def expected_answer(name: str, qtype: str) -> tuple[str, bool, tuple[str, ...]]:
    fqdn = f"{name}.{ZONE}."
    if name == "api":  # one zone's VIP, either (both zones are up, equal weights)
        return "NOERROR", True, (f"{fqdn} <RdataType.A: 1> {VIP1}|{VIP2}",)
    rrs = []
    for rtype, value in STATIC_RECORDS[name]:
        if rtype != qtype:
            continue
        v = f'"{value}"' if rtype == "TXT" else value
        rrs.append(f"{fqdn} <RdataType.{rtype}: {_TYPE_CODES[rtype]}> {v}")
    return "NOERROR", True, tuple(sorted(rrs))


_TYPE_CODES = {"A": 1, "AAAA": 28, "TXT": 16}


def answer_matches(
    got: tuple[str, bool, tuple[str, ...]], want: tuple[str, bool, tuple[str, ...]]
) -> bool:
    """Equal, where an expected record ending in 'X|Y' accepts X or Y."""
    if got[:2] != want[:2] or len(got[2]) != len(want[2]):
        return False
    for g, w in zip(got[2], want[2], strict=True):
        head, _, alts = w.rpartition(" ")
        if g not in (f"{head} {a}" for a in alts.split("|")):
            return False
    return True


def check_answers(port: int, queries: Sequence[tuple[str, str]]) -> list[str]:
    """Every query answered as expected (rcode, AA, records)? Returns the problems."""
    problems = []
    for name, qtype in queries:
        want = expected_answer(name, qtype)
        try:
            got = answer_key(dns_query(port, f"{name}.{ZONE}", qtype))
        except Exception as e:
            problems.append(f"{name}.{ZONE} {qtype}: {type(e).__name__}: {e}")
            continue
        if not answer_matches(got, want):
            problems.append(f"{name}.{ZONE} {qtype}: got {got}, expected {want}")
    return problems


def wait_answers(proc: Proc, port: int, queries: Sequence[tuple[str, str]], timeout: float) -> None:
    """Wait until the server answers every query as expected (GSLB health settles)."""
    deadline = time.monotonic() + timeout
    problems = ["no answer yet"]
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with status {proc.popen.returncode}\n"
                f"command: {' '.join(proc.argv)}\n{proc.log_tail()}"
            )
        problems = check_answers(port, queries)
        if not problems:
            return
        time.sleep(0.2)
    raise StartError(
        f"{proc.name} on 127.0.0.1:{port} did not answer as expected within {timeout:.0f}s:\n  "
        + "\n  ".join(problems)
        + f"\ncommand: {' '.join(proc.argv)}\n{proc.log_tail()}"
    )


# --------------------------------------------------------------------------- configs


def zonegate_topology(health_port: int) -> str:
    lines = [
        "# dns_bench: the benchmark zone (generated)",
        "zones:",
    ]
    for zone, vip in (("z1", VIP1), ("z2", VIP2)):
        lines += [
            f"  {zone}:",
            f"    vips: [{vip}]",
            f'    health: {{type: tcp, address: "{vip}:{health_port}", '
            "interval: 1s, timeout: 500ms}",
        ]
    lines += [
        "dns:",
        "  domains:",
        f"    {ZONE}:",
        "      ns: [ns1]",
        "      ttl: 5m",
        "      records:",
    ]
    for name, rrs in STATIC_RECORDS.items():
        items = ", ".join(f'{{type: {t}, value: "{v}"}}' for t, v in rrs)
        lines.append(f"        {name}: [{items}]")
    lines += [
        "      gslb:",
        "        api:",
        "          preferred: [weight]",
        f"          ttl: {GSLB_TTL}s",
        "          changing_ttl: 5s",
    ]
    return "\n".join(lines) + "\n"


def zone_file(gslb_line: str) -> str:
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 60",
        "@ IN NS ns1",
    ]
    for name, rrs in STATIC_RECORDS.items():
        for t, v in rrs:
            lines.append(f'{name} IN {t} "{v}"' if t == "TXT" else f"{name} IN {t} {v}")
    lines.append(gslb_line)
    return "\n".join(lines) + "\n"


def pdns_files(d: Path, port: int, health_port: int) -> None:
    d.mkdir()
    lua = f"ifportup({health_port}, {{'{VIP1}', '{VIP2}'}})"
    (d / f"{ZONE}.zone").write_text(zone_file(f'api {GSLB_TTL} IN LUA A "{lua}"'))
    (d / "named.conf").write_text(
        f'options {{ directory "{d}"; }};\n'
        f'zone "{ZONE}" {{ type master; file "{d}/{ZONE}.zone"; }};\n'
    )
    (d / "pdns.conf").write_text(
        textwrap.dedent(f"""\
        # dns_bench: PowerDNS, foreground, own files only, never phones home
        launch=bind
        bind-config={d}/named.conf
        bind-check-interval=0
        local-address=127.0.0.1
        local-port={port}
        socket-dir={d}
        daemon=no
        guardian=no
        disable-syslog=yes
        loglevel=4
        security-poll-suffix=
        webserver=no
        api=no
        primary=no
        secondary=no
        # one core: one receiver thread, one distributor (backend) thread
        receiver-threads=1
        distributor-threads=1
        reuseport=no
        # packet cache (answers static names from the receiver thread) and query cache on
        cache-ttl=60
        query-cache-ttl=60
        negquery-cache-ttl=60
        # LUA records, one Lua state per thread kept for good (shared state model)
        enable-lua-records=shared
        lua-health-checks-interval=1
        """)
    )


def gdnsd_files(d: Path, port: int, health_port: int) -> None:
    (d / "zones").mkdir(parents=True)
    (d / "run").mkdir()
    (d / "state").mkdir()
    (d / "zones" / ZONE).write_text(zone_file(f"api {GSLB_TTL} DYNA weighted!api"))
    (d / "config").write_text(
        textwrap.dedent(f"""\
        # dns_bench: gdnsd, foreground, own directories only
        options => {{
          listen => [ 127.0.0.1:{port} ]
          udp_threads => 1
          tcp_threads => 1
          run_dir => {d}/run
          state_dir => {d}/state
        }}
        service_types => {{
          zone_tcp => {{
            plugin => tcp_connect, port => {health_port},
            interval => 2, timeout => 1, up_thresh => 1, ok_thresh => 1, down_thresh => 1
          }}
        }}
        plugins => {{
          weighted => {{
            api => {{ service_types => zone_tcp, z1 => [ {VIP1}, 1 ], z2 => [ {VIP2}, 1 ] }}
          }}
        }}
        """)
    )


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: Proc
    port: int
    admin: int = 0  # zonegate's admin port
    control_dir: str = ""  # PowerDNS socket dir (pdns_control)


def start_server(
    procs: Procs,
    name: str,
    tools: dict[str, str],
    tmp: Path,
    health_port: int,
    cpus: str | None,
) -> Server:
    port = free_udp_tcp_port()
    log = tmp / f"{name}.log"
    taskset = tools["taskset"]
    if name == "zonegate":
        topo = tmp / "zonegate-bench.yaml"
        topo.write_text(zonegate_topology(health_port))
        admin = free_udp_tcp_port()
        argv = [
            sys.executable,
            "-m",
            "zonegate",
            "dns",
            str(topo),
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
        ]
        env = dict(os.environ, ZONEGATE_BUG_RAISE="0", PYTHONUNBUFFERED="1")
        proc = procs.start(name, argv, log, cpus, taskset, env=env)
        server = Server(name, proc, port, admin=admin)
    elif name == "pdns":
        d = tmp / "pdns"
        pdns_files(d, port, health_port)
        argv = [tools["pdns_server"], f"--config-dir={d}"]
        proc = procs.start(name, argv, log, cpus, taskset)
        server = Server(name, proc, port, control_dir=str(d))
    elif name == "gdnsd":
        d = tmp / "gdnsd"
        gdnsd_files(d, port, health_port)
        argv = [tools["gdnsd"], "-c", str(d), "start"]
        proc = procs.start(name, argv, log, cpus, taskset)
        server = Server(name, proc, port)
    else:
        raise StartError(f"unknown server {name}")
    wait_answers(proc, port, STATIC_QUERIES + GSLB_QUERIES, START_TIMEOUT)
    return server


def pdns_stat(server: Server, tools: dict[str, str], var: str) -> int | None:
    if not server.control_dir or not tools.get("pdns_control"):
        return None
    try:
        r = subprocess.run(
            [tools["pdns_control"], f"--socket-dir={server.control_dir}", "show", var],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return int(r.stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def zonegate_metrics(server: Server) -> dict[str, float]:
    """The zonegate_dns_* counters from the admin /metrics, flattened."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.admin}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": 1.0, f"error: {e}": 1.0}
    for line in text.splitlines():
        if line.startswith("zonegate_dns_") or line.startswith("zonegate_zone_up"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


# --------------------------------------------------------------------------- dnsperf


@dataclass
class PerfResult:
    qps: float = 0.0
    sent: int = 0
    completed: int = 0
    lost: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    avg_ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    stddev_ms: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    dnsperf_cpu: float = 0.0  # CPU seconds dnsperf used
    elapsed: float = 0.0
    ok: bool = True
    problem: str = ""


def parse_dnsperf(text: str) -> PerfResult:
    r = PerfResult()
    m = re.search(r"Queries per second:\s+([0-9.]+)", text)
    if not m:
        r.ok = False
        r.problem = "no 'Queries per second' in dnsperf output:\n" + text[-1500:]
        return r
    r.qps = float(m.group(1))
    if m := re.search(r"Queries sent:\s+(\d+)", text):
        r.sent = int(m.group(1))
    if m := re.search(r"Queries completed:\s+(\d+)", text):
        r.completed = int(m.group(1))
    if m := re.search(r"Queries lost:\s+(\d+)", text):
        r.lost = int(m.group(1))
    if m := re.search(r"Response codes:\s+(.*)", text):
        for code, n in re.findall(r"([A-Z]+) (\d+) \(", m.group(1)):
            r.rcodes[code] = int(n)
    if m := re.search(r"Average Latency \(s\):\s+([0-9.]+) \(min ([0-9.]+), max ([0-9.]+)\)", text):
        r.avg_ms, r.min_ms, r.max_ms = (float(x) * 1e3 for x in m.groups())
    if m := re.search(r"Latency StdDev \(s\):\s+([0-9.]+)", text):
        r.stddev_ms = float(m.group(1)) * 1e3
    return r


def percentiles(path: Path) -> tuple[float, float, float] | None:
    """p50, p99, p99.9 (ms) of the '> RCODE name type latency' lines of dnsperf -v."""
    lat = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                with contextlib.suppress(ValueError, IndexError):
                    lat.append(float(line.rsplit(None, 1)[1]))
    if not lat:
        return None
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3

    return pct(0.50), pct(0.99), pct(0.999)


def run_dnsperf(
    tools: dict[str, str],
    port: int,
    qfile: Path,
    seconds: float,
    clients: int,
    outstanding: int,
    qps: int,
    verbose: bool,
    edns: bool,
    cpus: str | None,
    out_path: Path,
) -> PerfResult:
    argv = [
        tools["dnsperf"],
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(qfile),
        "-l",
        f"{seconds:g}",
        "-c",
        str(clients),
        "-q",
        str(outstanding),
        "-t",
        "2",
    ]
    if qps > 0:
        argv += ["-Q", str(qps)]
    if edns:
        argv.append("-e")
    if verbose:
        argv.append("-v")
    if cpus and tools["taskset"]:
        argv = [tools["taskset"], "-c", cpus, *argv]
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + seconds + 30
        rusage = None
        try:
            while True:
                pid, status, rusage = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    p.returncode = os.waitstatus_to_exitcode(status)
                    break
                rusage = None
                if time.monotonic() > deadline:
                    p.kill()
                    p.wait(5)
                    break
                time.sleep(0.05)
        finally:
            if p.poll() is None:  # interrupted: never leave dnsperf behind
                p.kill()
                p.wait(5)
        elapsed = time.monotonic() - t0
    # -v writes a line per query: the summary is at the end, read only the tail there.
    size = out_path.stat().st_size
    with open(out_path, "rb") as f:
        f.seek(max(0, size - 8192))
        tail = f.read().decode(errors="replace")
    r = parse_dnsperf(tail)
    r.elapsed = elapsed
    if rusage is not None:
        r.dnsperf_cpu = rusage.ru_utime + rusage.ru_stime
    else:
        r.ok = False
        r.problem = f"dnsperf did not finish within {seconds + 30:.0f}s (killed)"
    if verbose and r.ok:
        pc = percentiles(out_path)
        if pc is not None:
            r.p50_ms, r.p99_ms, r.p999_ms = pc
    return r


# --------------------------------------------------------------------------- bench


@dataclass
class Run:
    scenario: str
    server: str
    kind: str  # "capacity" or "latency"
    round: int
    qps: float = 0.0
    rate: int = 0  # -Q of a latency run
    sent: int = 0
    lost: int = 0
    lost_pct: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    avg_ms: float = 0.0
    max_ms: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    server_cpu: float = 0.0  # cores during the run (1.0 = one CPU busy)
    qps_per_core: float = 0.0  # qps / server_cpu: steadier than qps on a shared VM
    dnsperf_cpu: float = 0.0
    kern_cpu: float = 0.0
    other_cpu: float = 0.0
    steal_cpu: float = 0.0
    busy_before: float = 0.0
    per_cpu: dict[str, float] = field(default_factory=dict)  # busy share of each CPU
    attempts: int = 1
    notes: str = ""
    failed: str = ""


@dataclass
class Settings:
    duration: float
    warmup: float
    clients: int
    outstanding: int
    max_qps: int
    latency_rate: str
    servers: list[str]
    scenarios: list[str]
    rounds: int
    settle: float
    max_others: float
    retries: int
    edns: bool
    pin: str


def pin_plan(pin: str) -> tuple[str | None, str | None]:
    """CPU lists (server, dnsperf); None means unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or len(cpus) < 2:
        return None, None
    return str(cpus[0]), str(cpus[1])


def inprocess_costs(topo_path: Path, cpu: str | None, n: int = 30000) -> dict[str, float]:
    """Microseconds per `DnsService.respond()` call in this process (no sockets, no loop).

    static: the 10 static queries (the fast path of `respond`). static repeated: the
    same, as `UdpResponder` answers a query it has seen (`DnsService.answers`, a dict lookup).
    gslb: the GSLB name from one resolver (a weighted draw every call, as under
    dnsperf). gslb new resolver: from a different resolver address each call. gslb new
    ECS: a different client subnet each call (EDNS Client Subnet: parse, region).
    Caches are emptied before each timed pass.
    """
    import dns.edns
    import dns.message

    from zonegate.dns.model import ZoneState
    from zonegate.dns.server import DnsService, compile_file

    up = ZoneState(up=True, healthy=1, total=1)
    svc = DnsService(compile_file(str(topo_path), 1, 1), {"z1": up, "z2": up})
    svc.now = 1.0

    def wire(name: str, qtype: str, **kw: Any) -> bytes:
        return dns.message.make_query(name, qtype, **kw).to_wire()

    static = [wire(f"{q}.{ZONE}", t, use_edns=False) for q, t in STATIC_QUERIES]
    gslb = wire(f"api.{ZONE}", "A", use_edns=False)
    ips = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]
    ecs = [
        wire(
            f"api.{ZONE}",
            "A",
            use_edns=0,
            options=[dns.edns.ECSOption(f"10.{i >> 8 & 255}.{i & 255}.0", 24)],
        )
        for i in range(n)
    ]
    answers = svc.answers

    def repeated(i: int) -> bytes:
        data = static[i % len(static)]
        hit = answers.get(data[2:])
        if hit is None:
            return svc.respond(data, "127.0.0.1", True) or b""
        svc.queries[hit[1]] += 1
        return data[:2] + hit[0]

    cases: dict[str, Any] = {
        "static": lambda i: svc.respond(static[i % len(static)], "127.0.0.1", True),
        "static repeated": repeated,
        "gslb": lambda i: svc.respond(gslb, "127.0.0.1", True),
        "gslb new resolver": lambda i: svc.respond(gslb, ips[i], True),
        "gslb new ECS": lambda i: svc.respond(ecs[i], "127.0.0.1", True),
    }
    saved = os.sched_getaffinity(0)
    out: dict[str, float] = {}
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {int(cpu)})
        for name, call in cases.items():
            for i in range(min(n, 2000)):  # warm up (and check the answers exist)
                if call(i) is None:
                    raise StartError(f"in-process {name}: respond() returned None")
            best = float("inf")
            for _ in range(3):  # best of three: the least disturbed
                if name != "static repeated":
                    svc.swap(svc.compiled)  # empty every cache
                t0 = time.perf_counter()
                for i in range(n):
                    call(i)
                best = min(best, time.perf_counter() - t0)
            out[name] = best / n * 1e6
    finally:
        os.sched_setaffinity(0, saved)
    return out


def measure(
    server: Server,
    scenario: str,
    kind: str,
    rnd: int,
    rate: int,
    st: Settings,
    tools: dict[str, str],
    tmp: Path,
    qfile: Path,
) -> Run:
    run = Run(scenario, server.name, kind, rnd, rate=rate)
    _, load_cpus = pin_plan(st.pin)
    if not server.proc.alive():
        run.failed = f"{server.name} is not running:\n{server.proc.log_tail()}"
        return run
    if st.settle > 0:
        run.busy_before = settle(st.settle)
    if kind == "capacity" and st.warmup > 0:
        run_dnsperf(
            tools, server.port, qfile, st.warmup, st.clients, st.outstanding, st.max_qps,
            False, st.edns, load_cpus, tmp / "dnsperf-warmup.out",
        )  # fmt: skip
    pdns_before = {v: pdns_stat(server, tools, v) for v in ("packetcache-hit", "packetcache-miss")}
    zg_before = zonegate_metrics(server) if server.name == "zonegate" else {}
    c0 = cpu_busy()
    o0 = process_times()
    m0, s0, t0 = machine_times(), proc_cpu(server.proc.pid), time.monotonic()
    out_path = tmp / f"dnsperf-{scenario}-{server.name}-{kind}-{rnd}.out"
    r = run_dnsperf(
        tools,
        server.port,
        qfile,
        st.duration,
        st.clients,
        st.outstanding,
        rate if kind == "latency" else st.max_qps,
        kind == "latency",
        st.edns,
        load_cpus,
        out_path,
    )
    m1, s1, t1 = machine_times(), proc_cpu(server.proc.pid), time.monotonic()
    c1 = cpu_busy()
    o1 = process_times()
    wall = max(1e-6, t1 - t0)
    run.per_cpu = {k: round((c1[k] - c0.get(k, 0.0)) / wall, 2) for k in c1}
    if not r.ok:
        run.failed = r.problem
        return run
    run.qps, run.sent, run.lost, run.rcodes = r.qps, r.sent, r.lost, r.rcodes
    run.lost_pct = 100.0 * r.lost / r.sent if r.sent else 0.0
    run.avg_ms, run.max_ms = r.avg_ms, r.max_ms
    run.p50_ms, run.p99_ms, run.p999_ms = r.p50_ms, r.p99_ms, r.p999_ms
    run.server_cpu = (s1 - s0) / wall
    run.qps_per_core = r.qps / run.server_cpu if run.server_cpu > 0.05 else 0.0
    run.dnsperf_cpu = r.dnsperf_cpu / wall
    run.kern_cpu = (m1["kern"] - m0["kern"]) / wall
    run.steal_cpu = (m1["steal"] - m0["steal"]) / wall
    # Processes that ran during the run (new ones counted whole; ones that ended are missed).
    run.other_cpu = sum(v - o0.get(k, 0.0) for k, v in o1.items()) / wall
    bad = {k: v for k, v in r.rcodes.items() if k != "NOERROR"}
    notes = []
    if bad:
        notes.append(f"non-NOERROR responses {bad}")
    if server.control_dir:
        after = {v: pdns_stat(server, tools, v) for v in pdns_before}
        if all(x is not None for x in (*after.values(), *pdns_before.values())):
            hit = after["packetcache-hit"] - pdns_before["packetcache-hit"]  # type: ignore[operator]
            miss = after["packetcache-miss"] - pdns_before["packetcache-miss"]  # type: ignore[operator]
            notes.append(f"packet cache {hit} hits / {miss} misses")
    if server.name == "zonegate":
        zg_after = zonegate_metrics(server)

        def delta(key: str) -> int:
            return int(zg_after.get(key, 0) - zg_before.get(key, 0))

        hits = delta('zonegate_dns_decision_cache_total{result="hit"}')
        misses = delta('zonegate_dns_decision_cache_total{result="miss"}')
        if hits or misses:
            notes.append(f"decision cache {hits} hits / {misses} misses")
        dropped = delta("zonegate_dns_dropped_total")
        if dropped:
            notes.append(f"dropped {dropped}")
    if not server.proc.alive():
        run.failed = f"{server.name} died during the run:\n{server.proc.log_tail()}"
    run.notes = "; ".join(notes)
    return run


def noise(run: Run) -> float:
    """Cores taken from the run by others: their processes, and the host's steal time."""
    return run.other_cpu + run.steal_cpu


def measure_quietest(
    server: Server,
    scenario: str,
    kind: str,
    rnd: int,
    rate: int,
    st: Settings,
    tools: dict[str, str],
    tmp: Path,
    qfile: Path,
) -> Run:
    r = measure(server, scenario, kind, rnd, rate, st, tools, tmp, qfile)
    for _ in range(st.retries):
        if r.failed or noise(r) <= st.max_others:
            break
        print(
            f" noisy ({r.other_cpu:.2f} cores used by others, {r.steal_cpu:.2f} stolen by the"
            " host), again ...",
            end="",
            flush=True,
        )
        again = measure(server, scenario, kind, rnd, rate, st, tools, tmp, qfile)
        again.attempts = r.attempts + 1
        if again.failed:
            return again
        if noise(again) < noise(r):
            r = again
        else:
            r.attempts = again.attempts
    return r


def median_run(runs: list[Run]) -> Run:
    """Per-metric medians of the successful runs (the first run's identity)."""
    ok = [r for r in runs if not r.failed]
    if not ok:
        return runs[0]
    m = Run(ok[0].scenario, ok[0].server, ok[0].kind, -1, rate=ok[0].rate)
    for attr in (
        "qps",
        "qps_per_core",
        "lost_pct",
        "avg_ms",
        "server_cpu",
        "dnsperf_cpu",
        "other_cpu",
        "kern_cpu",
        "steal_cpu",
    ):
        setattr(m, attr, statistics.median(getattr(r, attr) for r in ok))
    for attr in ("p50_ms", "p99_ms", "p999_ms"):
        vals = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
        setattr(m, attr, statistics.median(vals) if vals else None)
    for cpu in ok[0].per_cpu:
        m.per_cpu[cpu] = statistics.median(r.per_cpu.get(cpu, 0.0) for r in ok)
    m.notes = ok[-1].notes
    return m


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1e3:.0f}us" if v < 1.0 else f"{v:.2f}ms"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def auto_rate(capacities: list[float]) -> int:
    """Half the slowest server's capacity, rounded down to 1000 (at least 1000)."""
    slowest = min(capacities) if capacities else 2000
    return max(1000, int(slowest * 0.5) // 1000 * 1000)


def summarize(runs: list[Run], st: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in st.scenarios:
        sc: dict[str, Any] = {"capacity": {}, "latency": {}}
        for kind in ("capacity", "latency"):
            for name in st.servers:
                rs = [r for r in runs if (r.scenario, r.server, r.kind) == (scenario, name, kind)]
                if rs:
                    sc[kind][name] = asdict(median_run(rs))
        cap = sc["capacity"]
        lat = sc["latency"]
        zg = cap.get("zonegate")
        sc["ratios"] = {}
        for peer in st.servers:
            if peer == "zonegate" or peer not in cap or zg is None:
                continue
            per_round: dict[str, list[float]] = {"qps": [], "qps_per_core": []}
            for rnd in range(st.rounds):
                pair = {
                    r.server: r
                    for r in runs
                    if r.scenario == scenario
                    and r.kind == "capacity"
                    and r.round == rnd
                    and not r.failed
                    and r.server in ("zonegate", peer)
                }
                if len(pair) == 2:
                    for key in per_round:
                        v = ratio(getattr(pair["zonegate"], key), getattr(pair[peer], key))
                        if v is not None:
                            per_round[key].append(v)
            sc["ratios"][peer] = {
                # The median of the per-round ratios: each round runs the servers back to
                # back, so a ratio within a round sees the same state of the host.
                "qps": statistics.median(per_round["qps"]) if per_round["qps"] else None,
                "qps_per_core": (
                    statistics.median(per_round["qps_per_core"])
                    if per_round["qps_per_core"]
                    else None
                ),
                "qps_rounds": per_round["qps"],
                "qps_per_core_rounds": per_round["qps_per_core"],
                "p99_at_rate": ratio(
                    lat.get("zonegate", {}).get("p99_ms"), lat.get(peer, {}).get("p99_ms")
                ),
            }
        target = TARGET_STATIC if scenario == "static" else TARGET_GSLB
        got = sc["ratios"].get("pdns", {}).get("qps")
        per_core = sc["ratios"].get("pdns", {}).get("qps_per_core")
        sc["target"] = {
            "ratio": target,
            "against": "pdns packet cache" if scenario == "static" else "pdns LUA shared",
            "measured": got,
            "met": None if got is None else got >= target,
            "measured_per_core": per_core,
            "met_per_core": None if per_core is None else per_core >= target,
        }
        out[scenario] = sc
    return out


LABELS = {
    ("static", "zonegate"): "zonegate",
    ("static", "gdnsd"): "gdnsd",
    ("static", "pdns"): "pdns (packet cache)",
    ("gslb", "zonegate"): "zonegate (gslb weight)",
    ("gslb", "gdnsd"): "gdnsd (weighted)",
    ("gslb", "pdns"): "pdns (LUA shared)",
}


def print_table(summary: dict[str, Any], st: Settings) -> None:
    print()
    head = (
        f"{'scenario':8} {'server':22} {'QPS':>9} {'QPS/core':>9} {'lost':>6} {'avg':>7} "
        f"{'srv CPU':>7} "
        f"{'perf CPU':>8} {'others':>6} {'steal':>5} | {'rate':>6} {'avg':>7} {'p50':>7} "
        f"{'p99':>7} {'p99.9':>7}"
    )
    print(head)
    print("-" * len(head))
    for scenario, sc in summary.items():
        for name in st.servers:
            c = sc["capacity"].get(name)
            if c is None:
                continue
            lat = sc["latency"].get(name, {})
            label = LABELS.get((scenario, name), name)
            print(
                f"{scenario:8} {label:22} {c['qps']:9.0f} {c['qps_per_core']:9.0f} "
                f"{c['lost_pct']:5.2f}% {fmt_ms(c['avg_ms']):>7} {c['server_cpu']:7.2f} "
                f"{c['dnsperf_cpu']:8.2f} "
                f"{c['other_cpu']:6.2f} {c['steal_cpu']:5.2f} "
                f"| {lat.get('rate', 0):6d} {fmt_ms(lat.get('avg_ms')):>7} "
                f"{fmt_ms(lat.get('p50_ms')):>7} {fmt_ms(lat.get('p99_ms')):>7} "
                f"{fmt_ms(lat.get('p999_ms')):>7}"
            )
        for peer, rt in sc["ratios"].items():
            print(
                f"{'':8} zonegate/{LABELS.get((scenario, peer), peer)}: QPS "
                f"{fmt_ratio(rt['qps'])}{_rounds(rt['qps_rounds'])}, QPS per core "
                f"{fmt_ratio(rt['qps_per_core'])}{_rounds(rt['qps_per_core_rounds'])}, "
                f"p99 at the fixed rate {fmt_ratio(rt['p99_at_rate'])}"
            )
        print()
    for scenario, sc in summary.items():
        t = sc["target"]
        what = "static names" if scenario == "static" else "GSLB names"
        print(
            f"target ({what}): zonegate QPS >= {t['ratio']}x {t['against']}: "
            f"{fmt_ratio(t['measured'])} -> {_verdict(t['met'])} "
            f"(per core: {fmt_ratio(t['measured_per_core'])} -> {_verdict(t['met_per_core'])})"
        )


def _rounds(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return " (rounds " + " ".join(f"{v:.2f}" for v in values) + ")"


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "NOT MET")


def parse_seconds(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(ms|s)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 10s, 500ms)")
    return float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dns_bench",
        description="zonegate dns against gdnsd and PowerDNS (dnsperf, loopback, one core each)",
        epilog="Debian packages installed when missing: dnsperf, gdnsd, pdns-server, "
        "pdns-backend-bind. See bench/README.md.",
    )
    p.add_argument("--duration", type=parse_seconds, default=10.0, help="each measured run")
    p.add_argument("--warmup", type=parse_seconds, default=2.0, help="before each capacity run")
    p.add_argument("--clients", type=int, default=8, help="dnsperf -c (sockets)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    p.add_argument(
        "--max-qps", type=int, default=0, help="dnsperf -Q of the capacity runs (0: none)"
    )
    p.add_argument(
        "--latency-rate",
        default="auto",
        help="dnsperf -Q of the latency runs: 'auto' (half the slowest capacity), N, or 0 (skip)",
    )
    p.add_argument("--servers", default=",".join(SERVERS), help="which servers, in order")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="static,gslb")
    p.add_argument("--rounds", type=int, default=1, help="repeat every run, report medians")
    p.add_argument(
        "--settle", type=parse_seconds, default=20.0, help="max wait for a quiet machine"
    )
    p.add_argument(
        "--max-others", type=float, default=0.25, help="others' + stolen cores that mean noisy"
    )
    p.add_argument("--retries", type=int, default=2, help="repeats of a noisy run (quietest kept)")
    p.add_argument("--edns", action="store_true", help="dnsperf -e (EDNS0 on every query)")
    p.add_argument("--pin", choices=["auto", "none"], default="auto")
    p.add_argument("--quick", action="store_true", help="2 s runs, 1 s warm-up, no settle")
    p.add_argument("--json", default=None, help="also write every figure to this file")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs, logs, dnsperf output")
    p.add_argument("--no-install", action="store_true", help="never apt-get install")
    p.add_argument(
        "--no-inprocess", action="store_true", help="skip the in-process respond() timings"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.settle, args.retries = 2.0, 1.0, 0.0, 0
    servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if bad := [x for x in servers if x not in SERVERS]:
        raise SystemExit(f"dns_bench: unknown servers {bad} (choose from {', '.join(SERVERS)})")
    if bad := [x for x in scenarios if x not in SCENARIOS]:
        raise SystemExit(f"dns_bench: unknown scenarios {bad} (choose from {SCENARIOS})")
    st = Settings(
        duration=args.duration,
        warmup=args.warmup,
        clients=args.clients,
        outstanding=args.outstanding,
        max_qps=args.max_qps,
        latency_rate=args.latency_rate,
        servers=servers,
        scenarios=scenarios,
        rounds=max(1, args.rounds),
        settle=args.settle,
        max_others=args.max_others,
        retries=args.retries,
        edns=args.edns,
        pin=args.pin,
    )
    tools = ensure_tools(not args.no_install, servers)
    info = dns_machine_info(tools)
    server_cpus, load_cpus = pin_plan(st.pin)
    print(
        f"dns_bench {info['date']}: {info['nproc']} CPU ({info['cpu_model']}), "
        f"kernel {info['kernel']}, Python {info['python']}, uvloop {info['uvloop']}, "
        f"zonegate {info['zonegate']}"
    )
    print(f"  {info['dnsperf']}; gdnsd {info['gdnsd']}; PowerDNS {info['pdns']}")
    print(f"  load average at start: {' '.join(info['loadavg_at_start'])}")
    print(f"  zonegate checkout: {info['git']}")
    print(
        f"  pinning: servers on CPU {server_cpus}, dnsperf on CPU {load_cpus}"
        if server_cpus
        else "  pinning: none"
    )

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="dns_bench-"))
    qfiles = {
        "static": tmp / "queries-static.txt",
        "gslb": tmp / "queries-gslb.txt",
    }
    qfiles["static"].write_text("".join(f"{n}.{ZONE} {t}\n" for n, t in STATIC_QUERIES))
    qfiles["gslb"].write_text("".join(f"{n}.{ZONE} {t}\n" for n, t in GSLB_QUERIES))
    procs = Procs()
    health: HealthPorts | None = None
    runs: list[Run] = []
    failed = False
    interrupted = False
    zg_log_problems: list[str] = []
    inproc: dict[str, float] = {}
    try:
        health = HealthPorts()
        print(f"  zone health ports: {VIP1}:{health.port}, {VIP2}:{health.port}; files in {tmp}")
        if "zonegate" in servers and not args.no_inprocess:
            topo = tmp / "zonegate-inprocess.yaml"
            topo.write_text(zonegate_topology(health.port))
            inproc = inprocess_costs(topo, server_cpus)
            print(
                "  zonegate in-process DnsService.respond(), us/call: "
                + ", ".join(f"{k} {v:.1f}" for k, v in inproc.items())
            )
        started: dict[str, Server] = {}
        for name in servers:
            print(f"  starting {name} ...", end="", flush=True)
            try:
                started[name] = start_server(procs, name, tools, tmp, health.port, server_cpus)
            except StartError as e:
                print(f" FAILED\n{textwrap.indent(str(e), '    ')}", flush=True)
                failed = True
                continue
            print(f" udp+tcp 127.0.0.1:{started[name].port}, answers checked", flush=True)
        for scenario in scenarios:
            for kind in ("capacity", "latency"):
                rate = 0
                if kind == "latency":
                    if st.latency_rate == "0":
                        continue
                    if st.latency_rate == "auto":
                        caps = [
                            r.qps
                            for r in runs
                            if r.scenario == scenario and r.kind == "capacity" and not r.failed
                        ]
                        rate = auto_rate(caps)
                    else:
                        rate = int(st.latency_rate)
                for rnd in range(st.rounds):
                    for name, server in started.items():
                        print(
                            f"  {scenario:6} {kind:8} {name:8} round {rnd + 1}/{st.rounds}"
                            + (f" at {rate} qps" if rate else "")
                            + " ...",
                            end="",
                            flush=True,
                        )
                        r = measure_quietest(
                            server, scenario, kind, rnd, rate, st, tools, tmp, qfiles[scenario]
                        )
                        runs.append(r)
                        if r.failed:
                            failed = True
                            print(f" FAILED\n{textwrap.indent(r.failed, '    ')}", flush=True)
                            continue
                        lat = (
                            f", p50 {fmt_ms(r.p50_ms)}, p99 {fmt_ms(r.p99_ms)}"
                            if r.p99_ms is not None
                            else ""
                        )
                        print(
                            f" {r.qps:.0f} qps, lost {r.lost_pct:.2f}%, "
                            f"avg {fmt_ms(r.avg_ms)}{lat}, "
                            f"server CPU {r.server_cpu:.2f}, dnsperf CPU {r.dnsperf_cpu:.2f}, "
                            f"others {r.other_cpu:.2f}, softirq {r.kern_cpu:.2f}, "
                            f"steal {r.steal_cpu:.2f}, "
                            f"per-CPU busy {' '.join(f'{v:.2f}' for v in r.per_cpu.values())}"
                            + (f", quietest of {r.attempts}" if r.attempts > 1 else "")
                            + (f" [{r.notes}]" if r.notes else ""),
                            flush=True,
                        )
        zg = started.get("zonegate")
        if zg is not None:
            problems = check_answers(zg.port, STATIC_QUERIES + GSLB_QUERIES)
            if problems:
                zg_log_problems.append("answers after the runs: " + "; ".join(problems))
            text = zg.proc.log_text()
            for pat in (r"Traceback", r"\bbug\b", r"ERROR", r"Exception"):
                if re.search(pat, text):
                    zg_log_problems.append(f"log matches {pat!r}")
            if zg_log_problems:
                print("zonegate check: " + "; ".join(zg_log_problems))
                print(textwrap.indent(zg.proc.log_tail(20), "    "))
            else:
                print("zonegate check: answers still correct after the runs, no error in its log")
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every process started", file=sys.stderr)
    except StartError as e:
        failed = True
        print(f"dns_bench: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if health is not None:
            health.close()
        if args.keep_tmp or failed:
            print(f"configs, logs and dnsperf output kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs, st)
    print_table(summary, st)
    if args.json:
        write_results(
            args.json,
            info,
            st,
            runs,
            summary=summary,
            zonegate_check=zg_log_problems,
            zonegate_inprocess_us=inproc,
            interrupted=interrupted,
        )
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
