"""`zonegate lab up|drill|down`: the two-zone access layer in network namespaces (root).

``up`` builds the lab of `zonegate.lab.labplan` (one bridge, a namespace per machine,
real addresses, the zone VIPs held through `zonegate vrrp`), starts every process
detached (own session, output in ``DIR/NAME.log``), waits until each printed its ready
line, each VIP is held by its preferred node and a client in the client namespace can
resolve both zone domains through the GSLB DNS and get an answer through each VIP;
then writes ``DIR/state.json`` (namespaces, processes with their PIDs, addresses,
URLs) and prints how to reach things. On any failure it tears down what it made and
exits non-zero with the reason.

``drill`` is `zonegate.lab.labdrill`. ``down`` kills every process of the state file
(by PID, checked against its start time so a recycled PID is never signalled), removes
the nftables tables the drill may have left, deletes every namespace with the lab's
prefix (also those of an ``up`` that failed or was killed and wrote no state), and
removes the state file; logs and reports stay in DIR. It is idempotent and exits 0
when nothing of the lab is left.

Nothing is created in the root namespace: no interface, route, sysctl or nftables
rule. The bridge lives in the switch namespace (`zonegate.lab.netns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from zonegate.errors import ConfigErrors
from zonegate.lab.labplan import (
    DEFAULT_PREFIX,
    LISTEN_PORT,
    NFT_TABLE,
    SPLIT_HOST,
    VRRP_ADMIN_PORT,
    LabPlan,
    LabState,
    plan,
    processes,
    topology_doc,
)
from zonegate.lab.netns import Netns, NetnsError, cleanup, list_namespaces
from zonegate.topology.load import load_topology

__all__ = ["DEFAULT_DIR", "Lab", "LabError", "enter_namespace", "lab_down", "lab_up", "run_lab"]

DEFAULT_DIR = Path("/run/zonegate-lab")
STATE_FILE = "state.json"
READY_TIMEOUT = 60.0
"""Seconds for one group of processes to print their ready lines (twenty Python
processes start on a small machine at once)."""
VRRP_TIMEOUT = 15.0
CHECK_TIMEOUT = "30s"
CLONE_NEWNET = 0x40000000
IFACE = "eth0"


class LabError(Exception):
    """The lab cannot be built, used or removed; the message says why."""


def require_root(what: str) -> None:
    """LabError unless running as root with ``ip`` and ``nft`` available."""
    if os.geteuid() != 0:
        raise LabError(
            f"zonegate lab {what} needs root: it creates network namespaces, veth pairs, a "
            "bridge and nftables rules (try: sudo zonegate lab ...)"
        )
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} not found: apt-get install -y {pkg}")


def enter_namespace(ns: str) -> None:
    """Move this process into network namespace `ns` (``/run/netns/NS``).

    Only the calling thread moves, so this must run before any other thread exists
    (threads started later inherit it).

    Raises:
        LabError: other threads already run, or setns(2) failed.
    """
    if threading.active_count() > 1:
        raise LabError("enter_namespace: other threads are running")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


class Lab:
    """The lab described by a state file: its processes and namespaces.

    Args:
        state: the lab's state.
        path: where the state is saved (`save`).
    """

    def __init__(self, state: LabState, path: Path) -> None:
        self.state = state
        self.path = path
        self.plan: LabPlan = state.plan
        self.net = Netns(self.plan.prefix)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._offsets: dict[str, int] = {}

    @classmethod
    def load(cls, run_dir: Path) -> Lab:
        """The lab whose state is in `run_dir`.

        Raises:
            LabError: no state file, or one that does not parse.
        """
        path = run_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab at {run_dir} (no {STATE_FILE}): run zonegate lab up") from None
        except (OSError, ValueError) as exc:
            raise LabError(f"{path}: {exc}") from None
        try:
            return cls(LabState.from_json(doc), path)
        except ValueError as exc:
            raise LabError(f"{path}: {exc}") from None

    def save(self) -> None:
        """Write the state file atomically."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=2) + "\n")
        tmp.replace(self.path)

    def ns(self, short: str) -> str:
        return self.plan.ns(short)

    # -- processes

    def pid(self, name: str) -> int | None:
        """The PID of process `name` if it is running (and is the one we started)."""
        pid, ticks = self.state.pids.get(name, (0, 0))
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            return None
        if pid and start_ticks(pid) == ticks:
            return pid
        return None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def spawn(self, name: str) -> int:
        """Start process `name` in its namespace, detached; record its PID; return it."""
        spec = self.state.specs[name]
        log = Path(spec.log)
        self._offsets[name] = log.stat().st_size if log.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.net.argv(self.ns(spec.ns), spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._procs[name] = proc
        self.state.pids[name] = (proc.pid, start_ticks(proc.pid) or 0)
        self.save()
        return proc.pid

    def output(self, name: str) -> str:
        """What the current run of `name` wrote to its log."""
        log = Path(self.state.specs[name].log)
        try:
            with open(log, "rb") as f:
                f.seek(self._offsets.get(name, 0))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _ready_or_why(self, name: str) -> str | None:
        """ "" when ready, None while waiting, else why it failed."""
        if self.state.specs[name].ready in self.output(name):
            return ""
        if not self.alive(name):
            proc = self._procs.get(name)
            code = proc.returncode if proc is not None else "?"
            tail = "\n".join(self.output(name).splitlines()[-12:])
            return f"{name} exited (status {code}) before it was ready:\n{tail}"
        return None

    def wait_ready(self, names: Sequence[str], timeout: float = READY_TIMEOUT) -> None:
        """Wait until each of `names` printed its ready line.

        Raises:
            LabError: one exited or the time ran out (with the end of its log).
        """
        deadline = time.monotonic() + timeout
        todo = list(names)
        while todo:
            for name in list(todo):
                why = self._ready_or_why(name)
                if why == "":
                    todo.remove(name)
                elif why is not None:
                    raise LabError(why)
            if todo and time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {n}:\n" + "\n".join(self.output(n).splitlines()[-8:]) for n in todo
                )
                raise LabError(f"not ready after {timeout:g}s: {', '.join(todo)}\n{tails}")
            if todo:
                time.sleep(0.05)

    async def wait_ready_async(self, name: str, within: float = READY_TIMEOUT) -> None:
        """`wait_ready` for one process, without blocking the event loop."""
        deadline = time.monotonic() + within
        while True:
            why = self._ready_or_why(name)
            if why == "":
                return
            if why is not None:
                raise LabError(why)
            if time.monotonic() > deadline:
                raise LabError(f"{name} not ready after {within:g}s")
            await asyncio.sleep(0.05)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Signal the process group of `name` (by its recorded PID); return the PID."""
        pid = self.pid(name)
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        proc = self._procs.pop(name, None)
        if proc is not None and sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        return pid

    def kill_all(self) -> list[str]:
        """SIGKILL every recorded process that is still ours; return their names."""
        killed = [n for n in self.state.pids if self.kill(n) is not None]
        return killed

    # -- network

    def holders(self, zone: str) -> list[str]:
        """LB nodes of `zone` whose eth0 has the zone's VIP now."""
        z = self.plan.zones[zone]
        out = []
        for node in z.nodes:
            with contextlib.suppress(NetnsError):
                if any(a.split("/")[0] == z.vip for a in self.net.addresses(self.ns(node), IFACE)):
                    out.append(node)
        return out

    def set_link(self, node: str, *, up: bool) -> None:
        """The node's cable: its port on the bridge up or down."""
        self.net.link(self.ns("sw"), node, up=up)

    def nft(self, short: str, script: str) -> None:
        """Load an nftables script in namespace `short`."""
        res = subprocess.run(
            self.net.argv(self.ns(short), ["nft", "-f", "-"]),
            input=script,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if res.returncode != 0:
            raise LabError(f"nft in {self.ns(short)}: {res.stderr.strip()}")

    def nft_flush(self, short: str) -> bool:
        """Delete the lab's nftables table in `short` if it is there; True if it was."""
        res = subprocess.run(
            self.net.argv(self.ns(short), ["nft", "delete", "table", "inet", NFT_TABLE]),
            capture_output=True,
            text=True,
            timeout=20,
        )
        return res.returncode == 0


# --- up -------------------------------------------------------------------------------


def _write_topology(p: LabPlan, run_dir: Path) -> Path:
    from ruamel.yaml import YAML

    path = run_dir / "topology.yaml"
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "# Written by `zonegate lab up`: the lab's two zones on "
            f"{p.subnet}.0/24 (docs/lab.md).\n"
        )
        yaml.dump(topology_doc(p), f)
    try:
        load_topology(path)
    except ConfigErrors as exc:
        raise LabError(f"the generated topology is invalid:\n{exc}") from None
    return path


