"""How fast a change reaches traffic through `zonegate lb`, under wrk load.

Used by `lb_bench.py --changes` (imported, not run by itself). One nginx backend
process answers on three ports, each with its own body (``hello b1`` .. ``hello b3``),
so a response names the backend that served it. A topology with b1 and b2 (weighted,
every feature on, as in the comparison) runs on one zonegate engine; wrk loads it, and
a probe thread in this script sends one request after another over a keep-alive
connection and records, for each, when it was sent and answered, the status, the
backend and the ``X-Zonegate-Version`` value. Each step makes one change while wrk
runs and reports how long after the change the probe first saw it in a response
(an upper bound: the probe's spacing is printed too) and every failed request (wrk's
errors in that step's run plus the probe's):

- drain: ``POST /pools/bench-pool/backends/b1/drain`` on the admin API; reached when
  no request sent afterwards is answered by b1 any more (watched for `WATCH` s);
- enable: ``POST .../b1/enable``; reached at the first answer from b1;
- reload, runtime only: b2's weight 1 <-> 2 in the file, SIGHUP; reached at the first
  answer with the new version (with --engine haproxy: weights set through the Runtime
  API, no HAProxy reload);
- reload, structural: b3 added to the pool, SIGHUP; reached at the first answer with
  the new version, and (second figure) the first from b3 (with --engine haproxy: a new
  haproxy.cfg, checked, then a seamless HAProxy reload);
- reload, structural back: b3 removed again, SIGHUP; reached at the new version.

Every loop is bounded in time; every process is stopped by PID through `Procs`.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import statistics
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import Proc, Procs

LEAD = 1.0  # seconds of load before each change
WATCH = 2.5  # seconds the probe watches after each change
STEPS = ("drain", "enable", "reload-runtime", "reload-add-b3", "reload-remove-b3")


def backends_conf(tmp: Path, ports: dict[str, int]) -> str:
    """nginx answering ``hello NAME`` on each backend's port (one process)."""
    servers = "".join(
        f"""
            server {{
                listen 127.0.0.1:{port} backlog=4096;
                location / {{ return 200 "hello {name}\\n"; }}
            }}"""
        for name, port in ports.items()
    )
    return (
        textwrap.dedent(f"""\
        # lb_bench --changes backends: a fixed answer naming the backend
        worker_processes 1;
        pid {tmp}/changes-nginx.pid;
        error_log {tmp}/changes-nginx.error.log warn;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            server_tokens off;
            default_type text/plain;
            keepalive_requests 1000000;
            keepalive_timeout 300s;
            client_body_temp_path {tmp}/changes-body;
            proxy_temp_path {tmp}/changes-proxy;
            fastcgi_temp_path {tmp}/changes-fastcgi;
            uwsgi_temp_path {tmp}/changes-uwsgi;
            scgi_temp_path {tmp}/changes-scgi;""")
        + textwrap.indent(textwrap.dedent(servers), "    ")
        + "\n}\n"
    )


def topology(port: int, admin: int, backends: list[tuple[str, int, int]]) -> str:
    """The comparison's topology with several (name, port, weight) backends."""
    items = "".join(
        f"""
              - address: 127.0.0.1:{bport}
                name: {name}
                weight: {weight}"""
        for name, bport, weight in backends
    )
    return textwrap.dedent(f"""\
        # lb_bench: one zone, one weighted pool, every feature on
        zones:
          bench:
            lb_admin: 127.0.0.1:{admin}
        pools:
          bench-pool:
            zone: bench
            balance: weighted
            backends:{textwrap.indent(textwrap.dedent(items), "              ")}
            health:
              active:
                type: http
                path: /healthz
                expect_status: 2xx
                interval: 1s
                timeout: 500ms
              passive:
                consecutive_failures: 5
            retries: 2
            keepalive: 128
        listeners:
          bench-http:
            zone: bench
            bind: 127.0.0.1:{port}
            protocol: http
            routes:
              - pool: bench-pool
            forwarded_headers: true
            version_header: X-Zonegate-Version
        """)


@dataclass
class Seen:
    sent: float
    answered: float
    status: int  # 0: no answer (connection error)
    backend: str
    version: str


class Probe:
    """One keep-alive client in a thread, recording every request (bounded in time)."""

    def __init__(self, port: int, max_seconds: float) -> None:
        self.port = port
        self.records: list[Seen] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def __enter__(self) -> Probe:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
            t0 = time.monotonic()
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read()
                rec = Seen(
                    t0,
                    time.monotonic(),
                    r.status,
                    body.decode(errors="replace").removeprefix("hello ").strip(),
                    r.getheader("X-Zonegate-Version", ""),
                )
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                rec = Seen(t0, time.monotonic(), 0, "", "")
                conn.close()
                conn = None
                time.sleep(0.001)
            with self.lock:
                self.records.append(rec)
        if conn is not None:
            conn.close()

    def since(self, t: float) -> list[Seen]:
        with self.lock:
            return [r for r in self.records if r.sent >= t]


