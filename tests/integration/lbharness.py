"""Run a real `zonegate lb` for integration tests: topology file, process, admin, load.

    backends = backend_factory.many(3, zone="z1")
    topo = Topo().pool("web", backends, zone="z1").listener("web")
    with start_lb(tmp_path, topo, zone="z1") as lb:
        status, headers, body = lb.get("/")
        load = Load(lb.port, clients=8).start()
        ...
        print(load.stop().summary())

The topology is written as JSON (a subset of YAML 1.2) with free ports for the
listener and the admin endpoint; when one was taken by the time the LB binds it,
`start_lb` picks fresh ones and starts it again (`retry_addr_in_use`). `Lb.reload(topo)` rewrites the file and sends
SIGHUP. `Load` is a bounded generator: threads with keep-alive `http.client`
connections, stopped by a request count or a time limit (whichever comes first),
counting successes, failures by kind, and the backend that served each request
(`X-Backend`).
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

from tests.peers.processes import (
    BackendProc,
    Proc,
    free_port,
    retry_addr_in_use,
    start_process,
)

LB_READY = r"zonegate lb ready"
DEFAULT_ZONE = "z1"
BACKUP_ZONE = "z2"


# --- topology ------------------------------------------------------------------------


def backend_entry(b: BackendProc | str, **kw: Any) -> dict[str, Any]:
    """One `pools.P.backends[]` entry for a backend process (named like the process)."""
    if isinstance(b, str):
        return {"address": b, **kw}
    return {"address": b.address, "name": b.name, **kw}


def fast_health(**active: Any) -> dict[str, Any]:
    """Health settings tuned for tests: http check of /healthz every 200 ms."""
    check = {
        "type": "http",
        "path": "/healthz",
        "interval": "200ms",
        "timeout": "300ms",
        "rise": 2,
        "fall": 2,
    }
    check.update(active)
    return {
        "active": check,
        "passive": {"consecutive_failures": 3, "base_ejection": "3s", "max_ejected_percent": 50},
    }


class Topo:
    """A topology document built step by step (a plain dict underneath: `.doc`)."""

    def __init__(self, zones: Iterable[str] = (DEFAULT_ZONE, BACKUP_ZONE)) -> None:
        self.doc: dict[str, Any] = {
            "zones": {z: {} for z in zones},
            "pools": {},
            "listeners": {},
        }
        self.picked: set[str] = set()
        """Listeners whose port `listener` picked (`repick_ports` may change it)."""

    def copy(self) -> Topo:
        t = Topo(())
        t.doc = copy.deepcopy(self.doc)
        t.picked = set(self.picked)
        return t

    def repick_ports(self) -> None:
        """Give every listener whose port was picked here a fresh free port."""
        for name in self.picked:
            self.doc["listeners"][name]["bind"] = f"127.0.0.1:{free_port()}"

    def pool(
        self,
        name: str,
        backends: Sequence[BackendProc | str | dict[str, Any]],
        *,
        zone: str = DEFAULT_ZONE,
        health: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Self:
        """Add a pool; `health` defaults to `fast_health()`; kw are other Pool fields."""
        entries = [b if isinstance(b, dict) else backend_entry(b) for b in backends]
        self.doc["pools"][name] = {
            "zone": zone,
            "backends": entries,
            "health": fast_health() if health is None else health,
            **kw,
        }
        return self

    def listener(
        self,
        pool: str | None = None,
        *,
        name: str = "http",
        zone: str = DEFAULT_ZONE,
        routes: list[dict[str, Any]] | None = None,
        port: int | None = None,
        **kw: Any,
    ) -> Self:
        """Add an HTTP listener on a free port, routing everything to `pool` by default."""
        routes = routes if routes is not None else [{"pool": pool}]
        if port is None:
            self.picked.add(name)
        else:
            self.picked.discard(name)
        self.doc["listeners"][name] = {
            "zone": zone,
            "bind": f"127.0.0.1:{port or free_port()}",
            "routes": routes,
            **kw,
        }
        return self

    def pool_doc(self, name: str) -> dict[str, Any]:
        return self.doc["pools"][name]

    def listener_doc(self, name: str = "http") -> dict[str, Any]:
        return self.doc["listeners"][name]

    def text(self) -> str:
        return json.dumps(self.doc, indent=2) + "\n"

    def write(self, path: Path) -> Path:
        # Write-then-rename: a SIGHUP never sees a half-written file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.text())
        tmp.replace(path)
        return path


# --- the LB process ------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Lb:
    """A running `zonegate lb` process and the ways to talk to it."""

    def __init__(
        self, proc: Proc, path: Path, topo: Topo, zone: str, admin_port: int, listener: str
    ) -> None:
        self.proc = proc
        self.path = path
        self.topo = topo
        self.zone = zone
        self.admin_port = admin_port
        self.listener = listener
        self.engine = "builtin"
        self.state_dir: Path | None = None
        """The haproxy engine's state directory (None with the builtin engine)."""

    # addresses

    def port_of(self, listener: str | None = None) -> int:
        bind = self.topo.listener_doc(listener or self.listener)["bind"]
        return int(bind.rsplit(":", 1)[1])

    @property
    def port(self) -> int:
        return self.port_of()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # data plane

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
        port: int | None = None,
    ) -> Response:
        """One request on a fresh connection (http.client: no redirects, no retries)."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str = "/", **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    # admin

    def admin(self, method: str, path: str, timeout: float = 10.0) -> Response:
        return self.request(method, path, timeout=timeout, port=self.admin_port)

    def status(self) -> dict[str, Any]:
        r = self.admin("GET", "/status")
        assert r.status == 200, r
        return r.json()

    def metrics(self) -> str:
        r = self.admin("GET", "/metrics")
        assert r.status == 200, r
        return r.body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0.0 when absent).

        `name` is the sample name as exported (counters end in `_total`); the labels
        given must all match, others are ignored.
        """
        for sample, value in parse_metrics(self.metrics()):
            sname, slabels = sample
            if sname == name and all(slabels.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def backend(self, pool: str, backend_id: str) -> dict[str, Any]:
        """The /status entry of one backend."""
        for b in self.status()["pools"][pool]["backends"]:
            if b["id"] == backend_id:
                return b
        raise KeyError(f"{pool}/{backend_id}")

    def set_admin(self, pool: str, backend_id: str, action: str) -> None:
        r = self.admin("POST", f"/pools/{pool}/backends/{backend_id}/{action}")
        assert r.status == 200, r

    def wait_backend(
        self,
        pool: str,
        backend_id: str,
        pred: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
    ) -> float:
        """Wait until `pred(status entry)` holds; return the seconds it took."""
        return wait_for(lambda: pred(self.backend(pool, backend_id)), timeout, f"{backend_id}")

    def wait_pool(
        self, pool: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> float:
        return wait_for(lambda: pred(self.status()["pools"][pool]), timeout, pool)

    # process

    def reload(self, topo: Topo | None = None) -> None:
        """Rewrite the topology file (if given) and send SIGHUP."""
        if topo is not None:
            self.topo = topo
            topo.write(self.path)
        self.proc.signal(signal.SIGHUP)

    def write_topology(self, topo: Topo) -> None:
        self.topo = topo
        topo.write(self.path)

    def stop(self) -> int | None:
        return self.proc.stop(timeout=10.0)

    def __enter__(self) -> Self:
        return self

    def problems(self) -> list[str]:
        """Lines of the LB's log that reveal a bug: tracebacks and internal errors.

        HAProxy's own alerts (a config it refused, quoted in the log) are not bugs.
        """
        text = self.proc.stderr()
        return [
            line
            for line in text.splitlines()
            if any(mark in line for mark in _BUG_MARKS) and "[ALERT]" not in line
        ]

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.engine == "builtin":
            self.proc.kill()
        else:
            # HAProxy runs in its own process group: let zonegate stop it.
            self.stop()
        if exc_type is None and self.problems():
            raise AssertionError(f"the LB logged errors:\n{self.proc.stderr()[-6000:]}")


_BUG_MARKS = ("Traceback", "internal error", "Fatal error", "Exception in callback")


def start_lb(
    tmp_path: Path,
    topo: Topo,
    *,
    zone: str = DEFAULT_ZONE,
    workers: int = 1,
    listener: str = "http",
    extra: Sequence[str] = (),
    timeout: float = 20.0,
    admin_port: int | None = None,
    engine: str = "builtin",
) -> Lb:
    """Write `topo` to tmp_path and start `zonegate lb` on it; wait for its ready line.

    When a port picked by `Topo.listener` or here (the admin port, unless given) was
    taken before the LB bound it, the ports are picked again, the file rewritten and
    the LB started again. `engine="haproxy"` runs `--engine haproxy` with its state
    directory in tmp_path (`Lb.state_dir`).
    """
    path = tmp_path / "topology.yaml"
    engine_args: list[str] = []
    state_dir = tmp_path / "lb-state"
    if engine != "builtin":
        engine_args = ["--engine", engine, "--state-dir", str(state_dir)]
    attempts = 0

    def attempt() -> Lb:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            topo.repick_ports()
        topo.write(path)
        admin = admin_port or free_port()
        argv = [
            sys.executable,
            "-m",
            "zonegate",
            "lb",
            str(path),
            "--zone",
            zone,
            "--admin",
            f"127.0.0.1:{admin}",
            "--workers",
            str(workers),
            *engine_args,
            *extra,
        ]
        # bug() raises under pytest, which in a server process would kill a task silently;
        # log instead, and let Lb.__exit__ fail the test on what was logged.
        proc = start_process(argv, LB_READY, timeout=timeout, env={"ZONEGATE_BUG_RAISE": "0"})
        lb = Lb(proc, path, topo, zone, admin, listener)
        lb.engine = engine
        lb.state_dir = state_dir if engine_args else None
        return lb

    return retry_addr_in_use(attempt)


HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


def engines(*skip_haproxy: str) -> list[Any]:
    """Both engines, for `pytest.mark.parametrize("engine", engines())`.

    haproxy is skipped (and says so) when HAProxy is not installed, or when a reason
    is given in `skip_haproxy`: what the test checks that the haproxy engine does
    otherwise (docs/lb.md "Engines" says how).
    """
    marks = [pytest.mark.skipif(HAPROXY is None, reason="HAProxy is not installed")]
    if skip_haproxy:
        marks = [pytest.mark.skip(reason=f"haproxy engine: {skip_haproxy[0]}")]
    return ["builtin", pytest.param("haproxy", marks=marks)]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[tuple[str, dict[str, str]], float]]:
    """The samples of a Prometheus text exposition: ((name, labels), value)."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            out.append(((m.group(1), labels), float(m.group(3))))
    return out


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> float:
    """Poll `pred` every 20 ms until true; return the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout}s")
        time.sleep(0.02)


