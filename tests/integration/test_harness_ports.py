"""The harness survives a port taken between picking it and the server binding it
(issue 12 item 25): `retry_addr_in_use` and `start_lb` pick fresh ports and start again."""

from __future__ import annotations

import contextlib
import socket

import pytest

from tests.integration.lbharness import Topo, start_lb
from tests.peers.processes import ProcessError, addr_in_use, refused_port, retry_addr_in_use


def test_addr_in_use_recognises_the_ways_servers_say_it():
    assert addr_in_use("OSError: [Errno 98] error while attempting to bind: address already in use")
    assert addr_in_use("listen tcp 127.0.0.1:2380: bind: address already in use")
    assert addr_in_use("zonegate lb: cannot listen on 127.0.0.1:8080: EADDRINUSE")
    assert not addr_in_use("connection refused")


def test_retry_addr_in_use_retries_only_a_taken_port():
    calls = []

    def taken_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ProcessError("exited with status 1\n[Errno 98] address already in use")
        return "up"

    assert retry_addr_in_use(taken_twice) == "up"
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise ProcessError("exited with status 1\nbad config")

    calls.clear()
    with pytest.raises(ProcessError, match="bad config"):
        retry_addr_in_use(broken)
    assert len(calls) == 1

    def always_taken() -> None:
        calls.append(1)
        raise RuntimeError("address already in use")

    calls.clear()
    with pytest.raises(RuntimeError):
        retry_addr_in_use(always_taken, attempts=3)
    assert len(calls) == 3


def test_start_lb_moves_off_a_listener_port_taken_after_it_was_picked(tmp_path, backend_factory):
    backend = backend_factory("b1", zone="z1")
    with socket.socket() as thief:
        # What the race looks like: the port `Topo.listener` picked is bound by
        # someone else by the time the LB starts.
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        topo = Topo().pool("web", [backend]).listener("web")
        topo.listener_doc()["bind"] = f"127.0.0.1:{taken}"
        with start_lb(tmp_path, topo) as lb:
            assert lb.port != taken
            response = lb.get("/")
            assert response.status == 200
            assert response.headers["x-backend"] == "b1"


def test_start_lb_keeps_a_port_the_test_chose(tmp_path, backend_factory):
    backend = backend_factory("b1", zone="z1")
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        topo = Topo().pool("web", [backend]).listener("web", port=taken)
        with pytest.raises(ProcessError, match=r"(?i)address already in use"):
            start_lb(tmp_path, topo)


def test_etcd_cluster_starts_again_on_fresh_ports_when_one_was_taken(tmp_path):
    from tests.control.etcd_cluster import EtcdCluster, ensure_etcd

    why = ensure_etcd()
    if why:
        pytest.skip(why)
    cluster = EtcdCluster(tmp_path)
    with socket.socket() as thief:
        # Already taken by someone else: the same race, so the same outcome.
        with contextlib.suppress(OSError):
            thief.bind(("127.0.0.1", cluster.peer_ports[2]))
            thief.listen()
        taken = cluster.peer_ports[2]
        with cluster:
            assert taken not in cluster.peer_ports
            assert all(cluster.healthy(i) for i in range(3))


def test_refused_port_refuses_and_cannot_be_taken():
    port = refused_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with socket.socket() as other, pytest.raises(OSError, match=r"(?i)address already in use"):
        other.bind(("127.0.0.1", port))
