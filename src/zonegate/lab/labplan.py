"""The lab's address plan, its topology document, its nftables partition and its state
file (pure).

Theory of operation
-------------------
`zonegate lab up` builds one Ethernet segment (a bridge in a switch namespace) and one
namespace per machine of a two-zone access layer. Everything it starts is derived
from one `LabPlan`:

    plan(prefix, subnet, ...) ──> LabPlan ──> topology_doc()   the YAML every process reads
                                     │   ──> processes()       what runs where, ready when
                                     │   ──> partition_nft()   the rules that cut a zone off
                                     ▼
                                 LabState (namespaces, PIDs, URLs) <──> state.json

Addresses on the /24 (``10.77.0.0/24`` by default)::

    .2        core      zonegate control :9900, dns :53 (+ admin :9953), httpdns :8053
    .11 .12   VIPs      changping, yanqing (held through `zonegate vrrp`)
    .21 .22   lb-cp-1, lb-cp-2   zonegate lb (listener VIP:80, admin 0.0.0.0:9901),
                                 zonegate vrrp (vrid 51, admin NODE:9960), probe server
    .31 .32   lb-yq-1, lb-yq-2   the same for yanqing (vrid 52)
    .41       be-cp     backends cp-1..3 on :8101-8103
    .51       be-yq     backends yq-1..3 on :8201-8203
    .100      client    the SDK load generator and the VIP prober

The LB listeners bind the VIP with ``net.ipv4.ip_nonlocal_bind=1``, so the backup
node's LB is already listening when the VIP moves to it. The zone's `lb_admin` in the
file is ``VIP:9901`` (what the GSLB's zone health and the control plane poll: the
master's LB); each LB binds its admin on ``0.0.0.0:9901`` (``--admin``), which is also
what the local `zonegate vrrp` tracks on 127.0.0.1.

This module is pure: no I/O, no clock. The shell (`zonegate.lab.lab`) writes the
files and runs the commands.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_SUBNET",
    "LB_NODES",
    "ZONES",
    "LabPlan",
    "LabState",
    "ProcSpec",
    "ZonePlan",
    "partition_nft",
    "plan",
    "processes",
    "topology_doc",
]

DEFAULT_PREFIX = "zglab-"
"""Namespace names: ``zglab-core``, ``zglab-lb-cp-1`` ... Distinct from the netns
tests' ``zgl-<pid>-`` so neither ever cleans up the other's namespaces."""
DEFAULT_SUBNET = "10.77.0"
LISTEN_PORT = 80
LB_ADMIN_PORT = 9901
VRRP_ADMIN_PORT = 9960
PROBE_PORT = 7007
DNS_ADMIN_PORT = 9953
HTTPDNS_PORT = 8053
NFT_TABLE = "zglab_partition"
DOMAIN = "example.test"
SPLIT_HOST = f"api.{DOMAIN}"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """One zone: its VIP, its two LB nodes (name -> address), its backends."""

    name: str
    short: str
    """cp / yq: used in node, pool and backend names."""
    vip: str
    vrid: int
    nodes: dict[str, str]
    """LB node name -> its address; the first has the higher VRRP priority."""
    backend_ns: str
    backend_ip: str
    backends: dict[str, int]
    """Backend name -> port on `backend_ip`."""

    @property
    def pool(self) -> str:
        return f"web-{self.short}"

    @property
    def domain(self) -> str:
        return f"api-{self.short}.{DOMAIN}"

    @property
    def addresses(self) -> list[str]:
        """Every address of the zone's machines and its VIP."""
        return [self.vip, *self.nodes.values(), self.backend_ip]


ZONES = ("changping", "yanqing")
LB_NODES = 2