def backend_requests(b: BackendProc) -> int:
    """The request counter of a backend, read over a direct connection.

    The /stats request itself is counted by the backend after it answers, so two
    readings in a row differ by 1.
    """
    with urllib.request.urlopen(f"{b.url}/stats", timeout=5) as r:
        return int(json.loads(r.read())["requests"])


def backend_post(b: BackendProc, path: str) -> None:
    req = urllib.request.Request(f"{b.url}{path}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def raw_exchange(
    port: int, data: bytes, *, timeout: float = 5.0, read_until_close: bool = True
) -> bytes:
    """Send raw bytes and read what comes back until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close:
                break
        return out


# --- load ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    zones: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    """X-Zonegate-Version values seen on successful responses."""
    elapsed: float = 0.0
    first_failure: str = ""

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def summary(self) -> str:
        rate = self.total / self.elapsed if self.elapsed else 0.0
        return (
            f"{self.total} requests in {self.elapsed:.1f}s ({rate:.0f}/s): {self.ok} ok, "
            f"{self.failed} failed {dict(self.failures)}; by backend {dict(self.backends)}"
        )


class Load:
    """Bounded load: `clients` threads, each one keep-alive connection, GET `path`.

    Stops at `max_requests` in all or after `max_seconds`, whichever comes first (or at
    `stop()`). A response is a success when its status is `expect` (200); anything else
    is a failure counted by kind: "status NNN", or the exception's class name. A failed
    connection is replaced by a new one.
    """

    def __init__(
        self,
        port: int,
        *,
        clients: int = 8,
        path: str = "/",
        method: str = "GET",
        max_requests: int = 1_000_000,
        max_seconds: float = 20.0,
        expect: int = 200,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
        pause: float = 0.0,
    ) -> None:
        self.port = port
        self.clients = clients
        self.path = path
        self.method = method
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.expect = expect
        self.timeout = timeout
        self.headers = headers or {}
        self.pause = pause
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._t0 = 0.0
        self._issued = 0

    def start(self) -> Self:
        self._t0 = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_requests:
                return False
            if time.monotonic() - self._t0 > self.max_seconds:
                return False
            self._issued += 1
            return True

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while self._take():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request(self.method, self.path, headers=self.headers)
                r = conn.getresponse()
                r.read()
                status = r.status
                backend = r.getheader("X-Backend") or "-"
                zone = r.getheader("X-Zone") or "-"
                version = r.getheader("X-Zonegate-Version") or "-"
                closing = r.will_close
                kind = None if status == self.expect else f"status {status}"
                detail = f"status {status} from {backend}: {r.getheader('content-length')}"
            except (OSError, http.client.HTTPException) as e:
                kind = type(e).__name__
                detail = repr(e)
                backend = zone = version = "-"
                status = 0
                closing = True
            with self._lock:
                res = self.result
                res.statuses[status] += 1
                if kind is None:
                    res.ok += 1
                    res.backends[backend] += 1
                    res.zones[zone] += 1
                    res.versions[version] += 1
                else:
                    res.failures[kind] += 1
                    if not res.first_failure:
                        res.first_failure = f"{time.monotonic() - self._t0:.2f}s: {detail}"
            if closing:
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def join(self, timeout: float | None = None) -> LoadResult:
        """Wait for the load to end by its own bounds."""
        end = time.monotonic() + (timeout if timeout is not None else self.max_seconds + 15)
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        self.result.elapsed = time.monotonic() - self._t0
        return self.result

    def stop(self) -> LoadResult:
        self._stop.set()
        return self.join(self.timeout + 5)

    def snapshot(self) -> LoadResult:
        with self._lock:
            r = copy.deepcopy(self.result)
        r.elapsed = time.monotonic() - self._t0
        return r

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_requests(port: int, n: int, *, path: str = "/", clients: int = 4) -> LoadResult:
    """Exactly `n` GETs over `clients` keep-alive connections (bounded by 20 s)."""
    load = Load(port, clients=clients, path=path, max_requests=n, max_seconds=20.0)
    return load.start().join()


# --- a scripted backend --------------------------------------------------------------


class ScriptedBackend:
    """A tiny threaded HTTP/1.1 server that answers canned bytes by path.

    `replies` maps a path (without query) to the exact bytes to send back, or to None
    to close without answering. After a reply the connection stays open for the next
    request unless `close_after` is set. Requests are counted per path in `hits`.
    For backends that must misbehave in ways the demo backend cannot (garbage,
    hop-by-hop fields in responses, bodies on 204).
    """

    def __init__(self, replies: dict[str, bytes | None], *, close_after: bool = False) -> None:
        self.replies = replies
        self.close_after = close_after
        self.hits: Counter[str] = Counter()
        self.heads: list[bytes] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                target = head.split(b" ", 2)[1].decode("latin-1")
                path = target.split("?", 1)[0]
                self.heads.append(head)
                self.hits[path] += 1
                reply = self.replies.get(
                    path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
                )
                if reply is None:
                    return
                conn.sendall(reply)
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread
        except OSError:
            pass
        self.sock.close()
        for c in self._conns:
            c.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
