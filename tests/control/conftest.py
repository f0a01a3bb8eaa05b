"""Fixtures shared by the control-plane tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.control.etcd_cluster import EtcdCluster, ensure_etcd


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A real 3-member etcd cluster on loopback, shared by every etcd test."""
    reason = ensure_etcd()
    if reason is not None:
        pytest.skip(reason)
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as c:
        yield c