def _write_tokens(run_dir: Path) -> tuple[Path, Path]:
    """An operator token for the drill (0600) and the control plane's tokens file."""
    token = secrets.token_hex(16)
    token_file = run_dir / "operator.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    digest = hashlib.sha256(token.encode()).hexdigest()
    tokens = run_dir / "tokens.yaml"
    tokens.write_text(
        json.dumps({"tokens": [{"name": "lab", "role": "operator", "sha256": digest}]}) + "\n"
    )
    return token_file, tokens


def _fresh_run_dir(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.log", "*.cache", "control.db*", "prober-*.jsonl", "load.jsonl"):
        for old in run_dir.glob(pattern):
            old.unlink()


def lab_up(
    run_dir: Path,
    console: Console,
    *,
    prefix: str = DEFAULT_PREFIX,
    subnet: str = "10.77.0",
    advert: float = 0.1,
    dns_port: int = 53,
    control_port: int = 9900,
) -> Lab:
    """Build and start the lab; on any failure tear it down and raise LabError."""
    require_root("up")
    try:
        p = plan(prefix, subnet, advert=advert, dns_port=dns_port, control_port=control_port)
    except ValueError as exc:
        raise LabError(str(exc)) from None
    if (run_dir / STATE_FILE).exists():
        raise LabError(
            f"a lab is already up ({run_dir / STATE_FILE}): run `zonegate lab down` first"
        )
    left = [ns for ns in list_namespaces() if ns.startswith(p.prefix)]
    if left:
        raise LabError(
            f"namespaces with prefix {p.prefix!r} exist ({', '.join(left)}): "
            "run `zonegate lab down` first"
        )
    started = time.monotonic()
    _fresh_run_dir(run_dir)
    topo = _write_topology(p, run_dir)
    token_file, _ = _write_tokens(run_dir)
    specs = processes(p, sys.executable, str(topo), str(run_dir))
    state = LabState(p, str(run_dir), str(topo), str(token_file))
    state.specs = {s.name: s for s in specs}
    lab = Lab(state, run_dir / STATE_FILE)
    lab.save()  # first: a `down` after a crash from here on finds the PIDs
    try:
        _build(lab, console)
        for group in sorted({s.group for s in specs}):
            names = [s.name for s in specs if s.group == group]
            for name in names:
                lab.spawn(name)
            lab.wait_ready(names)
            console.print(
                f"[dim]{time.monotonic() - started:6.1f}s[/dim]  ready: {', '.join(names)}"
            )
        holders = _wait_vips(lab)
        console.print(
            f"[dim]{time.monotonic() - started:6.1f}s[/dim]  VIPs: "
            + ", ".join(f"{z} {p.zones[z].vip} on {n}" for z, n in holders.items())
        )
        _client_check(lab)
        console.print(
            f"[dim]{time.monotonic() - started:6.1f}s[/dim]  client: both zone domains resolve "
            "through the GSLB DNS and answer through their VIP"
        )
        state.ready = True
        lab.save()
    except BaseException as exc:
        console.print("[yellow]zonegate lab up failed: tearing down what it made[/yellow]")
        _teardown(lab, p.prefix, run_dir)
        if isinstance(exc, LabError | NetnsError | OSError):
            raise LabError(str(exc)) from None
        raise
    return lab


def _build(lab: Lab, console: Console) -> None:
    p = lab.plan
    no_v6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    lb_nodes = {n for z in p.zones.values() for n in z.nodes}
    sw = lab.net.switch("sw")
    lab.state.namespaces.append(sw.ns)
    lab.save()
    for short, addr in p.addresses().items():
        sysctls = dict(no_v6)
        if short in lb_nodes:
            # The listener binds the VIP: the backup's LB listens before it holds it.
            sysctls["net.ipv4.ip_nonlocal_bind"] = "1"
        ns = lab.net.namespace(short, sysctls=sysctls)
        lab.state.namespaces.append(ns)
        lab.save()
        lab.net.attach(ns, sw, port=short, address=f"{addr}/24")
    console.print(
        f"namespaces: {len(lab.state.namespaces)} ({p.prefix}*), bridge br0 in {sw.ns}, "
        f"{p.subnet}.0/24"
    )


def _wait_vips(lab: Lab) -> dict[str, str]:
    """Wait until each VIP is held by exactly its preferred (first) node."""
    deadline = time.monotonic() + VRRP_TIMEOUT
    while True:
        got = {z: lab.holders(z) for z in lab.plan.zones}
        want = {z: [next(iter(zp.nodes))] for z, zp in lab.plan.zones.items()}
        if got == want:
            return {z: h[0] for z, h in got.items()}
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- vrrp {n}:\n" + "\n".join(lab.output(f"vrrp {n}").splitlines()[-6:])
                for zp in lab.plan.zones.values()
                for n in zp.nodes
            )
            raise LabError(f"VIP holders {got}, expected {want} after {VRRP_TIMEOUT:g}s\n{logs}")
        time.sleep(0.05)


