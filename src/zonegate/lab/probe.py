"""A UDP echo server that says who it is, and a prober that measures outages with it.

Each node of a lab runs ``python -m zonegate.lab.probe serve --name n1 --listen
0.0.0.0:7007``: it answers every datagram ``zgp SEQ`` with ``SEQ NAME``. A client
runs ``python -m zonegate.lab.probe probe VIP:7007 --interval 10ms --duration 30s``:
it sends probe SEQ every interval (from one unconnected socket, so an answer coming
from any source address of the node counts), marks it ok when ``SEQ NAME`` comes back
within ``--timeout``, and so knows both whether the VIP answered and which node holds
it. It stops after ``--duration`` or on SIGTERM/SIGINT, whichever comes first.

Output, one JSON object per line on stdout:

* ``{"event": "ready", ...}`` once the socket is open;
* while running (with ``--events``), ``{"event": "node", "t": T, "node": N}`` when the
  answering node changes and ``{"event": "fail", "t": T}`` when probes start failing
  (``t`` is the probe's send time in the host's monotonic clock, which every process
  on the machine shares, so a test can compare it with its own ``time.monotonic()``);
* ``{"event": "summary", ...}`` at the end: `zonegate.lab.outage.Summary.to_json`
  (``longest_outage_ms``, every outage, ``per_node``, ``first_node``, ``last_node``,
  ``switches``) plus the settings.

An outage is measured to the probing interval (see `zonegate.lab.outage`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zonegate.lab.outage import Sample, summarize
from zonegate.topology.types import parse_duration, parse_hostport

__all__ = ["Prober", "main", "serve"]

MAGIC = b"zgp "
MAX_DURATION = 3600.0  # seconds: a probing run is always bounded


def serve(name: str, host: str, port: int, *, ready: bool = True) -> None:
    """Answer ``zgp SEQ`` datagrams with ``SEQ NAME`` until killed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if ready:
        print(f"probe server {name} listening on {host}:{sock.getsockname()[1]}", flush=True)
    tail = b" " + name.encode()
    while True:
        data, addr = sock.recvfrom(256)
        if data.startswith(MAGIC):
            with contextlib.suppress(OSError):
                sock.sendto(data[len(MAGIC) :] + tail, addr)


class Prober:
    """Probe (host, port) every `interval` s; a probe is ok if answered within `timeout` s."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        interval: float = 0.01,
        timeout: float = 0.1,
        events: bool = False,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be > 0")
        self.target = (host, port)
        self.interval = interval
        self.timeout = timeout
        self.events = events
        self.sent: list[float] = []
        self.answer: dict[int, str] = {}  # seq -> node, for answers in time
        self._stop = False
        self._resolved = 0  # probes [0, _resolved) are final (for the live events)
        self._last_node: str | None = None
        self._failing = False

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stop = True

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj), flush=True)

    def _advance(self, now: float) -> None:
        """Emit live events for probes that are now final, in order."""
        while self._resolved < len(self.sent):
            seq = self._resolved
            node = self.answer.get(seq)
            if node is None and now < self.sent[seq] + self.timeout:
                return
            if node is None:
                if not self._failing:
                    self._failing = True
                    self._emit({"event": "fail", "t": self.sent[seq]})
            else:
                self._failing = False
                if node != self._last_node:
                    self._last_node = node
                    self._emit({"event": "node", "t": self.sent[seq], "node": node})
            self._resolved += 1

    def run(self, duration: float) -> dict[str, Any]:
        """Probe for `duration` s (or until `stop`), then return the summary dict."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        start = time.monotonic()
        end = start + min(duration, MAX_DURATION)
        self._emit({"event": "ready", "target": f"{self.target[0]}:{self.target[1]}", "t": start})
        next_send = start
        try:
            while True:
                now = time.monotonic()
                sending = not self._stop and now < end
                if sending and now >= next_send:
                    seq = len(self.sent)
                    self.sent.append(now)
                    with contextlib.suppress(OSError):  # unreachable: a failed probe
                        sock.sendto(MAGIC + str(seq).encode(), self.target)
                    # Keep the schedule; after a stall, do not send a burst to catch up.
                    next_send = max(next_send + self.interval, now)
                elif not sending and (not self.sent or now > self.sent[-1] + self.timeout):
                    break
                wait = max(0.0, (next_send if sending else now + self.timeout) - now)
                ready, _, _ = select.select([sock], [], [], min(wait, self.interval))
                now = time.monotonic()
                if ready:
                    self._read(sock, now)
                if self.events:
                    self._advance(now)
        finally:
            sock.close()
        return self.summary()

    def _read(self, sock: socket.socket, now: float) -> None:
        while True:
            try:
                data = sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error reported on the socket
                continue
            seq_text, _, node = data.decode("ascii", "replace").partition(" ")
            if not seq_text.isdigit():
                continue
            seq = int(seq_text)
            if seq < len(self.sent) and now - self.sent[seq] <= self.timeout:
                self.answer.setdefault(seq, node or "?")

    def samples(self) -> list[Sample]:
        """Every probe sent so far, as `Sample`s."""
        return [Sample(t, i in self.answer, self.answer.get(i)) for i, t in enumerate(self.sent)]

    def summary(self) -> dict[str, Any]:
        """The summary dict printed at the end (see the module docstring)."""
        out: dict[str, Any] = {"event": "summary"}
        out.update(summarize(self.samples(), self.interval).to_json())
        out.update(
            {
                "target": f"{self.target[0]}:{self.target[1]}",
                "interval_ms": self.interval * 1000,
                "timeout_ms": self.timeout * 1000,
                "started": self.sent[0] if self.sent else None,
                "ended": self.sent[-1] if self.sent else None,
            }
        )
        return out


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a prober has written to `path` so far (a torn last line is skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zonegate.lab.probe {serve,probe} ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m zonegate.lab.probe", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="answer probes with this node's name")
    s.add_argument("--name", required=True)
    s.add_argument("--listen", default="0.0.0.0:7007", help="HOST:PORT (default %(default)s)")
    p = sub.add_parser("probe", help="probe HOST:PORT and print the outages")
    p.add_argument("target", help="HOST:PORT of the probe server (the VIP)")
    p.add_argument("--interval", default="10ms", help="between probes (default %(default)s)")
    p.add_argument("--timeout", default="100ms", help="answer deadline (default %(default)s)")
    p.add_argument("--duration", default="60s", help="stop after this (default %(default)s)")
    p.add_argument("--events", action="store_true", help="print node changes and failures")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        hp = parse_hostport(args.listen)
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.name, hp.host, hp.port)
        return 0
    hp = parse_hostport(args.target)
    prober = Prober(
        hp.host,
        hp.port,
        interval=parse_duration(args.interval),
        timeout=parse_duration(args.timeout),
        events=args.events,
    )
    signal.signal(signal.SIGTERM, prober.stop)
    signal.signal(signal.SIGINT, prober.stop)
    summary = prober.run(parse_duration(args.duration))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
