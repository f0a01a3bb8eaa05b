"""zonegate.lab.probe on loopback: the echo server names itself, the prober sees a switch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.peers.processes import free_port, retry_addr_in_use, start_process

SERVE_READY = r"probe server \S+ listening on 127\.0\.0\.1:(?P<port>\d+)"


def serve(name: str, port: int):
    argv = [sys.executable, "-m", "zonegate.lab.probe", "serve", "--name", name]
    return start_process([*argv, "--listen", f"127.0.0.1:{port}"], SERVE_READY)


def test_prober_measures_an_outage_and_names_the_nodes():
    # `serve --listen` takes ports 1-65535 only: pick one, and pick again if it was taken.
    a = retry_addr_in_use(lambda: serve("a", free_port()))
    assert a.match is not None
    port = int(a.match["port"])
    argv = [sys.executable, "-m", "zonegate.lab.probe", "probe", f"127.0.0.1:{port}"]
    prober = subprocess.Popen(
        [*argv, "--events", "--duration", "20s"], stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(0.5)
        a.kill()
        time.sleep(0.3)
        b = serve("b", port)
        time.sleep(0.5)
        prober.send_signal(signal.SIGTERM)
        out, _ = prober.communicate(timeout=10)
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait()
        a.kill()
        b.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["event"] == "ready"
    summary = lines[-1]
    assert summary["event"] == "summary"
    assert summary["first_node"] == "a"
    assert summary["last_node"] == "b"
    assert summary["per_node"]["a"] > 0
    assert summary["per_node"]["b"] > 0
    # The server was gone for at least the 0.3 s sleep.
    assert summary["longest_outage_ms"] >= 250
    assert [e["node"] for e in lines if e["event"] == "node"] == ["a", "b"]
    assert any(e["event"] == "fail" for e in lines)


def test_prober_stops_at_its_duration():
    argv = [sys.executable, "-m", "zonegate.lab.probe", "probe", "127.0.0.1:9"]
    res = subprocess.run(
        [*argv, "--duration", "300ms", "--interval", "50ms"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["ok"] == 0
    assert summary["probes"] >= 3
    assert summary["last_node"] is None