@dataclass
class Step:
    engine: str
    step: str
    round: int
    reached_ms: float | None = None  # change -> first response showing it (upper bound)
    reached2_ms: float | None = None  # structural add: change -> first answer from b3
    probe_gap_ms: float = 0.0  # median spacing of the probe's requests in the step
    probe_requests: int = 0
    probe_failed: int = 0
    wrk_rps: float = 0.0
    wrk_errors: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    action: str = ""  # what the change returned (admin answer, log line)
    problem: str = ""

    @property
    def failed(self) -> int:
        return self.wrk_errors + self.probe_failed


def _first(recs: list[Seen], pred: Callable[[Seen], bool]) -> float | None:
    for r in recs:
        if pred(r):
            return r.answered
    return None


def _gone(recs: list[Seen], backend: str) -> float | None:
    """When `backend` stopped answering: the first answer after its last one."""
    last = max((r.sent for r in recs if r.backend == backend), default=None)
    if last is None:
        return recs[0].answered if recs else None
    after = [r for r in recs if r.sent > last and r.status == 200]
    if not after or after[-1].answered - last < WATCH / 2:
        return None  # still answering near the end of the watch: not reached
    return after[0].answered


def _post(admin: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5.0)
    try:
        conn.request("POST", path)
        r = conn.getresponse()
        return f"{r.status} {r.read().decode(errors='replace').strip()[:80]}"
    finally:
        conn.close()


@dataclass
class Bed:
    """What every step needs: the processes, the tools, the ports, the proxy."""

    procs: Procs
    tools: dict[str, str]
    tmp: Path
    ports: dict[str, int]
    bports: dict[str, int]
    load_cpus: str | None
    connections: int
    parse_wrk: Callable[[str], Any]
    proxy: Proc
    probe: Probe
    weights: dict[str, int] = field(default_factory=lambda: {"b1": 1, "b2": 1})
    version: int = 1

    def write_topology(self) -> None:
        backends = [(n, self.bports[n], w) for n, w in self.weights.items()]
        text = topology(self.ports["proxy"], self.ports["admin"], backends)
        (self.tmp / "zonegate-bench.yaml").write_text(text)


def _change(bed: Bed, st: Step) -> float:
    """Make the step's change; return the time it was made."""
    if st.step in ("drain", "enable"):
        t0 = time.monotonic()
        st.action = _post(bed.ports["admin"], f"/pools/bench-pool/backends/b1/{st.step}")
        return t0
    if st.step == "reload-runtime":
        bed.weights["b2"] = 3 - bed.weights["b2"]
    elif st.step == "reload-add-b3":
        bed.weights["b3"] = 1
    else:
        bed.weights.pop("b3", None)
    bed.write_topology()
    t0 = time.monotonic()
    os.kill(bed.proxy.pid, signal.SIGHUP)
    bed.version += 1
    return t0


def _reached(bed: Bed, st: Step, t0: float) -> None:
    """Fill in when the probe first saw the change in a response."""
    recs = bed.probe.since(t0)
    if st.step == "drain":
        t = _gone(recs, "b1")
    elif st.step == "enable":
        t = _first(recs, lambda r: r.backend == "b1")
    else:
        want = str(bed.version)
        t = _first(recs, lambda r: r.version == want)
        if st.step == "reload-add-b3":
            t2 = _first(recs, lambda r: r.backend == "b3")
            st.reached2_ms = None if t2 is None else (t2 - t0) * 1e3
    st.reached_ms = None if t is None else (t - t0) * 1e3


def _step(bed: Bed, st: Step) -> None:
    """One change under its own wrk run; the figures go into `st`."""
    argv = [bed.tools["wrk"], "-t1", f"-c{bed.connections}", f"-d{round(LEAD + WATCH + 1)}s"]
    argv.append(f"http://127.0.0.1:{bed.ports['proxy']}/")
    wrk = bed.procs.start(
        "wrk (changes)", argv, bed.tmp / "wrk-changes.out", bed.load_cpus, bed.tools["taskset"]
    )
    t0 = time.monotonic()
    try:
        time.sleep(LEAD)
        t0 = _change(bed, st)
        time.sleep(WATCH)
        _reached(bed, st, t0)
        wrk.popen.wait(LEAD + WATCH + 30)
    finally:
        bed.procs.stop(wrk)
    w = bed.parse_wrk(wrk.log_text())
    st.wrk_rps, st.wrk_errors, st.socket_errors = w.rps, w.errors, w.socket_errors
    if not w.ok:
        st.problem = f"wrk: {w.problem}"
    window = bed.probe.since(t0 - LEAD)
    st.probe_requests = len(window)
    st.probe_failed = sum(1 for r in window if r.status != 200)
    gaps = [b.sent - a.sent for a, b in itertools.pairwise(window)]
    st.probe_gap_ms = statistics.median(gaps) * 1e3 if gaps else 0.0
    if st.step.startswith("reload"):
        st.action = _last_reload_line(bed.proxy)
    if not bed.proxy.alive():
        st.problem = f"proxy exited: {bed.proxy.log_tail()}"