def _client_check(lab: Lab) -> None:
    p = lab.plan
    argv = [sys.executable, "-m", "zonegate.lab.labload", "check", "--dns", p.dns]
    for z in p.zones.values():
        argv += ["--expect", f"{z.domain}={z.vip}"]
    argv += ["--timeout", CHECK_TIMEOUT]
    try:
        res = lab.net.run(lab.ns("client"), argv, check=False, timeout=60.0)
    except NetnsError as exc:
        raise LabError(f"client check: {exc}") from None
    if res.returncode != 0:
        raise LabError(f"client check failed: {res.stdout.strip()} {res.stderr.strip()[-2000:]}")


def _teardown(lab: Lab | None, prefix: str, run_dir: Path) -> tuple[list[str], list[str]]:
    """Kill the lab's processes, flush its nftables tables, delete its namespaces."""
    killed: list[str] = []
    if lab is not None:
        killed = lab.kill_all()
    present = [ns for ns in list_namespaces() if ns.startswith(prefix)]
    net = Netns(prefix)
    for ns in present:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                net.argv(ns, ["nft", "delete", "table", "inet", NFT_TABLE]),
                capture_output=True,
                timeout=20,
            )
    gone = cleanup(prefix)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / STATE_FILE).unlink()
    return killed, gone


