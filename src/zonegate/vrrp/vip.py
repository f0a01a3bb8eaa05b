"""VIPs on an interface (pyroute2 netlink) and gratuitous ARP (AF_PACKET). I/O shell.

`VipManager` adds and removes the virtual addresses and reads the link: its index,
MAC, first IPv4 address and whether it is up. `GarpSender` sends gratuitous ARP
requests (RFC 5227 §3 "ARP Announcement": sender and target protocol address both
the VIP, broadcast) from the interface's real MAC, as keepalived does without a
virtual MAC. A burst runs as a task and is cancelled when the VIPs are removed, so a
node that just yielded never sends an ARP after the new master's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger("zonegate.vrrp")

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
ETH_MIN_FRAME = 60  # without FCS; veth does not pad short frames, switches expect 60
IFF_UP = 0x1
IFF_RUNNING = 0x40


class VipError(OSError):
    """Adding or removing a VIP failed."""


async def _collect(result: Any) -> list[Any]:
    """pyroute2 answers a list (get) or an async iterator (dump): a list either way."""
    if hasattr(result, "__aiter__"):
        return [msg async for msg in result]
    return list(result)


class VipManager:
    """The VIPs of one interface, over one netlink socket.

    Args:
        ifname: The interface (in the current network namespace).
    """

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.index = 0
        self.mac = b"\0" * 6
        self._ipr: Any = None

    async def open(self) -> None:
        """Open netlink and resolve the interface; OSError if it does not exist."""
        self._ipr = AsyncIPRoute()
        link = await self._link()
        if link is None:
            raise OSError(errno.ENODEV, f"no interface {self.ifname!r}")
        self.index = int(link["index"])
        mac = link.get("address") or "00:00:00:00:00:00"
        self.mac = bytes.fromhex(mac.replace(":", ""))

    async def close(self) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    async def _link(self) -> Any:
        try:
            links = await _collect(await self._ipr.link("get", ifname=self.ifname))
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise
        return links[0] if links else None

    async def link_up(self) -> bool:
        """Whether the link is administratively up and has carrier (IFF_RUNNING)."""
        link = await self._link()
        return link is not None and (int(link["flags"]) & (IFF_UP | IFF_RUNNING)) == (
            IFF_UP | IFF_RUNNING
        )

    async def addresses(self) -> list[IPv4Interface]:
        """The interface's IPv4 addresses, primary first."""
        out = []
        for msg in await _collect(await self._ipr.addr("dump", family=socket.AF_INET)):
            if int(msg["index"]) == self.index:
                out.append(IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}"))
        return out

    async def add(self, vips: Iterable[IPv4Interface]) -> None:
        """Add each VIP (an address already present is fine)."""
        for vip in vips:
            try:
                await self._ipr.addr(
                    "add", index=self.index, address=str(vip.ip), prefixlen=vip.network.prefixlen
                )
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise VipError(e.code, f"cannot add {vip} to {self.ifname}: {e}") from e

    async def remove(self, vips: Iterable[IPv4Interface]) -> None:
        """Remove each VIP (an address already gone is fine)."""
        for vip in vips:
            try:
                await self._ipr.addr(
                    "del", index=self.index, address=str(vip.ip), prefixlen=vip.network.prefixlen
                )
            except NetlinkError as e:
                if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    raise VipError(e.code, f"cannot remove {vip} from {self.ifname}: {e}") from e


def garp_frame(mac: bytes, ip: IPv4Address) -> bytes:
    """An Ethernet broadcast ARP request announcing that `ip` is at `mac` (RFC 5227 §3)."""
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac + ip.packed + b"\0" * 6 + ip.packed
    frame = eth + arp
    return frame + b"\0" * (ETH_MIN_FRAME - len(frame))


class GarpSender:
    """Gratuitous ARP bursts on one interface; `sent` counts frames, `failed` failures.

    The AF_PACKET socket is send-only: bound to the interface with protocol 0, so the
    kernel registers no receive hook for it. A socket bound to ETH_P_ARP would get a
    copy of every ARP frame on the link (never read), and, worse, the kernel marks it
    with a pending ENETDOWN when the interface goes down; that stale error is returned
    by the next send, after the link is back up, so the first ARP of the next takeover
    was lost (issue 12 item 16). Without a hook the kernel never marks the socket, so a
    send fails only while the link is really down.
    """

    def __init__(self, ifname: str, mac: bytes) -> None:
        self.ifname = ifname
        self.mac = mac
        self.sent = 0
        self.failed = 0
        # Protocol 0: send only (see the class docstring). Each frame is sent to
        # (ifname, ETH_P_ARP), so the kernel still knows its protocol (skb->protocol).
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._sock.bind((ifname, 0))
        self._sock.setblocking(False)
        self._bursts: set[asyncio.Task[None]] = set()

    def burst(self, addresses: tuple[IPv4Address, ...], count: int, spacing: float) -> None:
        """Send `count` ARPs per address, `spacing` s apart: the first at once, rest in a task."""
        self._send(addresses)
        if count > 1:
            task = asyncio.get_running_loop().create_task(self._rest(addresses, count - 1, spacing))
            self._bursts.add(task)
            task.add_done_callback(self._bursts.discard)

    async def _rest(self, addresses: tuple[IPv4Address, ...], count: int, spacing: float) -> None:
        for _ in range(count):
            await asyncio.sleep(spacing)
            self._send(addresses)

    def _send(self, addresses: tuple[IPv4Address, ...]) -> None:
        for ip in addresses:
            try:
                self._sock.sendto(garp_frame(self.mac, ip), (self.ifname, ETH_P_ARP))
                self.sent += 1
            except OSError as e:  # link down, queue full: the next burst retries
                self.failed += 1
                log.warning("gratuitous ARP for %s on %s failed: %s", ip, self.ifname, e)

    def cancel(self) -> None:
        """Stop every burst in progress."""
        for task in list(self._bursts):
            task.cancel()

    def close(self) -> None:
        self.cancel()
        self._sock.close()


__all__ = ["GarpSender", "VipError", "VipManager", "garp_frame"]