def run_changes(
    procs: Procs,
    engine: str,
    rounds: int,
    tools: dict[str, str],
    tmp: Path,
    ports: dict[str, int],
    proxy_cpus: str | None,
    load_cpus: str | None,
    start_proxy: Callable[..., tuple[Proc, str]],
    stop_proxy: Callable[[Procs, Proc], None],
    wait_http: Callable[[Proc, int], dict[str, str]],
    parse_wrk: Callable[[str], Any],
    connections: int,
) -> list[Step]:
    """Start the three-port backend and one zonegate engine (1 worker, pinned as the
    comparison's 1-worker runs), then run every step of `STEPS` `rounds` times under
    wrk load; return every step. The callables are lb_bench's."""
    bports = {"b1": ports["backend"], "b2": ports["b2"], "b3": ports["b3"]}
    conf = tmp / "changes-nginx.conf"
    conf.write_text(backends_conf(tmp, bports))
    argv = [tools["nginx"], "-p", str(tmp), "-e", str(tmp / "changes-nginx.error.log")]
    argv += ["-c", str(conf), "-g", "daemon off;"]
    log = tmp / "changes-backend.log"
    backend = procs.start("backends (changes)", argv, log, load_cpus, tools["taskset"])
    steps: list[Step] = []
    try:
        wait_http(backend, bports["b1"])
        text = topology(
            ports["proxy"], ports["admin"], [("b1", bports["b1"], 1), ("b2", bports["b2"], 1)]
        )
        proxy, check = start_proxy(
            procs, engine, 1, tools, tmp, ports, proxy_cpus, topology=text, log_level="INFO"
        )
        print(f"  changes on {engine}: {check}", flush=True)
        try:
            limit = rounds * len(STEPS) * (LEAD + WATCH + 10) + 30
            with Probe(ports["proxy"], max_seconds=limit) as probe:
                bed = Bed(
                    procs,
                    tools,
                    tmp,
                    ports,
                    bports,
                    load_cpus,
                    connections,
                    parse_wrk,
                    proxy,
                    probe,
                )
                for rnd in range(rounds):
                    for name in STEPS:
                        st = Step(engine=engine, step=name, round=rnd)
                        _step(bed, st)
                        steps.append(st)
                        print(f"    {fmt_step(st)}", flush=True)
                        if st.problem.startswith("proxy exited"):
                            return steps
        finally:
            stop_proxy(procs, proxy)
    finally:
        procs.stop(backend)
    return steps


def _last_reload_line(proxy: Proc) -> str:
    lines = [ln for ln in proxy.log_text().splitlines() if "reload" in ln]
    return lines[-1].strip()[-160:] if lines else ""


def fmt_ms(v: float | None) -> str:
    return "not seen" if v is None else f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def fmt_step(st: Step) -> str:
    extra = f", b3 serving after {fmt_ms(st.reached2_ms)}" if st.step == "reload-add-b3" else ""
    for kind in ("applied at runtime", "HAProxy reloaded"):
        if f"({kind})" in st.action:
            extra += f" [{kind}]"
    return (
        f"{st.step:<17} reached traffic after {fmt_ms(st.reached_ms)}{extra} "
        f"(probe every {st.probe_gap_ms:.2f} ms); failed {st.failed} "
        f"(wrk {st.wrk_errors} of {st.wrk_rps:.0f} req/s, probe {st.probe_failed} of "
        f"{st.probe_requests})" + (f"; {st.problem}" if st.problem else "")
    )


def summarize_changes(steps: list[Step]) -> dict[str, Any]:
    """Per engine and step: median and max time to reach traffic, failed requests."""
    out: dict[str, Any] = {}
    for st in steps:
        e = out.setdefault(st.engine, {}).setdefault(
            st.step, {"reached_ms": [], "reached2_ms": [], "failed": 0, "not_seen": 0}
        )
        if st.reached_ms is None:
            e["not_seen"] += 1
        else:
            e["reached_ms"].append(st.reached_ms)
        if st.reached2_ms is not None:
            e["reached2_ms"].append(st.reached2_ms)
        e["failed"] += st.failed
    return out


def print_changes(steps: list[Step], connections: int) -> None:
    """The per-step summary: time to reach traffic and failed requests."""
    print()
    print(f"changes under load (wrk -t1 -c{connections}, 1 worker), over the rounds:")
    for engine, per in summarize_changes(steps).items():
        for name, e in per.items():
            xs = e["reached_ms"]
            med = f"median {statistics.median(xs):.1f} ms, max {max(xs):.1f} ms" if xs else "-"
            extra = ""
            if e["reached2_ms"]:
                extra = f"; first b3 answer median {statistics.median(e['reached2_ms']):.1f} ms"
            print(
                f"  {engine:<16} {name:<17} {med}{extra}; not seen {e['not_seen']}; "
                f"failed requests {e['failed']}"
            )


def steps_json(steps: list[Step]) -> list[dict[str, Any]]:
    return [asdict(s) | {"failed": s.failed} for s in steps]
