"""A VRRP lab in network namespaces: nodes on a bridge, a client probing the VIP (root).

    with VrrpLab(workdir) as lab:                 # switch + n1, n2, n3 + client "c"
        nodes = lab.start_vrrp("zonegate", VrrpSettings(advert=0.1))   # or "keepalived"
        lab.wait_holders({"n1"})                  # n1 (priority 150) holds the VIP
        with lab.probe(duration=20) as run:       # the client probes the VIP every 10 ms
            nodes["n1"].crash()
            run.wait_node("n2")
        print(run.summary["longest_outage_ms"])

Layout (IPv4 ``10.99.0.0/24`` by default): a "switch" namespace holds bridge ``br0``;
each node namespace (``n1``, ``n2``, ``n3``) has ``eth0`` = ``.1``, ``.2``, ``.3`` and
runs a probe server (`zonegate.lab.probe`) on ``0.0.0.0:7007`` answering with its name;
the client namespace ``c`` has ``.100``; the VIP is ``.200``. Priorities are 150, 100,
50 in node order. IPv6 is off everywhere (no DAD/MLD noise on the wire).

The VRRP daemons are either ``zonegate vrrp`` (one topology file with one `vrrp`
instance per node, named like the node) or keepalived 2.2 (one config per node, VRRPv3,
run in the foreground with its own pid files, so any number coexist in different
namespaces). Both are driven the same way: `crash` (SIGKILL; the node's service and
addresses go with it, as when the machine dies), `stop` (SIGTERM, a graceful stop) and
`start`. Faults on the wire: `link` (the switch-side port down: a pulled cable), `nic`
(the node's own eth0 down, as an operator's ``ip link set eth0 down``) and
`block_vrrp` (nftables drops IP protocol 112 both ways in a node: a split brain).

Who is master is read from the kernel, the same way for both daemons: the nodes whose
``eth0`` holds the VIP (`holders`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zonegate.lab.netns import Netns, NetnsError, Switch
from zonegate.lab.probe import read_events

__all__ = [
    "KeepalivedNode",
    "ProbeRun",
    "VrrpLab",
    "VrrpNode",
    "VrrpSettings",
    "ZonegateNode",
    "keepalived_conf",
    "keepalived_version",
    "zonegate_topology",
]

Impl = Literal["zonegate", "keepalived"]
PROBE_PORT = 7007
IFACE = "eth0"
NFT_TABLE = "zgsplit"
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class VrrpSettings:
    """VRRP settings shared by every node of a group (the same for both daemons)."""

    vrid: int = 51
    advert: float = 1.0  # seconds
    preempt: bool = True
    graceful_handoff: bool = False  # zonegate only: keep the VIP until a backup is master
    garp_refresh: float = 10.0  # zonegate only: periodic GARP while master (0 = off)
    garp_count: int = 5  # zonegate only: gratuitous ARPs per burst


# --- config writers -------------------------------------------------------------------


def _fmt_secs(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def keepalived_conf(
    name: str,
    *,
    priority: int,
    vip: str,
    settings: VrrpSettings,
    interface: str = IFACE,
    unicast_src: str | None = None,
    unicast_peers: Sequence[str] = (),
) -> str:
    """A keepalived.conf for one node: VRRPv3, one instance, no mail, no scripts.

    Every node starts as BACKUP (``nopreempt`` requires it, and the priority alone then
    picks the master, as in zonegate). GARP settings are keepalived's defaults.
    """
    lines = [
        "global_defs {",
        f"    router_id {name}",
        "    vrrp_version 3",
        "    enable_script_security",
        "    script_user root",
        "    max_auto_priority -1",
        "}",
        "vrrp_instance VI_1 {",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {settings.vrid}",
        f"    priority {priority}",
        f"    advert_int {settings.advert:g}",
    ]
    if not settings.preempt:
        lines.append("    nopreempt")
    if unicast_peers:
        if unicast_src:
            lines.append(f"    unicast_src_ip {unicast_src}")
        lines.append("    unicast_peer {")
        lines.extend(f"        {p}" for p in unicast_peers)
        lines.append("    }")
    lines += ["    virtual_ipaddress {", f"        {vip} dev {interface}", "    }", "}", ""]
    return "\n".join(lines)


def zonegate_topology(
    priorities: dict[str, int],
    *,
    vip: str,
    settings: VrrpSettings,
    interface: str = IFACE,
    admin_port: int = 9960,
) -> dict[str, Any]:
    """A topology document with one zone and one `vrrp` instance per node (name -> prio)."""
    instances = {
        name: {
            "zone": "lab",
            "interface": interface,
            "vrid": settings.vrid,
            "priority": prio,
            "advert_interval": _fmt_secs(settings.advert),
            "preempt": settings.preempt,
            "vips": [vip],
            "graceful_handoff": settings.graceful_handoff,
            "garp": {
                "count": settings.garp_count,
                "spacing": "50ms",
                "refresh": _fmt_secs(settings.garp_refresh) if settings.garp_refresh else "0s",
            },
            "admin": f"127.0.0.1:{admin_port}",
        }
        for name, prio in priorities.items()
    }
    return {
        "zones": {"lab": {"vips": [vip.split("/")[0]]}},
        "vrrp": {"instances": instances},
    }


def keepalived_binary() -> str | None:
    """The keepalived executable, or None."""
    return shutil.which("keepalived") or (
        "/usr/sbin/keepalived" if Path("/usr/sbin/keepalived").exists() else None
    )


def keepalived_version() -> str | None:
    """``Keepalived v2.2.7 (...)`` or None when it is not installed."""
    exe = keepalived_binary()
    if exe is None:
        return None
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    text = (res.stdout + res.stderr).strip().splitlines()
    return text[0] if text else None


# --- daemons --------------------------------------------------------------------------


class VrrpNode:
    """One VRRP daemon in one node namespace (see `KeepalivedNode`, `ZonegateNode`)."""

    impl: Impl

    def __init__(self, lab: VrrpLab, name: str, priority: int, settings: VrrpSettings) -> None:
        self.lab = lab
        self.name = name
        self.ns = lab.ns(name)
        self.priority = priority
        self.settings = settings
        self.log = lab.workdir / f"{self.impl}-{name}.log"
        self.proc: subprocess.Popen[Any] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready_text(self) -> str | None:
        """A substring of the log that means "up"; None: no wait."""
        return None

    def start(self, timeout: float = START_TIMEOUT) -> VrrpNode:
        """Start the daemon (again), with the node's service and link up."""
        if self.alive:
            raise RuntimeError(f"{self.name}: already running")
        self.lab.ensure_service(self.name)
        with self.log.open("a") as f:
            f.write(f"--- start {time.monotonic():.3f}\n")
        # The log is appended to: a restart must not take a previous run's ready line.
        offset = len(self.output())
        self.proc = self.lab.net.popen(self.ns, self.argv(), log=self.log)
        text = self.ready_text()
        if text is not None:
            deadline = time.monotonic() + timeout
            while text not in self.output()[offset:]:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.lab.net.kill(self.proc)
                    raise RuntimeError(
                        f"{self.impl} {self.name} did not start (no {text!r}):\n"
                        f"{self.output()[-3000:]}"
                    )
                time.sleep(0.02)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def crash(self) -> None:
        """SIGKILL the daemon's process group; the node's service and VIP go with it."""
        if self.proc is not None:
            self.lab.net.kill(self.proc, signal.SIGKILL)
            self.proc.wait(5.0)
        self.lab.node_down(self.name)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful stop); SIGKILL after `timeout` s. Returns the exit status."""
        if self.proc is None:
            return None
        return self.lab.net.stop(self.proc, timeout)


class KeepalivedNode(VrrpNode):
    """keepalived -n -l -D -G -P with a per-node config and pid files."""

    impl: Impl = "keepalived"

    def argv(self) -> list[str]:
        conf = self.lab.workdir / f"keepalived-{self.name}.conf"
        conf.write_text(
            keepalived_conf(
                self.name, priority=self.priority, vip=self.lab.vip_cidr, settings=self.settings
            )
        )
        exe = keepalived_binary()
        if exe is None:
            raise RuntimeError("keepalived is not installed (apt-get install keepalived)")
        w = self.lab.workdir
        for stale in w.glob(f"keepalived-{self.name}*.pid"):
            stale.unlink()  # a pid file of a previous run whose PID was reused
        return [
            exe, "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
            "--use-file", str(conf),
            "--pid", str(w / f"keepalived-{self.name}.pid"),
            "--vrrp_pid", str(w / f"keepalived-{self.name}-vrrp.pid"),
        ]  # fmt: skip

    def ready_text(self) -> str | None:
        return "Entering BACKUP STATE"


class ZonegateNode(VrrpNode):
    """``python -m zonegate vrrp FILE --instance NAME`` (the topology file of the lab)."""

    impl: Impl = "zonegate"

    def argv(self) -> list[str]:
        path = self.lab.zonegate_file(self.settings)
        return [sys.executable, "-m", "zonegate", "vrrp", str(path), "--instance", self.name]

    def ready_text(self) -> str | None:
        return "zonegate vrrp ready"


IMPLS: dict[str, type[VrrpNode]] = {"keepalived": KeepalivedNode, "zonegate": ZonegateNode}


# --- the prober -----------------------------------------------------------------------


@dataclass
class ProbeRun:
    """A prober running in the client namespace; `summary` is set by `finish`."""

    lab: VrrpLab
    proc: subprocess.Popen[Any]
    out: Path
    started: float
    summary: dict[str, Any] = field(default_factory=dict)

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines printed so far."""
        return read_events(self.out)

    def current_node(self) -> str | None:
        """The node that answered last (None while failing or before any answer)."""
        node = None
        for ev in self.events():
            if ev.get("event") == "node":
                node = ev["node"]
            elif ev.get("event") == "fail":
                node = None
        return node

    def wait_node(self, node: str, timeout: float = 15.0, *, stable: float = 0.3) -> float:
        """Wait until `node` answers and keeps answering for `stable` s; return when.

        Raises:
            TimeoutError: not within `timeout` s (the message has the events).
        """
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.current_node() == node:
                if since is None:
                    since = time.monotonic()
                elif time.monotonic() - since >= stable:
                    return since
            else:
                since = None
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise TimeoutError(f"{node} not answering the VIP after {timeout}s: {self.events()}")

    def finish(self, timeout: float = 10.0) -> dict[str, Any]:
        """Stop the prober (SIGTERM) and return its summary."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.lab.net.kill(self.proc)
            self.proc.wait()
        for ev in reversed(self.events()):
            if ev.get("event") == "summary":
                self.summary = ev
                break
        else:
            raise RuntimeError(f"prober printed no summary: {self.out.read_text()[-2000:]}")
        return self.summary

    def outage_after(self, t: float) -> float:
        """Longest outage in seconds among those ending after monotonic time `t`."""
        return max(
            (o["ms"] / 1000 for o in self.summary.get("outages", []) if o["end"] >= t),
            default=0.0,
        )


# --- the lab --------------------------------------------------------------------------


class VrrpLab:
    """Namespaces, bridge, probe servers; VRRP daemons started by `start_vrrp`."""

    def __init__(
        self,
        workdir: Path,
        nodes: Sequence[str] = ("n1", "n2", "n3"),
        *,
        subnet: str = "10.99.0",
        prefix: str | None = None,
        priorities: Sequence[int] = (150, 100, 50),
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nodes = list(nodes)
        self.subnet = subnet
        self.priorities = dict(zip(self.nodes, priorities, strict=False))
        self.vip = f"{subnet}.200"
        self.vip_cidr = f"{self.vip}/24"
        self.client_ip = f"{subnet}.100"
        self.net = Netns(prefix)
        self.switch: Switch | None = None
        self.services: dict[str, subprocess.Popen[Any]] = {}
        self.daemons: dict[str, VrrpNode] = {}
        self._probes: list[ProbeRun] = []
        self._zg_file: Path | None = None

    # -- building

    def build(self) -> VrrpLab:
        """Create the namespaces and links, start the probe servers."""
        try:
            sysctls = {
                "net.ipv6.conf.all.disable_ipv6": "1",
                "net.ipv6.conf.default.disable_ipv6": "1",
            }
            self.switch = self.net.switch("sw")
            for i, name in enumerate(self.nodes, start=1):
                ns = self.net.namespace(name, sysctls=sysctls)
                self.net.attach(ns, self.switch, address=f"{self.subnet}.{i}/24")
            client = self.net.namespace("c", sysctls=sysctls)
            self.net.attach(client, self.switch, address=f"{self.client_ip}/24")
            for name in self.nodes:
                self.ensure_service(name)
        except BaseException:
            self.close()
            raise
        return self

    def ns(self, name: str) -> str:
        """The namespace name of node (or "c", "sw") `name`."""
        return self.net.name(name)

    def node_ip(self, name: str) -> str:
        return f"{self.subnet}.{self.nodes.index(name) + 1}"

    def mac(self, name: str) -> str:
        """The MAC of the node's eth0."""
        return self.net.mac(self.ns(name), IFACE)

    def ensure_service(self, name: str) -> None:
        """(Re)start the node's probe server if it is not running; bring its link up."""
        proc = self.services.get(name)
        if proc is not None and proc.poll() is None:
            return
        argv = [
            sys.executable, "-m", "zonegate.lab.probe", "serve",
            "--name", name, "--listen", f"0.0.0.0:{PROBE_PORT}",
        ]  # fmt: skip
        self.services[name] = self.net.popen(
            self.ns(name), argv, log=self.workdir / f"probe-{name}.log"
        )
        self.link(name, up=True)

    def node_down(self, name: str) -> None:
        """The machine died: its probe server is killed and the VIP leaves its interface."""
        proc = self.services.pop(name, None)
        if proc is not None:
            self.net.kill(proc)
            proc.wait(5.0)
        with contextlib.suppress(NetnsError):
            self.net.run(self.ns(name), ["ip", "addr", "del", self.vip_cidr, "dev", IFACE])

    # -- VRRP daemons

    def zonegate_file(self, settings: VrrpSettings) -> Path:
        """Write (or rewrite) the zonegate topology of the lab; return its path."""
        path = self.workdir / "vrrp-lab.json"
        doc = zonegate_topology(self.priorities, vip=self.vip_cidr, settings=settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)
        return path

    def start_vrrp(
        self,
        impl: Impl | dict[str, Impl],
        settings: VrrpSettings,
        nodes: Iterable[str] | None = None,
        *,
        priorities: dict[str, int] | None = None,
    ) -> dict[str, VrrpNode]:
        """Start a daemon on each of `nodes` (default all); `impl` may differ per node."""
        if priorities:
            self.priorities.update(priorities)
        started: dict[str, VrrpNode] = {}
        for name in nodes if nodes is not None else self.nodes:
            kind = impl[name] if isinstance(impl, dict) else impl
            node = IMPLS[kind](self, name, self.priorities[name], settings)
            self.daemons[name] = node
            started[name] = node.start()
        return started

    # -- state

    def holders(self) -> set[str]:
        """Nodes whose eth0 has the VIP now."""
        out = set()
        for name in self.nodes:
            with contextlib.suppress(NetnsError):
                if self.vip_cidr in self.net.addresses(self.ns(name), IFACE):
                    out.add(name)
        return out

    def wait_holders(
        self, expected: set[str] | Callable[[set[str]], bool], timeout: float = 10.0
    ) -> set[str]:
        """Wait until `holders()` equals `expected` (or satisfies it); return it.

        Raises:
            TimeoutError: not within `timeout` s, with the daemons' last log lines.
        """
        deadline = time.monotonic() + timeout
        while True:
            got = self.holders()
            if expected(got) if callable(expected) else got == expected:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"VIP holders {sorted(got)}, expected {expected} after {timeout}s\n"
                    + self.describe()
                )
            time.sleep(0.02)

    def describe(self, tail: int = 1500) -> str:
        """The last lines of every daemon's log, for failure messages."""
        return "\n".join(
            f"--- {d.impl} {name} ({'running' if d.alive else 'stopped'}) ---\n{d.output()[-tail:]}"
            for name, d in self.daemons.items()
        )

    def client_neighbour_mac(self) -> str | None:
        """The MAC the client's neighbour table has for the VIP (None if no entry)."""
        for entry in self.net.neighbours(self.ns("c")):
            if entry.get("dst") == self.vip:
                mac = entry.get("lladdr")
                return str(mac).lower() if mac else None
        return None

    # -- faults

    def link(self, name: str, *, up: bool) -> None:
        """The node's cable: its port on the bridge up or down (the node sees carrier)."""
        assert self.switch is not None
        self.net.link(self.switch.ns, self.switch.ports[self.ns(name)], up=up)

    def nic(self, name: str, *, up: bool) -> None:
        """The node's own eth0 administratively down or up (``ip link set eth0 down`` on
        the box): unlike `link`, the kernel marks the node's sockets bound to it."""
        self.net.link(self.ns(name), IFACE, up=up)

    def block_vrrp(self, name: str) -> None:
        """Drop IP protocol 112 (VRRP) in and out of the node, with nftables."""
        ns = self.ns(name)
        self.net.run(ns, ["nft", "add", "table", "inet", NFT_TABLE])
        for chain, hook in (("vin", "input"), ("vout", "output")):
            self.net.run(
                ns,
                ["nft", "add", "chain", "inet", NFT_TABLE, chain,
                 f"{{ type filter hook {hook} priority 0 ; }}"],
            )  # fmt: skip
            self.net.run(
                ns,
                ["nft", "add", "rule", "inet", NFT_TABLE, chain, "ip", "protocol", "vrrp", "drop"],
            )

    def unblock_vrrp(self, name: str) -> None:
        """Remove the rules of `block_vrrp`."""
        self.net.run(self.ns(name), ["nft", "delete", "table", "inet", NFT_TABLE], check=False)

    # -- probing

    @contextlib.contextmanager
    def probe(self, duration: float = 30.0, *, timeout: str = "100ms") -> Iterator[ProbeRun]:
        """Run the prober in the client namespace for at most `duration` s.

        It is ready (answered once, by anyone, or printed its ready line) when the
        block starts; `finish` is called when the block ends.
        """
        out = self.workdir / f"prober-{len(self._probes)}.jsonl"
        argv = [
            sys.executable, "-m", "zonegate.lab.probe", "probe",
            f"{self.vip}:{PROBE_PORT}", "--events", "--interval", "10ms",
            "--timeout", timeout, "--duration", f"{duration:g}s",
        ]  # fmt: skip
        f = out.open("wb")
        try:
            proc = self.net.popen(self.ns("c"), argv, stdout=f)
        finally:
            f.close()
        run = ProbeRun(self, proc, out, time.monotonic())
        self._probes.append(run)
        deadline = time.monotonic() + START_TIMEOUT
        while not any(e.get("event") == "ready" for e in run.events()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prober did not start: {out.read_text()[-2000:]}")
            time.sleep(0.02)
        try:
            yield run
        finally:
            if not run.summary:
                with contextlib.suppress(RuntimeError):
                    run.finish()

    # -- graceful handoffs

    def handoff_series(
        self, count: int, *, advert: float = 1.0, probe_timeout: str = "100ms"
    ) -> dict[str, Any]:
        """`count` graceful handoffs between n1 and n2 under a prober; the figures.

        zonegate on n1 and n2, `graceful_handoff` on and preempt off (a restarted node
        stays backup): the master is stopped with SIGTERM (it keeps the VIP until the
        backup announces itself), the backup must hold the VIP and answer the client,
        the stopped node is started again as the new backup, and the roles swap. One
        prober (a UDP probe every 10 ms, `probe_timeout` each) runs through the whole
        series. Every wait is bounded; a handoff that does not complete raises.

        Returns:
            ``handoffs``, ``probes``, ``failed`` (probes never answered in time),
            ``longest_outage_ms``, ``outages`` (the prober's list) and ``seconds``.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        settings = VrrpSettings(advert=advert, preempt=False, graceful_handoff=True)
        bound = 3 * advert + 5.0
        daemons = self.start_vrrp("zonegate", settings, ("n1", "n2"))
        self.wait_holders({"n1"}, timeout=bound)
        master, backup = "n1", "n2"
        t0 = time.monotonic()
        with self.probe(duration=count * (4 * advert + 10) + 30, timeout=probe_timeout) as run:
            run.wait_node(master, timeout=bound)
            for _ in range(count):
                # The backup must have heard the master before it can take over on its
                # priority-0 advert (a node just started waits Master_Down_Interval).
                time.sleep(2 * advert)
                status = daemons[master].stop(timeout=bound)
                if status != 0:
                    raise RuntimeError(f"{master} exited {status}\n{self.describe()}")
                self.wait_holders({backup}, timeout=bound)
                run.wait_node(backup, timeout=bound, stable=0.2)
                daemons[master].start()
                master, backup = backup, master
            summary = run.finish()
        return {
            "handoffs": count,
            "advert": advert,
            "probe_timeout": probe_timeout,
            "probes": summary["probes"],
            "failed": summary["failed"],
            "longest_outage_ms": summary["longest_outage_ms"],
            "outages": summary["outages"],
            "seconds": round(time.monotonic() - t0, 1),
        }

    # -- teardown

    def close(self) -> None:
        """Stop everything and delete the namespaces (idempotent)."""
        self.net.close()
        self.services.clear()

    def __enter__(self) -> VrrpLab:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()