def summary_lines(lab: Lab) -> list[str]:
    """How to reach everything (printed by `up`)."""
    p = lab.plan
    c = lab.ns("client")
    zg = "zonegate" if shutil.which("zonegate") else f"{sys.executable} -m zonegate"
    lines = [
        f"state       {lab.path}",
        f"topology    {lab.state.topology}",
        f"logs        {lab.state.run_dir}/*.log",
        f"switch      {lab.ns('sw')} (bridge br0)",
    ]
    for short, addr in p.addresses().items():
        what = {
            "core": f"control :{p.control_port}, dns :{p.dns_port} (admin :9953), httpdns :8053",
            "client": "the SDK load and the VIP prober run here during drills",
        }.get(short, "")
        if short in {n for z in p.zones.values() for n in z.nodes}:
            z = p.zone_of_node(short)
            what = f"zonegate lb (VIP {z.vip}:{LISTEN_PORT}) + zonegate vrrp vrid {z.vrid}"
        elif short.startswith("be-"):
            z = next(z for z in p.zones.values() if z.backend_ns == short)
            what = "backends " + ", ".join(f"{b} :{port}" for b, port in z.backends.items())
        lines.append(f"{lab.ns(short):<20} {addr:<12} {what}")
    for z in p.zones.values():
        held = ", ".join(lab.holders(z.name)) or "nobody"
        lines.append(f"VIP {z.vip:<12} {z.name} (vrid {z.vrid}), held by {held}")
    first = next(iter(p.zones.values()))
    node = next(iter(first.nodes))
    lines += [
        "",
        "try:",
        f"  ip netns exec {c} dig +short @{p.core_ip} -p {p.dns_port} {SPLIT_HOST}",
        f"  ip netns exec {c} dig +short @{p.core_ip} -p {p.dns_port} {first.domain}",
        f"  ip netns exec {c} curl -s -H 'Host: {first.domain}' http://{first.vip}/",
        f"  ip netns exec {c} curl -s {p.control_url}/v1/state      # dashboard: {p.control_url}/",
        f"  ip netns exec {c} curl -s http://{p.dns_admin}/status",
        f"  ip netns exec {lab.ns(node)} {zg} vrrp status --admin "
        f"{first.nodes[node]}:{VRRP_ADMIN_PORT}",
        f"  {zg} lab drill --quick{_dir_opt(lab)}",
        f"  {zg} lab down{_dir_opt(lab)}",
    ]
    return lines


