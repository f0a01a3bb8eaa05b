"""The lab's client: SDK load that resolves through the GSLB DNS, run in the client
namespace (``python -m zonegate.lab.labload``).

Why a separate process: a socket belongs to the network namespace of the thread that
made it, and the lab's client is a machine of its own (``zglab-client``, 10.77.0.100)
whose requests must leave from there, resolve through the lab's `zonegate dns` and be
cut off by a partition like a real client's. The drill (`zonegate lab drill`) starts
this module with ``ip netns exec`` and reads what it prints; it stays free to talk to
the control plane and the LBs as the operator, and the load does not share its event
loop or its CPU.

``run``: `zonegate.lab.load.LoadGen` over `zonegate.lab.sdkload.SdkRouter`: `devices`
SDK devices, one ``zonegate.client.AsyncTransport`` each, reading the split map from
the control plane; zone domains (``api-cp.example.test``) are resolved by the SDK's
`resolver=` hook, a dnspython query to the GSLB DNS (no HTTPDNS, no hosts override),
so the address each request goes to is the zone VIP the GSLB hands out. Timeouts:
connect 0.5 s, read 2 s (a blackholed zone costs half a second before the SDK retries
on the other zone).

Output, JSON lines on stdout (times are the host's monotonic clock, which every
process on the machine shares, whatever its namespace):

* ``{"event": "ready", "t": T, "router": NAME, "version": V}`` once every device has
  its config;
* ``{"s": [t, zone, backend, status, latency, error, home, version, failover, served]}`` per
  request (the fields of `zonegate.lab.drills.Sample`), in batches every 100 ms;
* ``{"event": "version", "t": T, "version": V}`` when every device follows a version;
* ``{"event": "end", "t": T, "requests": N}`` after SIGTERM or ``--duration``.

``check``: resolve each ``--expect DOMAIN=IP`` through the DNS and ``GET
http://IP/`` with that Host, until all answer or ``--timeout``; prints one JSON line
and exits 0 if all answered (what `zonegate lab up` waits for last).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence

import httpx

from zonegate.lab.load import LoadGen
from zonegate.lab.sdkload import SdkRouter
from zonegate.topology.types import parse_duration, parse_hostport

__all__ = ["gslb_resolver", "main"]

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 2.0
FLUSH_EVERY = 0.1


def gslb_resolver(server: str, port: int, timeout: float = 1.0) -> Callable[[str], list[str]]:
    """A resolver hook for the SDK: A records of `host` from the DNS at server:port.

    Raises OSError when the server does not answer (what the SDK expects of a hook).
    """
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    def resolve(host: str) -> list[str]:
        query = dns.message.make_query(host, dns.rdatatype.A)
        try:
            answer = dns.query.udp(query, server, port=port, timeout=timeout)
        except dns.exception.DNSException as exc:
            raise OSError(f"dns {server}:{port}: {exc!r}") from None
        return [r.address for rrset in answer.answer for r in rrset if r.rdtype == 1]

    return resolve


def _emit(lines: list[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


async def run_load(args: argparse.Namespace) -> int:
    dns = parse_hostport(args.dns)
    vips = dict(v.split("=", 1) for v in args.vip)
    ip_zone = {ip: zone for zone, ip in vips.items()}
    router = SdkRouter(
        args.control,
        args.domain,
        lambda url: ip_zone.get(url.host),
        time.monotonic,
        args.devices,
        resolver=gslb_resolver(dns.host, dns.port),
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        name="resolving through the GSLB DNS",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + parse_duration(args.duration)
    await router.start()
    load = LoadGen(router, router.devices, args.rate, time.monotonic, args.workers)
    ready = {"event": "ready", "t": time.monotonic(), "router": router.name}
    _emit([json.dumps({**ready, "version": router.version})])
    load.start()
    sent = versions = 0
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            lines = [json.dumps({"s": list(s)}) for s in load.samples[sent:]]
            sent += len(lines)
            for t, v in router.version_events[versions:]:
                lines.append(json.dumps({"event": "version", "t": t, "version": v}))
                versions += 1
            _emit(lines)
    finally:
        await load.stop()
        _emit([json.dumps({"s": list(s)}) for s in load.samples[sent:]])
        await router.close()
    _emit([json.dumps({"event": "end", "t": time.monotonic(), "requests": len(load.samples)})])
    return 0


async def _check_one(domain: str, want: str, resolve: Callable[[str], list[str]]) -> str | None:
    """None if `domain` resolves to `want` and GET http://want/ answers 200; else why."""
    try:
        got = await asyncio.to_thread(resolve, domain)
    except OSError as exc:
        return f"{domain}: {exc}"
    if want not in got:
        return f"{domain} resolves to {got}, not {want}"
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            resp = await client.get(f"http://{want}/", headers={"Host": domain})
    except httpx.HTTPError as exc:
        return f"GET http://{want}/ (Host {domain}): {exc!r}"
    if resp.status_code != 200:
        return f"GET http://{want}/ (Host {domain}): {resp.status_code}"
    return None


async def run_check(args: argparse.Namespace) -> int:
    dns = parse_hostport(args.dns)
    resolve = gslb_resolver(dns.host, dns.port)
    expect = dict(v.split("=", 1) for v in args.expect)
    deadline = time.monotonic() + parse_duration(args.timeout)
    while True:
        results = await asyncio.gather(*(_check_one(d, ip, resolve) for d, ip in expect.items()))
        problems = [r for r in results if r is not None]
        if not problems or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    print(json.dumps({"ok": not problems, "problems": problems}), flush=True)
    return 0 if not problems else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zonegate.lab.labload {run,check} ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m zonegate.lab.labload", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="SDK load; samples as JSON lines")
    r.add_argument("--control", action="append", required=True, metavar="URL")
    r.add_argument("--dns", required=True, help="HOST:PORT of the GSLB DNS")
    r.add_argument("--domain", required=True, help="the split domain to request")
    r.add_argument("--vip", action="append", default=[], metavar="ZONE=IP")
    r.add_argument("--rate", type=float, default=200.0, help="requests/s (default 200)")
    r.add_argument("--devices", type=int, default=40, help="SDK devices (default 40)")
    r.add_argument("--workers", type=int, default=16)
    r.add_argument("--duration", default="10m", help="stop after this (default 10m)")
    c = sub.add_parser("check", help="each zone domain resolves to its VIP, which answers")
    c.add_argument("--dns", required=True, help="HOST:PORT of the GSLB DNS")
    c.add_argument("--expect", action="append", default=[], metavar="DOMAIN=IP")
    c.add_argument("--timeout", default="20s")
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(run_load(args) if args.cmd == "run" else run_check(args))


if __name__ == "__main__":
    sys.exit(main())
