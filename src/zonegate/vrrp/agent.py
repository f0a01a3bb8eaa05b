"""`zonegate vrrp`: the VRRPv3 agent, the I/O shell around `vrrp.machine`.

Theory of operation
-------------------
One asyncio loop, one consumer: every input becomes a machine event on one queue
(a decoded advert, a tracking change, a lease answer, SIGTERM) and the loop waits for
the next one or for `machine.deadline`, whichever comes first, then executes the
actions the machine returns, in order::

    raw socket (proto 112) ─ decode ─┐
    tracked checks ─ Tracker ────────┤             ┌─ SendAdvert ─ raw socket
    lease client (quorum mode) ──────┼─► queue ─► Machine.handle ─┼─ Add/RemoveVips ─ netlink
    SIGTERM / SIGINT ────────────────┘   ▲                        ├─ SendGarp ─ AF_PACKET
                          deadline ──────┘                        └─ Notify ─ log, hook, metrics

Sockets. Adverts are received on a raw IPv4 socket of protocol 112, bound to the
interface (SO_BINDTODEVICE) and joined to 224.0.0.18 on it; a raw socket returns
the IP header, so the TTL is checked (RFC 5798 §7.1). The same socket sends, with
IP_MULTICAST_TTL and IP_TTL 255, IP_TOS 0xc0 and no multicast loopback, and with
IP_PKTINFO naming the source address (the interface's first IPv4 address, or
`source`), which also enters the checksum's pseudo-header.

VIPs left on the interface by a previous run (a crashed agent) are removed at start:
a node that is not master must not answer ARP for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import httpx

from zonegate.errors import ConfigErrors, bug
from zonegate.topology.load import load_topology
from zonegate.topology.schema import Topology, VrrpInstance, VrrpTrack
from zonegate.topology.types import HostPort
from zonegate.topology.validate import vrrp_vips
from zonegate.vrrp import packet
from zonegate.vrrp.machine import (
    AddVips,
    AdvertReceived,
    Event,
    LinkChanged,
    Machine,
    MachineConfig,
    Notify,
    PriorityChanged,
    QuorumChanged,
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
from zonegate.vrrp.track import CheckSpec, CheckState, Tracker
from zonegate.vrrp.vip import GarpSender, VipManager

log = logging.getLogger("zonegate.vrrp")

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_MULTICAST_ALL = 49  # linux/in.h: deliver only groups joined on this socket
RECV_SIZE = 2048
NOTIFY_TIMEOUT = 30.0
LINK_POLL = 0.1
"""Seconds between reads of the VRRP interface's carrier (netlink, ~0.3 ms each)."""


@dataclass
class AgentOptions:
    """What `zonegate vrrp FILE --instance NAME [...]` asks for."""

    path: str
    instance: str
    admin: HostPort | None = None
    interface: str | None = None
    priority: int | None = None


@dataclass
class Stats:
    """Counters behind /status and /metrics."""

    transitions: Counter[str] = field(default_factory=Counter)
    """By new state name."""
    adverts_sent: int = 0
    adverts_received: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    """Report kinds: split_brain, yield, reannounce, handoff, quorum."""
    send_errors: int = 0
    notify_failures: int = 0


def machine_config(
    topo: Topology, inst: VrrpInstance, primary: IPv4Address, priority: int | None = None
) -> MachineConfig:
    """The machine's configuration for an instance of a validated topology."""
    return MachineConfig(
        vrid=inst.vrid,
        priority=priority if priority is not None else inst.priority,
        advert_interval_cs=round(inst.advert_interval * 100),
        vips=tuple(vrrp_vips(topo, inst)),
        primary_ip=primary,
        preempt=inst.preempt,
        preempt_delay=inst.preempt_delay,
        startup_delay=inst.startup_delay,
        garp_count=inst.garp.count,
        garp_spacing=inst.garp.spacing,
        garp_repeat=inst.garp.repeat,
        garp_refresh=inst.garp.refresh,
        graceful_handoff=inst.graceful_handoff,
        quorum=inst.quorum is not None,
    )


