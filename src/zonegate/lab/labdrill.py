"""`zonegate lab drill`: the demo's drills on the lab, plus a VIP master kill and a zone
partition, under SDK load from the client namespace.

Where things run: the load (`zonegate.lab.labload`) and the VIP prober
(`zonegate.lab.probe`) run in the client namespace (``ip netns exec``), so their
traffic is a client's: it resolves through the GSLB DNS, reaches the VIPs over the
bridge and is cut by a partition. The drill itself moves into the core namespace
(setns, before any thread exists) and acts from there as an operator next to the
control plane: control API writes, the LBs' and VRRP agents' admin endpoints, the DNS
admin; processes are killed by PID and links and nftables changed by namespace name.
Every sample carries the host's monotonic time (shared by every namespace), so the
drill puts the load's samples, the prober's events and its own actions on one clock.

The steps (zone A = changping, B = yanqing; `zonegate.lab.demo` provides baseline,
kill-one, cutover and final unchanged, with this drill standing in for the demo's):

=============  ======================================================================
baseline       traffic only; HTTPDNS and DNS answer; one VRRP master per zone
kill-one       SIGKILL cp-3: retries hide it, A's LB ejects it
kill-master    the VIP master of A dies: its bridge port goes down and its
               `zonegate vrrp`, `zonegate lb` and probe server are SIGKILLed; the
               backup takes the VIP; a prober sends a UDP probe to the VIP every 10 ms
               and measures the outage; the SDK retries what fails on B
partition      nftables in each of A's namespaces drops IPv4 to and from anything
               outside A: the GSLB marks A down and answers B only; A's devices fail
               over to B in the SDK (0 failed: idempotent GETs are retried)
heal           the rules go; the GSLB sees A up again
cutover        ``POST /v1/cutover/api.example.test {"to": B}``: every request on B
restore        the dead node comes back (link up, lb, vrrp: it preempts the VIP back),
               cp-3 restarts, ``POST /v1/restore/...``: A serves its devices again
final          traffic only: each zone serves its own devices
=============  ======================================================================

The report (report.json, report.html) is the demo's (`zonegate.lab.report`), with a
``vip_outages`` list (every prober run: the step, longest outage, nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httptools
import httpx
from rich.console import Console
from rich.markup import escape

from zonegate.balance.shard import zone_for
from zonegate.lab import demo
from zonegate.lab.drills import Budget, Check, Sample, Step, StepRun, evaluate
from zonegate.lab.lab import Lab, LabError, enter_namespace, require_root
from zonegate.lab.labplan import (
    LB_ADMIN_PORT,
    NFT_TABLE,
    PROBE_PORT,
    SPLIT_HOST,
    VRRP_ADMIN_PORT,
    ZonePlan,
    partition_nft,
)
from zonegate.lab.load import admin_call
from zonegate.lab.probe import read_events
from zonegate.lab.report import bucket_samples
from zonegate.topology.schema import SplitMap
from zonegate.topology.types import HostPort

__all__ = ["LabDrill", "lab_steps", "run_drill"]

RATE = 150.0
"""Requests per second from the client: what a shared two-core machine sustains next
to the lab's twenty-odd processes."""
DEVICES = 40
LOAD_START_TIMEOUT = 60.0
STATUS_POLL = 0.05


# --- helper processes in the client namespace -------------------------------------------


