"""Fixtures for the tests in network namespaces: a VRRP lab per test, torn down always.

Every test here needs root (it creates namespaces, veth pairs and a bridge, and runs
nftables); as another user each one is skipped with that reason, and nothing else is
a reason to skip. The lab (`zonegate.lab.vrrplab.VrrpLab`) is a switch namespace with
bridge ``br0``, nodes ``n1``, ``n2``, ``n3`` (10.99.0.1-3, priorities 150/100/50, each
answering probes on UDP 7007 with its name) and a client ``c`` (10.99.0.100); the
VIP is 10.99.0.200. Its namespaces are named ``zgl-<pid>-*``; a session finalizer
deletes any that a failed teardown left behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from zonegate.lab.netns import cleanup, run_prefix
from zonegate.lab.vrrplab import VrrpLab

NOT_ROOT = "needs root: creates network namespaces, veth pairs, a bridge and nftables rules"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netns)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=NOT_ROOT))


@pytest.fixture(scope="session", autouse=True)
def _leftover_namespaces() -> Iterator[None]:
    """Delete namespaces of this run that a failed teardown left (by name prefix)."""
    yield
    if os.geteuid() == 0:
        cleanup(run_prefix())


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[VrrpLab]:
    """A built `VrrpLab` (no VRRP daemon yet); everything is deleted after the test."""
    with VrrpLab(tmp_path) as built:
        yield built


@pytest.fixture
def keepalived() -> str:
    """The keepalived binary; a missing one is a failure (scripts/bootstrap.sh installs it)."""
    exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(exe).exists():
        pytest.fail(
            "keepalived is not installed: run scripts/bootstrap.sh (apt-get install keepalived)"
        )
    return exe


@pytest.fixture
def nft() -> str:
    """The nft binary; a missing one is a failure (scripts/bootstrap.sh installs nftables)."""
    exe = shutil.which("nft") or "/usr/sbin/nft"
    if not Path(exe).exists():
        pytest.fail("nft is not installed: run scripts/bootstrap.sh (apt-get install nftables)")
    return exe