def _track_name(track: VrrpTrack, address: HostPort | None) -> str:
    if track.type == "lb":
        return f"lb {address}"
    if track.type == "interface":
        return f"interface {track.name}"
    return f"command {track.command}"


class Agent:
    """One VRRP instance on this node; `run()` until stopped."""

    def __init__(self, topo: Topology, name: str, inst: VrrpInstance, opts: AgentOptions) -> None:
        self.topo = topo
        self.name = name
        self.inst = inst
        self.opts = opts
        self.ifname = opts.interface or inst.interface
        self.admin = opts.admin or inst.admin
        self.stats = Stats()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.vipmgr = VipManager(self.ifname)
        self.machine: Machine = None  # type: ignore[assignment]  # set in run()
        self.tracker: Tracker = None  # type: ignore[assignment]
        self.garp: GarpSender = None  # type: ignore[assignment]
        self.sock: socket.socket = None  # type: ignore[assignment]
        self.primary = IPv4Address("0.0.0.0")
        self.vips_held = False
        self.lease_held: bool | None = None
        self.started = time.monotonic()
        self.track_addresses: list[HostPort | None] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._notify_q: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._stopping = 0
        self._lease_valid_until: float | None = None
        self._http: httpx.AsyncClient | None = None

    # --- setup -------------------------------------------------------------------

    async def run(self) -> int:
        try:
            await self.vipmgr.open()
        except OSError as e:
            print(f"zonegate vrrp: interface {self.ifname}: {e}", file=sys.stderr)
            return 1
        try:
            return await self._run()
        finally:
            await self.vipmgr.close()

    async def _run(self) -> int:
        inst = self.inst
        if inst.source is not None:
            self.primary = IPv4Address(inst.source)
        else:
            vips = {v.ip for v in vrrp_vips(self.topo, inst)}
            own = [a for a in await self.vipmgr.addresses() if a.ip not in vips]
            if not own:
                print(
                    f"zonegate vrrp: {self.ifname} has no IPv4 address to send adverts from",
                    file=sys.stderr,
                )
                return 1
            self.primary = own[0].ip
        cfg = machine_config(self.topo, inst, self.primary, self.opts.priority)
        now = time.monotonic()
        self.machine = Machine(cfg, now)
        self.track_addresses = [
            (t.address or self.topo.zones[inst.zone].lb_admin) if t.type == "lb" else None
            for t in inst.track
        ]
        self.tracker = Tracker(
            cfg.priority,
            [
                CheckSpec(_track_name(t, a), t.weight, t.rise, t.fall)
                for t, a in zip(inst.track, self.track_addresses, strict=True)
            ],
        )
        # A previous run that crashed left its VIPs: a backup must not answer ARP.
        await self.vipmgr.remove(cfg.vips)
        self.garp = GarpSender(self.ifname, self.vipmgr.mac)
        self.sock = self._open_socket()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._on_readable)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        admin_server = None
        if self.admin is not None:
            from zonegate.vrrp.admin import start_admin

            try:
                admin_server = await start_admin(self, self.admin.host, self.admin.port)
            except OSError as e:
                print(f"zonegate vrrp: admin endpoint {self.admin}: {e}", file=sys.stderr)
                loop.remove_reader(self.sock.fileno())
                self.garp.close()
                self.sock.close()
                return 1
        for i, track in enumerate(inst.track):
            self._tasks.append(loop.create_task(self._track_loop(i, track)))
        if inst.quorum is not None:
            self._tasks.append(loop.create_task(self._lease_loop()))
        self._tasks.append(loop.create_task(self._notify_worker()))
        link = VipManager(self.ifname)  # its own netlink socket: polled while VIPs change
        try:
            await link.open()
            link_up = await link.link_up()
            if not link_up:
                await self._execute(self.machine.handle(LinkChanged(False), time.monotonic()))
            self._tasks.append(loop.create_task(self._link_loop(link, link_up)))
            await self._execute(self.machine.handle(Startup(), time.monotonic()))
            print(
                f"zonegate vrrp ready: instance {self.name} vrid {cfg.vrid} on {self.ifname}, "
                f"state {self.machine.state.value}, priority {cfg.priority}, "
                f"source {self.primary}, admin {self.admin or 'off'}",
                flush=True,
            )
            await self._loop()
        finally:
            loop.remove_reader(self.sock.fileno())
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.vips_held:  # a crash in the loop: never leave VIPs behind
                with contextlib.suppress(OSError):
                    await self.vipmgr.remove(cfg.vips)
                self.vips_held = False
            if self.inst.quorum is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._release_lease(), self.inst.quorum.lease_ttl)
                if self._http is not None:
                    await self._http.aclose()
            if admin_server is not None:
                admin_server.close()
            await link.close()
            self.garp.close()
            self.sock.close()
        log.info("vrrp %s: stopped", self.name)
        return 0

    def _open_socket(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, packet.VRRP_PROTOCOL)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        mreqn = struct.pack("4s4si", packet.VRRP_GROUP.packed, self.primary.packed, 0)
        mreqn_if = struct.pack("4s4si", packet.VRRP_GROUP.packed, b"\0" * 4, self.vipmgr.index)
        if not self.inst.unicast_peers:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn_if)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, packet.VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, packet.VRRP_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, packet.TOS_INTERNETWORK_CONTROL)
        s.setblocking(False)
        return s

    # --- the loop ----------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            deadline = self.machine.deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event: Event = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                event = TimerFired()
            now = time.monotonic()
            if isinstance(event, TimerFired) and (deadline is None or now < deadline):
                continue
            try:
                actions = self.machine.handle(event, now)
            except ValueError as e:
                bug(f"vrrp machine refused {event!r}: {e}", e)
                continue
            if await self._execute(actions):
                return

    async def _execute(self, actions: list[Any]) -> bool:
        """Run the actions in order; True when the machine has stopped."""
        for action in actions:
            if isinstance(action, SendAdvert):
                self._send(action)
            elif isinstance(action, AddVips):
                try:
                    await self.vipmgr.add(action.vips)
                    self.vips_held = True
                except OSError as e:
                    log.error("vrrp %s: %s", self.name, e)
            elif isinstance(action, RemoveVips):
                self.garp.cancel()
                try:
                    await self.vipmgr.remove(action.vips)
                except OSError as e:
                    log.error("vrrp %s: %s", self.name, e)
                self.vips_held = False
            elif isinstance(action, SendGarp):
                self.garp.burst(action.addresses, action.count, action.spacing)
            elif isinstance(action, Notify):
                self._transition(action)
            elif isinstance(action, Report):
                self.stats.events[action.kind] += 1
                level = logging.WARNING if action.kind == "split_brain" else logging.INFO
                log.log(level, "vrrp %s: %s: %s", self.name, action.kind, action.detail)
            elif isinstance(action, Stopped):
                return True
        return False

    def _transition(self, n: Notify) -> None:
        self.stats.transitions[n.new.value] += 1
        why = f" ({n.reason})" if n.reason else ""
        log.info("vrrp %s: state %s -> %s%s", self.name, n.old.value, n.new.value, why)
        if self.inst.notify:
            self._notify_q.put_nowait((n.new.value, n.reason))

    def _send(self, action: SendAdvert) -> None:
        targets = (
            [action.to]
            if action.to is not None
            else [IPv4Address(p) for p in self.inst.unicast_peers] or [packet.VRRP_GROUP]
        )
        pktinfo = struct.pack("I4s4s", self.vipmgr.index, self.primary.packed, b"\0" * 4)
        for dst in targets:
            data = packet.encode(action.advert, self.primary, dst)
            try:
                self.sock.sendmsg(
                    [data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, (str(dst), 0)
                )
                self.stats.adverts_sent += 1
            except OSError as e:
                self.stats.send_errors += 1
                # A link that is down fails every interval: the first and every 100th.
                if self.stats.send_errors % 100 == 1:
                    log.warning(
                        "vrrp %s: advert to %s failed (%d failures): %s",
                        self.name,
                        dst,
                        self.stats.send_errors,
                        e,
                    )

    def _on_readable(self) -> None:
        for _ in range(64):  # bounded: let the loop run between batches
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("vrrp %s: receive failed: %s", self.name, e)
                return
            try:
                got = packet.decode(data, vrid=self.inst.vrid)
            except packet.VrrpDecodeError as e:
                self.stats.drops[e.reason.value] += 1
                if e.reason is not packet.DropReason.WRONG_VRID:
                    log.debug("vrrp %s: dropped: %s", self.name, e)
                continue
            if got.src == self.primary:
                self.stats.drops[packet.DropReason.OWN.value] += 1
                continue
            self.stats.adverts_received += 1
            self.queue.put_nowait(AdvertReceived(got.src, got.advert))

    def _on_signal(self) -> None:
        self._stopping += 1
        log.info("vrrp %s: stopping (signal %d)", self.name, self._stopping)
        self.queue.put_nowait(Shutdown())

    # --- tracking ----------------------------------------------------------------

    async def _link_loop(self, link: VipManager, up: bool) -> None:
        """Carrier of the VRRP interface -> `LinkChanged` (FAULT while it is down)."""
        while True:
            await asyncio.sleep(LINK_POLL)
            try:
                now_up = await link.link_up()
            except Exception as e:  # gone (OSError), netlink error: as good as no carrier
                log.warning("vrrp %s: reading link %s: %s", self.name, self.ifname, e)
                now_up = False
            if now_up != up:
                up = now_up
                log.log(
                    logging.INFO if up else logging.WARNING,
                    "vrrp %s: link %s %s",
                    self.name,
                    self.ifname,
                    "up" if up else "down (no carrier)",
                )
                self.queue.put_nowait(LinkChanged(up))

    async def _track_loop(self, index: int, track: VrrpTrack) -> None:
        interval = track.interval
        timeout = track.timeout or interval
        address = self.track_addresses[index]
        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                started = time.monotonic()
                try:
                    ok, reason = await asyncio.wait_for(
                        self._probe(track, address, client), timeout
                    )
                except TimeoutError:
                    ok, reason = False, f"no answer in {timeout:g}s"
                self._record(index, ok, reason)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _probe(
        self, track: VrrpTrack, address: HostPort | None, client: httpx.AsyncClient
    ) -> tuple[bool, str]:
        if track.type == "lb":
            try:
                r = await client.get(f"http://{address}/healthz")
            except httpx.HTTPError as e:
                return False, f"{type(e).__name__}: {e}"
            return r.status_code == 200, f"/healthz answered {r.status_code}"
        if track.type == "interface":
            assert track.name is not None
            mgr = VipManager(track.name)
            try:
                await mgr.open()
                up = await mgr.link_up()
            except OSError as e:
                return False, str(e)
            finally:
                await mgr.close()
            return up, "link up" if up else "link down"
        assert track.command is not None
        proc = await asyncio.create_subprocess_shell(
            track.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        return code == 0, f"exit status {code}"

    def _record(self, index: int, ok: bool, reason: str) -> None:
        before = self.tracker.priority
        change = self.tracker.record(index, ok, reason)
        if change is not None:
            level = logging.WARNING if change.new is CheckState.DOWN else logging.INFO
            log.log(
                level,
                "vrrp %s: track %s: %s -> %s (%s)",
                self.name,
                change.name,
                change.old.value,
                change.new.value,
                reason,
            )
        after = self.tracker.priority
        if after != before:
            log.info("vrrp %s: effective priority %d -> %d", self.name, before, after)
            self.queue.put_nowait(PriorityChanged(after))

    # --- notify hook -------------------------------------------------------------

    async def _notify_worker(self) -> None:
        while True:
            state, _reason = await self._notify_q.get()
            if not self.inst.notify:
                continue
            argv = [*shlex.split(self.inst.notify), state, self.name]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
                code = await asyncio.wait_for(proc.wait(), NOTIFY_TIMEOUT)
            except (OSError, TimeoutError) as e:
                self.stats.notify_failures += 1
                log.error("vrrp %s: notify %s failed: %s", self.name, argv, e)
                continue
            if code != 0:
                self.stats.notify_failures += 1
                log.warning("vrrp %s: notify %s exited with %d", self.name, argv, code)

    # --- quorum ------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Quorum mode: acquire and renew the lease while the machine wants it.

        The lease counts as valid until `ttl` after the *send* time of the last granted
        request (the control plane counts from when it received it, which is later), so
        this node gives the VIPs up before the control plane could grant the lease to
        another. Renewals go every ttl/3; attempts for a lease not yet held every
        min(ttl/10, 0.2 s). It is released (DELETE) when the machine no longer wants it,
        after the VIPs are removed.
        """
        q = self.inst.quorum
        assert q is not None
        ttl = q.lease_ttl
        loop = asyncio.get_running_loop()
        wanted_since: float | None = None
        expiry: asyncio.TimerHandle | None = None

        def report(held: bool) -> None:
            if self.lease_held is not held:
                self.lease_held = held
                self.queue.put_nowait(QuorumChanged(held))

        def rearm(at: float) -> None:
            nonlocal expiry
            if expiry is not None:
                expiry.cancel()
            expiry = loop.call_at(at, report, False)

        while True:
            if not self.machine.wants_lease:
                if expiry is not None:
                    expiry.cancel()
                    expiry = None
                if self._lease_valid_until is not None and not self.vips_held:
                    await self._release_lease()
                wanted_since = None
                self.lease_held = None
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            if wanted_since is None:
                wanted_since = now
                rearm(now + ttl)
            valid = self._lease_valid_until
            renew = valid is not None and now < valid
            status, holder = await self._acquire(ttl, renew)
            if status == 200 and self.machine.wants_lease:
                self._lease_valid_until = now + ttl  # from the send time: conservative
                rearm(now + ttl)
                report(True)
            elif status == 409:
                log.info("vrrp %s: lease %s held by %s", self.name, self._lease_name, holder)
                if self._lease_valid_until is not None:  # we had it; now another has
                    self._lease_valid_until = None
                    report(False)
            held = self._lease_valid_until is not None
            await asyncio.sleep(ttl / 3 if held else min(ttl / 10, 0.2))

    @property
    def _lease_name(self) -> str:
        q = self.inst.quorum
        assert q is not None
        return q.lease or f"vrrp-{self.inst.zone}-{self.inst.vrid}"

    def _lease_client(self) -> httpx.AsyncClient:
        q = self.inst.quorum
        assert q is not None
        if self._http is None:
            token = os.environ.get(q.token_env) if q.token_env else None
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._http = httpx.AsyncClient(timeout=q.lease_ttl / 3, headers=headers)
        return self._http

    async def _acquire(self, ttl: float, renew: bool) -> tuple[int, str]:
        q = self.inst.quorum
        assert q is not None
        body = {"holder": self.name, "ttl": ttl, "renew": renew}
        for url in q.control:
            try:
                r = await self._lease_client().post(
                    f"{url.rstrip('/')}/v1/leases/{self._lease_name}", json=body
                )
            except httpx.HTTPError as e:
                log.debug("vrrp %s: lease request to %s failed: %s", self.name, url, e)
                continue
            if r.status_code in (200, 409):
                try:
                    holder = str(r.json().get("holder"))
                except ValueError:
                    holder = "?"
                return r.status_code, holder
            log.warning(
                "vrrp %s: lease request to %s: %d %s", self.name, url, r.status_code, r.text
            )
        return 0, ""

    async def _release_lease(self) -> None:
        """Give the lease back (best effort), so the next master need not wait for it."""
        q = self.inst.quorum
        if q is None or self._lease_valid_until is None:
            return
        self._lease_valid_until = None
        for url in q.control:
            try:
                r = await self._lease_client().delete(
                    f"{url.rstrip('/')}/v1/leases/{self._lease_name}",
                    params={"holder": self.name},
                )
            except httpx.HTTPError:
                continue
            if r.status_code < 500:
                return

    # --- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The /status document."""
        m = self.machine
        cfg = m.cfg
        return {
            "instance": self.name,
            "zone": self.inst.zone,
            "state": m.state.value,
            "role": m.role.value,
            "priority": cfg.priority,
            "effective_priority": m.priority,
            "advert_priority": m.advert_priority,
            "vrid": cfg.vrid,
            "interface": self.ifname,
            "primary_ip": str(self.primary),
            "vips": [str(v) for v in cfg.vips],
            "vips_held": self.vips_held,
            "master_ip": str(m.master_ip) if m.master_ip is not None else None,
            "advert_interval": cfg.advert_interval_cs / 100,
            "master_adver_interval": m.master_adver_int_cs / 100,
            "master_down_interval": m.master_down_interval,
            "preempt": cfg.preempt,
            "unicast_peers": list(self.inst.unicast_peers),
            "transitions": sum(self.stats.transitions.values()),
            "transitions_to": dict(self.stats.transitions),
            "adverts_sent": self.stats.adverts_sent,
            "adverts_received": self.stats.adverts_received,
            "send_errors": self.stats.send_errors,
            "notify_failures": self.stats.notify_failures,
            "drops": {r.value: self.stats.drops.get(r.value, 0) for r in packet.DropReason},
            "events": {
                k: self.stats.events.get(k, 0)
                for k in ("split_brain", "yield", "reannounce", "handoff", "quorum")
            },
            "garp_sent": self.garp.sent if self.garp is not None else 0,
            "garp_failed": self.garp.failed if self.garp is not None else 0,
            "track": self.tracker.status(),
            "quorum": None
            if self.inst.quorum is None
            else {"lease": m.quorum.value if m.role is State.MASTER else None},
            "uptime": time.monotonic() - self.started,
        }


def _quiet_httpx() -> None:
    # One INFO line per lease renewal or probe would drown the transitions.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_vrrp(opts: AgentOptions) -> int:
    """Run one VRRP instance in the foreground until SIGTERM; the exit status."""
    _quiet_httpx()
    try:
        topo = load_topology(opts.path)
    except ConfigErrors as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    inst = topo.vrrp.instances.get(opts.instance)
    if inst is None:
        names = ", ".join(sorted(topo.vrrp.instances)) or "none defined"
        print(
            f"zonegate vrrp: no instance {opts.instance!r} in {opts.path} "
            f"(vrrp.instances: {names})",
            file=sys.stderr,
        )
        return 2
    if opts.priority is not None and not 1 <= opts.priority <= 255:
        print("zonegate vrrp: --priority must be 1-255", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("zonegate vrrp: needs root (raw sockets, addresses)", file=sys.stderr)
        return 1
    return asyncio.run(Agent(topo, opts.instance, inst, opts).run())


def run_status(admin: HostPort) -> int:
    """`zonegate vrrp status --admin HOST:PORT`: print the state; 0 if it answered."""
    _quiet_httpx()
    try:
        r = httpx.get(f"http://{admin}/status", timeout=5.0)
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as e:
        print(f"zonegate vrrp status: {admin}: {e}", file=sys.stderr)
        return 1
    print(
        f"{doc['instance']}: {doc['state']} (priority {doc['priority']}, effective "
        f"{doc['effective_priority']}), vrid {doc['vrid']} on {doc['interface']}, "
        f"master {doc.get('master_ip') or 'unknown'}, VIPs {' '.join(doc['vips'])}"
        f"{' (held)' if doc.get('vips_held') else ''}"
    )
    print(
        f"transitions {doc['transitions']}, adverts sent {doc['adverts_sent']} received "
        f"{doc['adverts_received']}, drops "
        + (", ".join(f"{k} {v}" for k, v in doc["drops"].items() if v) or "none")
    )
    return 0


__all__ = ["Agent", "AgentOptions", "Stats", "machine_config", "run_status", "run_vrrp"]