class LoadProc:
    """`zonegate.lab.labload run` in the client namespace; its samples, on our clock."""

    def __init__(self, lab: Lab, t0: float, log: Path) -> None:
        self.lab = lab
        self.t0 = t0
        self.log = log
        self.samples: list[Sample] = []
        self.version_events: list[tuple[float, int]] = []
        self.version = 0
        self.name = "?"
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        p = self.lab.plan
        argv = [
            sys.executable, "-m", "zonegate.lab.labload", "run",
            "--control", p.control_url, "--dns", p.dns, "--domain", SPLIT_HOST,
            "--rate", f"{RATE:g}", "--devices", str(DEVICES), "--duration", "30m",
        ]  # fmt: skip
        for z in p.zones.values():
            argv += ["--vip", f"{z.name}={z.vip}"]
        with open(self.log, "ab") as err:  # noqa: ASYNC230 - a local log, opened once
            self.proc = await asyncio.create_subprocess_exec(
                *self.lab.net.argv(self.lab.ns("client"), argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                limit=1 << 20,
            )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        ready = asyncio.get_running_loop().create_task(self.ready.wait())
        _done, _ = await asyncio.wait(
            {ready, self._reader}, timeout=LOAD_START_TIMEOUT, return_when="FIRST_COMPLETED"
        )
        ready.cancel()
        if not self.ready.is_set():
            await self.stop()
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise LabError(f"the load generator did not start:\n{tail}")

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with open(self.log.with_suffix(".jsonl"), "wb") as raw:  # noqa: ASYNC230 - local, once
            await self._read_lines(self.proc.stdout, raw)
        self.ended.set()

    async def _read_lines(self, stdout: asyncio.StreamReader, raw: Any) -> None:
        """Parse the load's JSON lines; keep a raw copy (``load.jsonl``: host clock)."""
        while True:
            line = await stdout.readline()
            if not line:
                break
            raw.write(line)
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if "s" in doc:
                # [t, zone, backend, status, latency, error, home, version, failover,
                # served]: Sample's fields in order (labload.py)
                t, *rest = doc["s"]
                self.samples.append(Sample(t - self.t0, *rest))
            elif doc.get("event") == "version":
                self.version = max(self.version, int(doc["version"]))
                self.version_events.append((doc["t"] - self.t0, int(doc["version"])))
            elif doc.get("event") == "ready":
                self.name = doc.get("router", "?")
                self.version = int(doc.get("version") or 0)
                self.ready.set()

    async def stop(self) -> None:
        """SIGTERM; the load flushes its last samples and exits."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5.0)


class ProbeRun:
    """A 10 ms UDP prober of one VIP, in the client namespace (`zonegate.lab.probe`)."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path, t0: float) -> None:
        self.proc = proc
        self.out = out
        self.t0 = t0
        self.summary: dict[str, Any] = {}

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.out)

    def current_node(self) -> tuple[str | None, float]:
        """The node answering now (None while failing) and since when (monotonic)."""
        node, since = None, 0.0
        for ev in self.events():
            if ev.get("event") == "node":
                node, since = ev["node"], ev["t"]
            elif ev.get("event") == "fail":
                node, since = None, ev["t"]
        return node, since

    async def wait_node(self, node: str, within: float, stable: float = 0.3) -> float | None:
        """Monotonic time `node` started answering, once it has for `stable` s; None if
        not within `within` s."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and self.proc.returncode is None:
            now_node, since = self.current_node()
            if now_node == node and time.monotonic() - since >= stable:
                return since
            await asyncio.sleep(0.02)
        return None

    async def finish(self) -> dict[str, Any]:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        for ev in reversed(self.events()):
            if ev.get("event") == "summary":
                self.summary = ev
                break
        return self.summary

    def outage_after(self, t: float) -> tuple[float, int]:
        """(longest outage in s, probes lost in it) among outages ending after `t`."""
        best = (0.0, 0)
        for o in self.summary.get("outages", []):
            if o["end"] >= t and o["ms"] / 1000 > best[0]:
                best = (o["ms"] / 1000, int(o["failed"]))
        return best


# --- the drill --------------------------------------------------------------------------


class LabDrill(demo.DrillBase):
    """Drives the steps on a running lab; duck-types the demo's `Drill` for its steps.

    Args:
        lab: the lab (from its state file).
        steps: the steps to run.
        console: where events go.
    """

    reason = "zonegate lab drill"

    def __init__(self, lab: Lab, steps: Sequence[Step], console: Console, quick: bool) -> None:
        self.lab = lab
        self.plan = lab.plan
        self.steps = steps
        self.console = console
        self.quick = quick
        self.run_dir = Path(lab.state.run_dir)
        self.t0 = time.monotonic()
        self.runs: list[StepRun] = []
        self.current: StepRun | None = None
        self.status: dict[str, dict[str, Any] | None] = {z: None for z in self.plan.zones}
        self.load: LoadProc | None = None
        self.router: LoadProc | None = None
        self.vip_outages: list[dict[str, Any]] = []
        self.dead_nodes: list[str] = []
        self.pids: dict[str, list[int]] = {
            n: [pid] for n, (pid, _) in lab.state.pids.items() if pid
        }
        self._step_index = 0
        self._probes = 0
        self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        self.token = Path(lab.state.token_file).read_text().strip()
        self.control_url = self.plan.control_url

    # processes

    def _note_pid(self, name: str) -> None:
        pid = self.lab.state.pids.get(name, (0, 0))[0]
        self.pids.setdefault(name, []).append(pid)

    def kill_backend(self, run: StepRun, name: str) -> None:
        """SIGKILL a backend; the step's fault time is the first kill."""
        if run.fault is None:
            run.fault = self.now()
        pid = self.lab.kill(f"backend {name}")
        self.event(run, f"SIGKILL {name} (pid {pid})")

    async def restart(self, run: StepRun, name: str) -> None:
        """Start a process of the lab again (same argv, same namespace, same log)."""
        self.lab.spawn(name)
        self._note_pid(name)
        await self.lab.wait_ready_async(name)
        self.event(run, f"restarted {name} (pid {self.lab.pid(name)})")

    def node_down(self, run: StepRun, node: str) -> None:
        """The machine dies: its bridge port down, then its processes SIGKILLed."""
        run.fault = self.now()
        self.lab.set_link(node, up=False)
        killed = []
        for what in ("vrrp", "lb", "probe"):
            pid = self.lab.kill(f"{what} {node}")
            killed.append(f"{what} {pid}")
        self.dead_nodes.append(node)
        self.event(run, f"{node} dies: bridge port down, SIGKILL {', '.join(killed)}")

    async def node_up(self, run: StepRun, node: str) -> None:
        """The machine reboots: no VIP left on its interface, link up, lb, probe, vrrp."""
        z = self.plan.zone_of_node(node)
        with contextlib.suppress(Exception):
            self.lab.net.run(
                self.lab.ns(node), ["ip", "addr", "del", f"{z.vip}/32", "dev", "eth0"], check=False
            )
        self.lab.set_link(node, up=True)
        self.event(run, f"{node}: bridge port up (rebooted: no VIP on eth0)")
        await self.restart(run, f"lb {node}")
        await self.restart(run, f"probe {node}")
        await self.restart(run, f"vrrp {node}")
        with contextlib.suppress(ValueError):
            self.dead_nodes.remove(node)

    # the control plane

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    async def split(self) -> SplitMap | None:
        """The split map of the lab's domain as the control plane has it now."""
        try:
            resp = await self._http.get(self.plan.control_url + "/v1/state")
            return SplitMap.model_validate(resp.json()["split"][SPLIT_HOST])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    # the GSLB and VRRP

    async def dns_a(self, name: str) -> list[str]:
        import dns.asyncquery
        import dns.message
        import dns.rdatatype

        q = dns.message.make_query(name, dns.rdatatype.A)
        ans = await dns.asyncquery.udp(q, self.plan.core_ip, port=self.plan.dns_port, timeout=2.0)
        return [r.address for rrset in ans.answer for r in rrset if r.rdtype == 1]

    async def vrrp_status(self, node: str) -> dict[str, Any] | None:
        addr = self.plan.zone_of_node(node).nodes[node]
        try:
            status, body = await admin_call(HostPort(addr, VRRP_ADMIN_PORT), "GET", "/status")
            return dict(json.loads(body)) if status == 200 else None
        except (OSError, TimeoutError, ValueError, httptools.HttpParserError):
            return None

    async def check_gslb(self) -> list[Check]:
        """HTTPDNS sends devices where the client does; DNS answers each zone domain
        with its VIP; each zone has exactly one VRRP master, the one holding the VIP."""
        import dns.exception

        checks: list[Check] = []
        split = await self.split()
        devices = [f"sdk-dev-{i:04d}" for i in range(20)]
        agree, detail = 0, "no split map from the control plane"
        if split is not None:
            try:
                for dev in devices:
                    resp = await self._http.get(
                        f"http://{self.plan.httpdns}/d",
                        params={"host": SPLIT_HOST, "device_id": dev},
                    )
                    answer = resp.json()["answers"][0]
                    home = zone_for(dev, split)
                    if home is not None and answer.get("split", {}).get("zone") == home[0]:
                        agree += 1
                detail = f"{agree}/{len(devices)} devices sent to the zone the client uses"
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                detail = f"no answer: {exc!r}"
        checks.append(Check("httpdns agrees", agree == len(devices), detail))
        found: dict[str, list[str]] = {}
        try:
            for z in self.plan.zones.values():
                found[z.domain] = await self.dns_a(z.domain)
            ok = all(found[z.domain] == [z.vip] for z in self.plan.zones.values())
            detail = ", ".join(f"{d} -> {a}" for d, a in found.items())
        except (OSError, TimeoutError, dns.exception.DNSException) as exc:
            ok, detail = False, f"no answer: {exc!r}"
        checks.append(Check("dns answers", ok, detail))
        masters: dict[str, list[str]] = {}
        for z in self.plan.zones.values():
            for node in z.nodes:
                st = await self.vrrp_status(node)
                if st is not None and st.get("state") == "Master":
                    masters.setdefault(z.name, []).append(node)
        good = all(
            masters.get(z.name, []) == self.lab.holders(z.name) and len(masters[z.name]) == 1
            for z in self.plan.zones.values()
        )
        checks.append(
            Check(
                "one VRRP master per zone",
                good,
                ", ".join(f"{z}: {', '.join(m) or 'none'}" for z, m in masters.items()),
            )
        )
        return checks

    async def dns_zone_up(self, zone: str) -> bool | None:
        try:
            resp = await self._http.get(f"http://{self.plan.dns_admin}/status")
            return bool(resp.json()["zones"][zone]["up"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    async def wait_dns_zone(self, zone: str, *, up: bool, within: float) -> float | None:
        """When zonegate dns's zone health first showed `zone` up (or down); None."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await self.dns_zone_up(zone) is up:
                return self.now()
            await asyncio.sleep(STATUS_POLL)
        return None

    # the LB's view (through the VIP: the master's LB)

    def lb_admin(self, zone: str) -> HostPort:
        return HostPort(self.plan.zones[zone].vip, LB_ADMIN_PORT)

    # the prober

    @contextlib.asynccontextmanager
    async def probe(self, zone: ZonePlan, duration: float = 120.0) -> AsyncIterator[ProbeRun]:
        """A prober of `zone`'s VIP in the client namespace for the block's length."""
        self._probes += 1
        out = self.run_dir / f"prober-{self._probes}.jsonl"
        argv = [
            sys.executable, "-m", "zonegate.lab.probe", "probe", f"{zone.vip}:{PROBE_PORT}",
            "--events", "--interval", "10ms", "--timeout", "100ms", "--duration", f"{duration:g}s",
        ]  # fmt: skip
        with open(out, "wb") as f:  # noqa: ASYNC230 - a local file, opened once
            proc = await asyncio.create_subprocess_exec(
                *self.lab.net.argv(self.lab.ns("client"), argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=f,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        run = ProbeRun(proc, out, self.t0)
        deadline = time.monotonic() + 20.0
        while not any(e.get("event") == "ready" for e in run.events()):
            if proc.returncode is not None or time.monotonic() > deadline:
                await run.finish()
                raise LabError(f"the prober did not start: {out.read_text()[-1000:]}")
            await asyncio.sleep(0.02)
        try:
            yield run
        finally:
            if not run.summary:
                await run.finish()

    # the run

    async def run(self) -> list[StepRun]:
        self.load = self.router = LoadProc(self.lab, self.t0, self.run_dir / "load.log")
        await self.load.start()
        self.event(None, f"client: {self.load.name}, version {self.load.version}")
        try:
            for i, step in enumerate(self.steps, 1):
                await self._run_step(i, step)
        finally:
            await self.load.stop()
            # An interrupted partition must not outlive the drill (no-op otherwise).
            for z in self.plan.zones.values():
                for short in [*z.nodes, z.backend_ns]:
                    self.lab.nft_flush(short)
            # Every finished step, also when interrupted (an unfinished one has no end).
            for run in self.runs:
                if run.end:
                    evaluate(run, [s for s in self.load.samples if run.start <= s.t < run.end])
        return self.runs

    async def _run_step(self, i: int, step: Step) -> None:
        assert self.load is not None
        self._step_index = len(self.load.samples)
        run = StepRun(step, self.now())
        self.current = run
        self.runs.append(run)
        self.console.rule(f"step {i}/{len(self.steps)}  {step.name}: {step.title}", align="left")
        await step.action(self, run)
        end = max(run.start + step.duration, self.now() + step.settle)
        await asyncio.sleep(max(0.0, end - self.now()))
        run.end = self.now()
        mine = [s for s in self.load.samples[self._step_index :] if s.t >= run.start]
        bad = sum(1 for s in mine if not s.ok)
        self.console.print(
            f"[dim]{run.end:7.2f}s[/dim]  {step.name}: {len(mine)} requests so far, {bad} failed"
        )

    async def close(self) -> None:
        await self._http.aclose()


# --- the steps --------------------------------------------------------------------------


def lab_steps(d: LabDrill, quick: bool) -> list[Step]:
    """The lab's steps: the demo's baseline, kill-one, cutover and final around the
    lab's own kill-master, partition, heal and restore."""
    q = quick
    p = d.plan
    a, b = list(p.zones.values())
    scn = demo.Scenario(
        a.name,
        a.pool,
        b.pool,
        tuple(a.backends),
        tuple(b.backends),
        list(a.backends)[-1],
        list(a.backends)[-2],
        b.name,
        SPLIT_HOST,
    )
    from_demo = {s.name: s for s in demo.default_steps(scn, quick)}
    outage_bound = round(4 * p.advert + 1.5, 2)
    """Master_Down_Interval (3 adverts + skew < 1 advert) + gratuitous ARP + slack."""

    async def kill_master(d: LabDrill, run: StepRun) -> None:
        holders = d.lab.holders(a.name)
        if len(holders) != 1:
            run.checks.append(Check("one master", False, f"VIP {a.vip} held by {holders}"))
            return
        master = holders[0]
        backup = next(n for n in a.nodes if n != master)
        async with d.probe(a) as pr:
            await pr.wait_node(master, 5.0)
            d.node_down(run, master)
            fault_mono = d.t0 + (run.fault or 0.0)
            took = await pr.wait_node(backup, 15.0, stable=0.3)
            if took is not None:
                run.detect = took - d.t0
                d.event(run, f"the VIP {a.vip} answers from {backup} (prober)")
            await pr.finish()
        outage, lost = pr.outage_after(fault_mono)
        # What the load saw of it: the first request sent after the kill that A's VIP
        # answered (the SDK sent the others to B).
        fault = run.fault or 0.0

        def through_a(s: Sample) -> bool:
            return s.t > fault and s.ok and s.zone == a.name and s.owner == a.name

        if await d.wait_samples(through_a, 10.0):
            assert d.load is not None
            run.recovered = min(s.end for s in d.load.samples if through_a(s))
            d.event(run, f"the load: first request after the kill answered through {a.vip}")
        st = await d.vrrp_status(backup)
        state = (st or {}).get("state")
        run.checks.append(
            Check(
                f"{backup} took the VIP",
                took is not None and state == "Master" and backup in d.lab.holders(a.name),
                f"{backup} vrrp state {state}; VIP on eth0 of "
                f"{', '.join(d.lab.holders(a.name))} ({master}: dead, link down)",
            )
        )
        run.checks.append(
            Check(
                "VIP outage measured and bounded",
                0 < outage <= outage_bound,
                f"{outage * 1000:.0f} ms ({lost} probes of 10 ms lost), {master} -> {backup}; "
                f"bound {outage_bound:g}s",
            )
        )
        d.vip_outages.append(
            {
                "step": "kill-master",
                "zone": a.name,
                "vip": a.vip,
                "from": master,
                "to": backup,
                "outage_ms": round(outage * 1000, 1),
                "probes_lost": lost,
                "summary": pr.summary,
            }
        )
        d.event(run, f"VIP outage seen by the prober: {outage * 1000:.0f} ms")

    async def partition(d: LabDrill, run: StepRun) -> None:
        run.watch_zone = a.name
        run.recover_when = lambda s: s.owner == a.name and s.zone == b.name
        script = partition_nft(p, a.name)
        shorts = [*a.nodes, a.backend_ns]
        for short in shorts:
            d.lab.nft(short, script)
        # The fault is the moment the zone is cut off on every side: after the last rule.
        run.fault = d.now()
        d.event(run, f"nftables {NFT_TABLE} in {', '.join(shorts)}: {a.name} cut off")
        seen = await d.wait_dns_zone(a.name, up=False, within=10.0)
        if seen is not None:
            run.detect = seen
            d.event(run, f"zonegate dns: zone {a.name} down")
        answers: Counter[str] = Counter()
        with contextlib.suppress(Exception):
            for _ in range(10):
                answers.update(await d.dns_a(SPLIT_HOST))
        run.checks.append(
            Check(
                f"GSLB answers {b.name} only",
                bool(answers) and set(answers) == {b.vip},
                f"{SPLIT_HOST} x10 -> {dict(answers)}",
            )
        )
        fault = run.fault

        def moved(ss: list[Sample]) -> Check:
            # Sent after the cut and answered before the heal: a request whose packets
            # were dropped may still be answered by A once the rules go (a TCP
            # retransmission after the heal), which is right, not a leak.
            mine = [s for s in ss if s.owner == a.name and s.t > fault + 0.05 and s.end <= run.end]
            on_b = sum(1 for s in mine if s.ok and s.zone == b.name)
            return Check(
                f"{a.name}'s devices on {b.name}",
                bool(mine) and on_b == len(mine),
                f"{on_b}/{len(mine)} requests of {a.name}'s devices sent after the cut and "
                f"answered before the heal were answered by {b.name}",
            )

        run.late_checks.append(moved)

    async def heal(d: LabDrill, run: StepRun) -> None:
        run.fault = d.now()
        run.watch_zone = a.name
        run.recover_when = lambda s: s.owner == a.name and s.zone == a.name
        for short in [*a.nodes, a.backend_ns]:
            d.lab.nft_flush(short)
        d.event(run, f"nftables {NFT_TABLE} removed: {a.name} reachable again")
        seen = await d.wait_dns_zone(a.name, up=True, within=15.0)
        if seen is not None:
            run.detect = seen
            d.event(run, f"zonegate dns: zone {a.name} up")
        run.checks.append(
            Check("GSLB sees it", seen is not None, f"zone {a.name} up in zonegate dns /status")
        )

    async def restore(d: LabDrill, run: StepRun) -> None:
        run.fault = d.now()
        for node in list(d.dead_nodes):
            async with d.probe(a) as pr:
                await d.node_up(run, node)
                back = await pr.wait_node(node, 15.0, stable=0.3)
                await pr.finish()
            outage, lost = pr.outage_after(d.t0 + (run.fault or 0.0))
            if back is not None:
                d.event(run, f"{node} preempted the VIP back; prober outage {outage * 1000:.0f} ms")
            run.checks.append(
                Check(
                    f"{node} holds the VIP again",
                    back is not None and d.lab.holders(a.name) == [node],
                    f"VIP on {', '.join(d.lab.holders(a.name))}; outage {outage * 1000:.0f} ms "
                    f"({lost} probes lost)",
                )
            )
            d.vip_outages.append(
                {
                    "step": "restore",
                    "zone": a.name,
                    "vip": a.vip,
                    "to": node,
                    "outage_ms": round(outage * 1000, 1),
                    "probes_lost": lost,
                    "summary": pr.summary,
                }
            )
        for name in a.backends:
            if not d.lab.alive(f"backend {name}"):
                await d.restart(run, f"backend {name}")
        version = await d.restore_split(run, SPLIT_HOST)
        await d.wait_pool_back(run, a.name, a.pool, a.backends, lambda b: bool(b.get("available")))
        await d.wait_taking_traffic(run, a.name, a.pool, a.backends, version, 30.0)
        # The SDK's breakers that opened during the partition close after their
        # cool-down and half-open probes: wait for every device of A to be back on A.
        t_back = await _all_home(d, a.name, 40.0)
        if t_back is not None:
            d.event(run, f"all of {a.name}'s devices back on {a.name}")

    return [
        from_demo["baseline"],
        from_demo["kill-one"],
        Step(
            "kill-master",
            f"the VIP master of {a.name} dies (link down, SIGKILL): the backup takes the VIP",
            kill_master,
            3.0 if q else 8.0,
            Budget(max_failed=0, max_detect=outage_bound, max_recover=5.0),
            detect_means="kill to the VIP answering from the backup (10 ms prober)",
            recover_means=f"kill to the first request sent after it that {a.name}'s VIP "
            "answered (the load)",
        ),
        Step(
            "partition",
            f"nftables cuts {a.name} off: GSLB and SDK move its clients to {b.name}",
            partition,
            3.0 if q else 8.0,
            Budget(max_failed=0, max_detect=6.0, max_recover=2.0),
            detect_means=f"cut to zonegate dns showing {a.name} down",
            recover_means=f"first success on {b.name} for {a.name}'s devices",
        ),
        Step(
            "heal",
            f"the nftables rules go: {a.name} is reachable again",
            heal,
            2.0 if q else 6.0,
            Budget(max_failed=0, max_detect=10.0),
            detect_means=f"heal to zonegate dns showing {a.name} up",
            recover_means=f"first success on {a.name} for its devices",
            kind="repair",
        ),
        from_demo["cutover"],
        Step(
            "restore",
            f"the dead node and {scn.kill_one} come back, the split is restored",
            restore,
            2.0 if q else 8.0,
            Budget(max_failed=0, max_detect=30.0, max_recover=40.0),
            detect_means=f"all of {a.pool} available in the LB's /status",
            recover_means=f"all of {a.pool} answering {a.name}'s devices again",
            kind="repair",
        ),
        from_demo["final"],
    ]


async def _all_home(d: LabDrill, zone: str, within: float, window: float = 1.0) -> float | None:
    """When `zone`'s devices were answered by `zone` only for `window` s; None."""
    assert d.load is not None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        now = d.now()
        recent = [
            s for s in d.load.samples[-2000:] if s.owner == zone and s.t >= now - window - 0.5
        ]
        recent = [s for s in recent if s.t < now - 0.5]
        if recent and all(s.ok and s.zone == zone for s in recent):
            return now
        await asyncio.sleep(0.1)
    return None


# --- report -----------------------------------------------------------------------------


def print_summary(console: Console, runs: Sequence[StepRun], outages: list[dict[str, Any]]) -> None:
    """The demo's summary, titled for the lab, then the VIP outages the probes saw."""
    demo.print_summary(console, runs, title="zonegate lab: what clients saw")
    for o in outages:
        console.print(
            f"VIP {o['vip']} ({o['step']}): outage {o['outage_ms']:.0f} ms, "
            f"{o['probes_lost']} probes lost, now on {o['to']}"
        )


def report_doc(
    drill: LabDrill | None,
    lab: Lab,
    quick: bool,
    elapsed: float,
    ok: bool,
    error: str | None,
    done: Sequence[StepRun],
) -> dict[str, Any]:
    """The demo's report document, for the lab (plus `lab` and `vip_outages`)."""
    p = lab.plan
    doc: dict[str, Any] = {
        "name": "zonegate lab",
        "topology": lab.state.topology,
        "quick": quick,
        "run_dir": lab.state.run_dir,
        "duration_s": round(elapsed, 2),
        "ok": ok,
        "error": error,
        "interrupted": None,
        "rate": RATE,
        "devices": DEVICES,
        "router": None,
        "versions": [],
        "processes": {},
        "steps": [r.to_json() for r in done],
        "timeline": None,
        "lab": {
            "prefix": p.prefix,
            "subnet": f"{p.subnet}.0/24",
            "advert_s": p.advert,
            "vips": {z.name: z.vip for z in p.zones.values()},
            "nodes": {z.name: z.nodes for z in p.zones.values()},
        },
        "vip_outages": [],
    }
    if drill is None:
        return doc
    doc["processes"] = drill.pids
    doc["lab"]["t0_monotonic"] = drill.t0  # load.jsonl and prober-*.jsonl times minus this
    doc["vip_outages"] = drill.vip_outages
    if drill.load is not None:
        doc["router"] = drill.load.name
        doc["versions"] = [{"t_s": round(t, 4), "version": v} for t, v in drill.load.version_events]
        if done:
            tl = bucket_samples(drill.load.samples, list(p.zones), done[0].start, done[-1].end)
            doc["timeline"] = tl.to_json()
    return doc


# --- entry point ------------------------------------------------------------------------


def run_drill(run_dir: Path, console: Console, *, quick: bool, report: str | None) -> int:
    """`zonegate lab drill`: 0 every budget met, 1 a budget missed or the drill failed."""
    import uvloop

    require_root("drill")
    lab = Lab.load(run_dir)
    if not lab.state.ready:
        raise LabError(f"the lab at {run_dir} is not ready (its `up` did not finish)")
    dead = [n for n in lab.state.specs if not lab.alive(n)]
    if dead:
        raise LabError(f"processes of the lab are not running: {', '.join(dead)}")
    # Before any thread exists (the event loop's executor starts threads later).
    enter_namespace(lab.ns("core"))
    started = time.monotonic()
    holder: list[LabDrill] = []
    error: str | None = None

    async def main() -> None:
        drill = LabDrill(lab, [], console, quick)
        holder.append(drill)
        drill.steps = lab_steps(drill, quick)
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM unwinds like Ctrl-C: the load stops, the report is written.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await drill.run()
        finally:
            await drill.close()

    try:
        uvloop.run(main())
    except LabError as exc:
        error = str(exc)
    except (KeyboardInterrupt, asyncio.CancelledError):
        error = "interrupted"
    drill = holder[0] if holder else None
    done = [r for r in (drill.runs if drill else []) if r.end]
    elapsed = time.monotonic() - started
    if done:
        print_summary(console, done, drill.vip_outages if drill else [])
    steps = len(drill.steps) if drill else 0
    ok = not error and steps > 0 and len(done) == steps and all(r.met for r in done)
    json_path, html_path = demo.report_paths(run_dir, report)
    demo.write_reports(
        json_path, html_path, report_doc(drill, lab, quick, elapsed, ok, error, done)
    )
    console.print()
    if error:
        console.print(f"[red]zonegate lab drill failed: {escape(error)}[/red]")
    missed = [r.step.name for r in done if not r.met]
    if missed:
        console.print(f"[bold red]budget missed: {', '.join(missed)}[/bold red] ({elapsed:.1f}s)")
    elif ok:
        console.print(f"[bold green]every budget met[/bold green] ({elapsed:.1f}s)")
    console.print(f"logs:   {run_dir}")
    console.print(f"report: {json_path}")
    console.print(f"        {html_path}")
    return 0 if ok else 1