@dataclass(frozen=True, slots=True)
class LabPlan:
    """Everything `zonegate lab up` creates, derived by `plan`."""

    prefix: str
    subnet: str
    core_ip: str
    client_ip: str
    zones: dict[str, ZonePlan]
    advert: float
    """VRRP advert interval, seconds."""
    dns_port: int
    control_port: int
    priorities: tuple[int, int] = (150, 100)
    track_weight: int = 60

    @property
    def control_url(self) -> str:
        return f"http://{self.core_ip}:{self.control_port}"

    @property
    def dns(self) -> str:
        return f"{self.core_ip}:{self.dns_port}"

    @property
    def dns_admin(self) -> str:
        return f"{self.core_ip}:{DNS_ADMIN_PORT}"

    @property
    def httpdns(self) -> str:
        return f"{self.core_ip}:{HTTPDNS_PORT}"

    def ns(self, short: str) -> str:
        """The full namespace name of `short` (``core``, ``lb-cp-1``, ``sw`` ...)."""
        return self.prefix + short

    def namespaces(self) -> list[str]:
        """Short names of every namespace, switch first."""
        out = ["sw", "core", "client"]
        for z in self.zones.values():
            out += [*z.nodes, z.backend_ns]
        return out

    def addresses(self) -> dict[str, str]:
        """Short namespace name -> its address on the segment (not the switch)."""
        out = {"core": self.core_ip, "client": self.client_ip}
        for z in self.zones.values():
            out.update(z.nodes)
            out[z.backend_ns] = z.backend_ip
        return out

    def zone_of_node(self, node: str) -> ZonePlan:
        for z in self.zones.values():
            if node in z.nodes:
                return z
        raise KeyError(node)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "subnet": self.subnet,
            "advert": self.advert,
            "dns_port": self.dns_port,
            "control_port": self.control_port,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LabPlan:
        return plan(
            prefix=doc["prefix"],
            subnet=doc["subnet"],
            advert=float(doc["advert"]),
            dns_port=int(doc["dns_port"]),
            control_port=int(doc["control_port"]),
        )


def plan(
    prefix: str = DEFAULT_PREFIX,
    subnet: str = DEFAULT_SUBNET,
    *,
    advert: float = 0.1,
    dns_port: int = 53,
    control_port: int = 9900,
) -> LabPlan:
    """The address plan of the lab (see the module docstring).

    Args:
        prefix: namespace name prefix, 4-20 characters of ``[A-Za-z0-9_.-]``.
        subnet: the first three octets of the /24 (``10.77.0``).
        advert: VRRP advert interval in seconds, 0.01-40.95 in whole centiseconds.
        dns_port, control_port: ports of the DNS server and the control plane in the
            core namespace (1-65535).

    Raises:
        ValueError: any argument out of range (the message says which).
    """
    if not 4 <= len(prefix) <= 20 or not all(c.isalnum() or c in "_.-" for c in prefix):
        raise ValueError(f"bad prefix {prefix!r}: 4-20 of [A-Za-z0-9_.-]")
    try:
        net = ipaddress.IPv4Network(f"{subnet}.0/24")
    except ValueError:
        raise ValueError(f"bad subnet {subnet!r}: three octets, e.g. 10.77.0") from None
    if net.is_multicast or net.is_loopback or str(net.network_address).startswith("0."):
        raise ValueError(f"bad subnet {subnet!r}: not a unicast /24")
    cs = round(advert * 100)
    if not 1 <= cs <= 4095 or abs(cs - advert * 100) > 1e-6:
        raise ValueError(f"bad VRRP advert interval {advert}s: 10ms..40.95s, whole centiseconds")
    for what, port in (("dns port", dns_port), ("control port", control_port)):
        if not 1 <= port <= 65535:
            raise ValueError(f"bad {what} {port}: 1-65535")
    ip = f"{subnet}.{{}}".format
    zones = {
        "changping": ZonePlan(
            "changping",
            "cp",
            ip(11),
            51,
            {"lb-cp-1": ip(21), "lb-cp-2": ip(22)},
            "be-cp",
            ip(41),
            {"cp-1": 8101, "cp-2": 8102, "cp-3": 8103},
        ),
        "yanqing": ZonePlan(
            "yanqing",
            "yq",
            ip(12),
            52,
            {"lb-yq-1": ip(31), "lb-yq-2": ip(32)},
            "be-yq",
            ip(51),
            {"yq-1": 8201, "yq-2": 8202, "yq-3": 8203},
        ),
    }
    return LabPlan(prefix, subnet, ip(2), ip(100), zones, cs / 100, dns_port, control_port)