def _dir_opt(lab: Lab) -> str:
    d = Path(lab.state.run_dir)
    out = "" if d == DEFAULT_DIR else f" --dir {d}"
    if lab.plan.prefix != DEFAULT_PREFIX:
        out += f" --prefix {lab.plan.prefix}"
    return out


# --- down -----------------------------------------------------------------------------


def lab_down(run_dir: Path, console: Console, *, prefix: str | None = None) -> bool:
    """Remove everything of the lab; True if nothing of it is left."""
    require_root("down")
    lab: Lab | None = None
    try:
        lab = Lab.load(run_dir)
    except LabError as exc:
        if (run_dir / STATE_FILE).exists():
            console.print(f"[yellow]{escape(str(exc))}: removing by prefix only[/yellow]")
    prefixes = {prefix or (lab.plan.prefix if lab else DEFAULT_PREFIX)}
    if lab is not None:
        prefixes.add(lab.plan.prefix)
    killed: list[str] = []
    gone: list[str] = []
    for pfx in sorted(prefixes):
        k, g = _teardown(lab, pfx, run_dir)
        killed += k
        gone += g
        lab = None
    left = [ns for ns in list_namespaces() if any(ns.startswith(p) for p in prefixes)]
    if not killed and not gone and not left:
        console.print(f"zonegate lab down: nothing to remove ({', '.join(sorted(prefixes))}*)")
    else:
        console.print(
            f"zonegate lab down: killed {len(killed)} processes, deleted {len(gone)} namespaces"
            + (f"; [red]still there: {', '.join(left)}[/red]" if left else "")
        )
    return not left


# --- entry point ----------------------------------------------------------------------


def run_lab(args: Any) -> int:
    """`zonegate lab up|drill|down` (arguments from the CLI parser)."""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)
    run_dir = Path(args.dir).resolve()
    try:
        if args.lab_command == "up":
            try:
                advert = _parse_duration(args.advert)
            except ValueError as exc:
                raise LabError(f"--advert: {exc}") from None
            lab = lab_up(
                run_dir,
                console,
                prefix=args.prefix,
                advert=advert,
                dns_port=args.dns_port,
                control_port=args.control_port,
            )
            console.print("[bold green]zonegate lab up: ready[/bold green]")
            for line in summary_lines(lab):
                console.print(escape(line))
            return 0
        if args.lab_command == "down":
            return 0 if lab_down(run_dir, console, prefix=args.prefix) else 1
        if args.lab_command == "drill":
            from zonegate.lab.labdrill import run_drill

            return run_drill(run_dir, console, quick=args.quick, report=args.report)
    except LabError as exc:
        console.print(f"[red]zonegate lab {args.lab_command}: {escape(str(exc))}[/red]")
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _parse_duration(text: str) -> float:
    from zonegate.topology.types import parse_duration

    return parse_duration(text)
