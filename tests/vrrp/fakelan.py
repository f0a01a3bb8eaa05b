"""FakeLan: N VRRP machines on a simulated link with a fake clock (h11's ConnectionPair, for N).

Adverts are delivered `latency` seconds after they are sent to every other running
node whose link to the sender is not cut. Gratuitous ARPs are sent one packet per
`spacing`, and a neighbour (a router or client on the link) caches the MAC of the last
node whose ARP for the VIP it heard; a burst in progress stops when its node removes
the VIP, as the agent's does. `cut` drops VRRP between nodes only (a firewall or a
multicast problem: the usual cause of split brain), so the neighbour hears everyone.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from zonegate.vrrp.machine import (
    Action,
    AddVips,
    AdvertReceived,
    Event,
    LinkChanged,
    Machine,
    MachineConfig,
    Notify,
    RemoveVips,
    Report,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    State,
    Stopped,
    TimerFired,
)
from zonegate.vrrp.packet import Advert

VIP = IPv4Interface("10.9.0.100/24")


@dataclass
class Node:
    ip: IPv4Address
    machine: Machine
    running: bool = False
    holds_vip: bool = False
    stopped: bool = False
    transitions: list[tuple[float, State, State]] = field(default_factory=list)
    reports: list[tuple[float, str, str]] = field(default_factory=list)
    sent: list[tuple[float, Advert]] = field(default_factory=list)
    garp_epoch: int = 0

    @property
    def state(self) -> State:
        return self.machine.state


class FakeLan:
    def __init__(self, *, latency: float = 0.001, start: float = 100.0) -> None:
        self.now = start
        self.latency = latency
        self.nodes: dict[IPv4Address, Node] = {}
        self.cut: set[frozenset[IPv4Address]] = set()
        self.no_carrier: set[IPv4Address] = set()
        """Nodes whose own link is down: they send and hear nothing, neither does ARP."""
        self._queue: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self.arp_owner: IPv4Address | None = None
        """The node the neighbour sends VIP traffic to (last ARP heard)."""
        self.vip_timeline: list[tuple[float, int, IPv4Address | None]] = []
        """(time, number of VIP holders, arp owner) after each change."""
        self._reach: list[tuple[float, bool]] = []

    # --- setup ---------------------------------------------------------------------

    def add(self, ip: str, priority: int = 100, **kw: Any) -> Node:
        addr = IPv4Address(ip)
        fields: dict[str, Any] = {
            "vrid": 51,
            "priority": priority,
            "advert_interval_cs": 100,
            "vips": (VIP,),
            "primary_ip": addr,
        }
        fields.update(kw)
        node = Node(addr, Machine(MachineConfig(**fields), self.now))
        self.nodes[addr] = node
        return node

    def node(self, ip: str) -> Node:
        return self.nodes[IPv4Address(ip)]

    # --- driving -------------------------------------------------------------------

    def start(self, ip: str) -> None:
        node = self.node(ip)
        node.running = True
        node.stopped = False
        self._deliver(node, Startup())

    def stop(self, ip: str) -> None:
        """Graceful stop (SIGTERM)."""
        self._deliver(self.node(ip), Shutdown())

    def crash(self, ip: str) -> None:
        """SIGKILL: the node vanishes; its VIP goes with it (the host is gone)."""
        node = self.node(ip)
        node.running = False
        node.garp_epoch += 1
        if node.holds_vip:
            node.holds_vip = False
            self._record()

    def partition(self, a: str, b: str) -> None:
        self.cut.add(frozenset((IPv4Address(a), IPv4Address(b))))

    def heal(self) -> None:
        self.cut.clear()

    def link(self, ip: str, up: bool) -> None:
        """The node's own link loses (or regains) its carrier; its machine is told."""
        node = self.node(ip)
        if up:
            self.no_carrier.discard(node.ip)
        else:
            self.no_carrier.add(node.ip)
            node.garp_epoch += 1  # a burst in progress goes nowhere
        self._deliver(node, LinkChanged(up))

    def event(self, ip: str, event: Event) -> list[Action]:
        return self._deliver(self.node(ip), event)

    def run(self, seconds: float) -> None:
        until = self.now + seconds
        while True:
            nxt = self._next_time()
            if nxt is None or nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            self._step()

    # --- views ---------------------------------------------------------------------

    def masters(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running and n.state is State.MASTER]

    def holders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.running and n.holds_vip]

    def vip_reachable(self) -> bool:
        """Whether the neighbour's ARP entry points at a node that holds the VIP (and
        has a link)."""
        owner = self.nodes.get(self.arp_owner) if self.arp_owner else None
        return (
            owner is not None
            and owner.running
            and owner.holds_vip
            and owner.ip not in self.no_carrier
        )

    def outages(self, since: float) -> float:
        """Seconds since `since` during which the VIP was not reachable."""
        total = 0.0
        down_at: float | None = None
        reachable = True
        for t, ok in self._reach:
            if t < since:
                reachable = ok
                continue
            if not ok and reachable:
                down_at = t
            elif ok and not reachable and down_at is not None:
                total += t - down_at
            reachable = ok
        if not reachable:
            total += self.now - (down_at if down_at is not None else since)
        return total

    def blackouts(self, since: float) -> list[float]:
        """Times since `since` at which the VIP became unreachable, even for an instant
        (`outages` sums durations, so a gap of zero length does not show there)."""
        out = []
        reachable = True
        for t, ok in self._reach:
            if t >= since and reachable and not ok:
                out.append(t)
            reachable = ok
        return out

    # --- internals -----------------------------------------------------------------

    def _record(self) -> None:
        holders = len(self.holders())
        self.vip_timeline.append((self.now, holders, self.arp_owner))
        self._reach.append((self.now, self.vip_reachable()))

    def _next_time(self) -> float | None:
        times = [t for t, _, _ in self._queue[:1]]
        for node in self.nodes.values():
            if node.running and node.machine.deadline is not None:
                times.append(node.machine.deadline)
        return min(times) if times else None

    def _step(self) -> None:
        while self._queue and self._queue[0][0] <= self.now:
            _, _, item = heapq.heappop(self._queue)
            kind = item[0]
            if kind == "advert":
                _, dst, src, advert = item
                node = self.nodes[dst]
                if (
                    node.running
                    and frozenset((src, dst)) not in self.cut
                    and not {src, dst} & self.no_carrier
                ):
                    self._deliver(node, AdvertReceived(src, advert))
            elif kind == "garp":
                _, src, epoch = item
                node = self.nodes[src]
                if node.running and node.garp_epoch == epoch and src not in self.no_carrier:
                    self.arp_owner = src
                    self._record()
        for node in list(self.nodes.values()):
            deadline = node.machine.deadline
            if node.running and deadline is not None and deadline <= self.now:
                self._deliver(node, TimerFired())

    def _push(self, at: float, item: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), item))

    def _deliver(self, node: Node, event: Event) -> list[Action]:
        actions = node.machine.handle(event, self.now)
        for action in actions:
            if isinstance(action, SendAdvert):
                node.sent.append((self.now, action.advert))
                for other in self.nodes.values():
                    if other is not node and action.to in (None, other.ip):
                        self._push(
                            self.now + self.latency, ("advert", other.ip, node.ip, action.advert)
                        )
            elif isinstance(action, AddVips):
                node.holds_vip = True
                self._record()
            elif isinstance(action, RemoveVips):
                node.holds_vip = False
                node.garp_epoch += 1  # the agent cancels a burst in progress
                self._record()
            elif isinstance(action, SendGarp):
                for i in range(action.count):
                    self._push(
                        self.now + self.latency + i * action.spacing,
                        ("garp", node.ip, node.garp_epoch),
                    )
            elif isinstance(action, Notify):
                node.transitions.append((self.now, action.old, action.new))
            elif isinstance(action, Report):
                node.reports.append((self.now, action.kind, action.detail))
            elif isinstance(action, Stopped):
                node.stopped = True
                node.running = False
        return actions
