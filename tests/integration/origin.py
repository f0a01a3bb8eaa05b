"""A keep-alive HTTP/1.1 origin that records exactly what it received (h11, threads).

    with RecordingOrigin() as origin:
        ... point a pool at origin.address, send requests through the LB ...
        [r.target for r in origin.requests]

Every connection's raw bytes are kept (`streams`), and h11 (a strict, well-kept
HTTP/1.1 implementation) reads them as the backend would: each request is recorded
with its head and decoded body, so a desynced upstream connection shows up as a wrong
body or a request that should not exist. A request is answered 200 with
`ok <method> <target>`. A request with `Upgrade` on a path under `/tunnel` gets a
101 and then an echo of whatever bytes follow (the tunnel ends at EOF); other Upgrade
requests are declined with a plain 200, as RFC 9110 §7.8 allows.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import Self

import h11


@dataclass
class Received:
    conn: int
    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    error: str = ""

    def field(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name.lower()]


@dataclass
class RecordingOrigin:
    requests: list[Received] = field(default_factory=list)
    streams: dict[int, bytearray] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            with self._lock:
                self._conns.append(conn)
                self.streams[n] = bytearray()
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _recv(self, conn: socket.socket, n: int) -> bytes:
        data = conn.recv(65536)
        with self._lock:
            self.streams[n] += data
        return data

    def _serve(self, conn: socket.socket, n: int) -> None:
        h = h11.Connection(h11.SERVER)
        current: Received | None = None
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(self._recv(conn, n))
                elif isinstance(event, h11.Request):
                    current = Received(
                        n, event.method, event.target, event.http_version, list(event.headers)
                    )
                    with self._lock:
                        self.requests.append(current)
                elif isinstance(event, h11.Data) and current is not None:
                    current.body += event.data
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    if self._answer(conn, h, current):
                        self._echo(conn, n, h.trailing_data[0])
                        return
                    current = None
                    h.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as e:
            with self._lock:
                self.errors.append(f"conn {n}: {e}")
                if current is not None:
                    current.error = str(e)
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, h: h11.Connection, req: Received) -> bool:
        """Answer one request; True when it switched to the echo tunnel."""
        upgrade = req.field(b"upgrade")
        if upgrade and req.target.startswith(b"/tunnel"):
            conn.sendall(
                h.send(
                    h11.InformationalResponse(
                        status_code=101,
                        headers=[("Upgrade", upgrade[0]), ("Connection", "Upgrade")],
                    )
                )
                or b""
            )
            return True
        body = b"ok " + req.method + b" " + req.target + b"\n"
        conn.sendall(
            (
                h.send(h11.Response(status_code=200, headers=[("Content-Length", str(len(body)))]))
                or b""
            )
            + (h.send(h11.Data(data=body)) or b"")
            + (h.send(h11.EndOfMessage()) or b"")
        )
        return False

    def _echo(self, conn: socket.socket, n: int, first: bytes) -> None:
        if first:
            conn.sendall(first)
        while data := self._recv(conn, n):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    def targets(self) -> list[bytes]:
        with self._lock:
            return [r.target for r in self.requests]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            for c in self._conns:
                c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