def _secs(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def topology_doc(p: LabPlan) -> dict[str, Any]:
    """The topology every process of the lab reads (zones, pools, listeners, dns,
    split, vrrp), as a plain document for YAML."""
    zones: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    listeners: dict[str, Any] = {}
    instances: dict[str, Any] = {}
    split_zones: dict[str, Any] = {}
    gslb: dict[str, Any] = {
        "api": {"preferred": ["weight"], "fallback": "all", "ttl": "5s", "changing_ttl": "1s"}
    }
    names = list(p.zones)
    for i, (name, z) in enumerate(p.zones.items()):
        other = p.zones[names[1 - i]]
        zones[name] = {"lb_admin": f"{z.vip}:{LB_ADMIN_PORT}", "vips": [z.vip], "weight": 100}
        pools[z.pool] = {
            "zone": name,
            "balance": "weighted",
            "backends": [
                {"address": f"{z.backend_ip}:{port}", "name": b} for b, port in z.backends.items()
            ],
            "health": {
                "active": {
                    "type": "http",
                    "path": "/healthz",
                    "interval": "1s",
                    "timeout": "500ms",
                    "rise": 2,
                    "fall": 3,
                },
            },
            "backup": other.pool,
            "retries": 2,
            "timeouts": {"connect": "500ms", "read": "10s"},
        }
        listeners[f"http-{z.short}"] = {
            "zone": name,
            "bind": f"{z.vip}:{LISTEN_PORT}",
            "routes": [{"pool": z.pool}],
        }
        for n, (node, addr) in enumerate(z.nodes.items()):
            instances[node] = {
                "zone": name,
                "interface": "eth0",
                "vrid": z.vrid,
                "priority": p.priorities[n],
                "advert_interval": _secs(p.advert),
                "preempt": True,
                "admin": f"{addr}:{VRRP_ADMIN_PORT}",
                "track": [
                    {
                        "type": "lb",
                        "address": f"127.0.0.1:{LB_ADMIN_PORT}",
                        "weight": p.track_weight,
                        "interval": "500ms",
                        "rise": 2,
                        "fall": 2,
                    }
                ],
            }
        half = 100 // len(p.zones)
        split_zones[name] = {
            "lower": i * half,
            "upper": 100 if i == len(p.zones) - 1 else (i + 1) * half,
            "domain": z.domain,
        }
        gslb[f"api-{z.short}"] = {
            "zones": [name],
            "preferred": ["all"],
            "fallback": "all",
            "ttl": "5s",
        }
    return {
        "zones": zones,
        "pools": pools,
        "listeners": listeners,
        "dns": {
            "listen": p.dns,
            "admin": p.dns_admin,
            "httpdns_listen": p.httpdns,
            "domains": {
                DOMAIN: {
                    "ns": ["ns1"],
                    "ttl": "5m",
                    "records": {"ns1": [{"type": "A", "value": p.core_ip}]},
                    "gslb": gslb,
                }
            },
        },
        "split": {SPLIT_HOST: {"sharding": 100, "zones": split_zones}},
        "vrrp": {"instances": instances},
    }


@dataclass(frozen=True, slots=True)
class ProcSpec:
    """One process of the lab: its name, namespace (short), argv, ready text, log."""

    name: str
    ns: str
    argv: tuple[str, ...]
    ready: str
    log: str
    group: int
    """Start order: every process of a group starts together; the next group starts
    when all of them are ready."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ns": self.ns,
            "argv": list(self.argv),
            "ready": self.ready,
            "log": self.log,
            "group": self.group,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcSpec:
        return cls(
            doc["name"], doc["ns"], tuple(doc["argv"]), doc["ready"], doc["log"], doc["group"]
        )


def processes(p: LabPlan, python: str, topology: str, run_dir: str) -> list[ProcSpec]:
    """Every long-running process of the lab, in start order.

    Groups: 0 backends, the control plane and the probe servers; 1 the LBs (they
    read the control plane first); 2 the VRRP agents (they track their LB); 3 the
    GSLB (its first zone-health round asks the zones' LBs through the VIPs).
    """
    zg = (python, "-m", "zonegate")
    control = ("--control", p.control_url)
    out: list[ProcSpec] = []

    def add(name: str, ns: str, argv: Sequence[str], ready: str, group: int) -> None:
        log = f"{run_dir}/{name.replace(' ', '-')}.log"
        out.append(ProcSpec(name, ns, tuple(argv), ready, log, group))

    for z in p.zones.values():
        for b, port in z.backends.items():
            argv = (python, "-m", "zonegate.lab.backend", "--listen", f"{z.backend_ip}:{port}")
            add(
                f"backend {b}",
                z.backend_ns,
                (*argv, "--name", b, "--zone", z.name),
                "listening on",
                0,
            )
    store = f"sqlite://{run_dir}/control.db"
    add(
        "control",
        "core",
        (*zg, "control", topology, "--store", store, "--listen", f"{p.core_ip}:{p.control_port}",
         "--tokens", f"{run_dir}/tokens.yaml"),
        "zonegate control ready",
        0,
    )  # fmt: skip
    for z in p.zones.values():
        for node in z.nodes:
            argv = (python, "-m", "zonegate.lab.probe", "serve", "--name", node)
            add(f"probe {node}", node, (*argv, "--listen", f"0.0.0.0:{PROBE_PORT}"), "listening", 0)
    for z in p.zones.values():
        for node in z.nodes:
            add(
                f"lb {node}",
                node,
                (*zg, "lb", topology, "--zone", z.name, "--admin", f"0.0.0.0:{LB_ADMIN_PORT}",
                 "--drain-timeout", "1s", *control,
                 "--control-cache", f"{run_dir}/lb-{node}.cache"),
                "zonegate lb ready",
                1,
            )  # fmt: skip
    for z in p.zones.values():
        for node in z.nodes:
            argv = (*zg, "vrrp", topology, "--instance", node)
            add(f"vrrp {node}", node, argv, "zonegate vrrp ready", 2)
    add(
        "dns",
        "core",
        (*zg, "dns", topology, *control, "--control-cache", f"{run_dir}/dns.cache"),
        "zonegate dns ready",
        3,
    )
    add(
        "httpdns",
        "core",
        (*zg, "httpdns", topology, *control, "--control-cache", f"{run_dir}/httpdns.cache"),
        "zonegate httpdns ready",
        3,
    )
    return out


def partition_nft(p: LabPlan, zone: str) -> str:
    """An ``nft -f`` script for one namespace of `zone`: drop every IPv4 packet to or
    from an address outside the zone (its machines and its VIP).

    Loopback, and multicast (VRRP adverts to 224.0.0.18 between the zone's own LB
    nodes) still pass, so the zone keeps working inside: one master, backends healthy.
    ARP is not IP and is not filtered, as on a real cut between two sites' routers.
    """
    inside = ", ".join(p.zones[zone].addresses)
    return (
        f"table inet {NFT_TABLE} {{\n"
        f"  set zone {{ type ipv4_addr; elements = {{ {inside} }} }}\n"
        "  chain in {\n"
        "    type filter hook input priority 0; policy accept;\n"
        '    iif "lo" accept\n'
        "    ip saddr @zone accept\n"
        "    ip daddr 224.0.0.0/4 accept\n"
        "    meta nfproto ipv4 drop\n"
        "  }\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        '    oif "lo" accept\n'
        "    ip daddr @zone accept\n"
        "    ip daddr 224.0.0.0/4 accept\n"
        "    meta nfproto ipv4 drop\n"
        "  }\n"
        "}\n"
    )


@dataclass
class LabState:
    """What `zonegate lab up` made, as written to ``state.json``.

    `processes` maps a process name to its spec and its current PID and start time
    (``/proc/PID/stat`` field 22, so a recycled PID is never signalled); the drill
    updates them when it restarts a process.
    """

    plan: LabPlan
    run_dir: str
    topology: str
    token_file: str
    namespaces: list[str] = field(default_factory=list)
    specs: dict[str, ProcSpec] = field(default_factory=dict)
    pids: dict[str, tuple[int, int]] = field(default_factory=dict)
    """name -> (pid, start time in clock ticks)."""
    ready: bool = False
    """`up` finished: every process ready, both VIPs held."""

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "version": STATE_VERSION,
            "plan": p.to_json(),
            "run_dir": self.run_dir,
            "topology": self.topology,
            "token_file": self.token_file,
            "ready": self.ready,
            "namespaces": list(self.namespaces),
            "processes": {
                name: {
                    **spec.to_json(),
                    "pid": self.pids.get(name, (0, 0))[0],
                    "start_ticks": self.pids.get(name, (0, 0))[1],
                }
                for name, spec in self.specs.items()
            },
            "addresses": {p.ns(k): v for k, v in p.addresses().items()},
            "vips": {z.name: z.vip for z in p.zones.values()},
            "urls": {
                "control": p.control_url,
                "dashboard": p.control_url + "/",
                "dns": p.dns,
                "dns_admin": f"http://{p.dns_admin}/status",
                "httpdns": f"http://{p.httpdns}/d?host={SPLIT_HOST}",
                **{f"lb {z.name}": f"http://{z.vip}:{LISTEN_PORT}/" for z in p.zones.values()},
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> LabState:
        """Raises ValueError for a document of another version or shape."""
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"state file version {doc.get('version')!r}, want {STATE_VERSION}")
        try:
            procs = doc["processes"]
            return cls(
                LabPlan.from_json(doc["plan"]),
                doc["run_dir"],
                doc["topology"],
                doc["token_file"],
                list(doc["namespaces"]),
                {n: ProcSpec.from_json(d) for n, d in procs.items()},
                {n: (int(d["pid"]), int(d["start_ticks"])) for n, d in procs.items() if d["pid"]},
                bool(doc.get("ready")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad state file: {exc!r}") from None
