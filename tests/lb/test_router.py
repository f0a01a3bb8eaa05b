"""Routing and the spill/panic plan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.lb.router import RouteTable, plan_pool
from zonegate.topology.schema import Route


def table(*routes):
    return RouteTable([Route(**r) for r in routes])


def test_exact_host_then_wildcard_then_any():
    t = table(
        {"host": "api.example.test", "pool": "api"},
        {"host": "*.example.test", "pool": "wild"},
        {"host": "*.deep.example.test", "pool": "deeper"},
        {"pool": "default"},
    )
    assert t.match("api.example.test", b"/") == "api"
    assert t.match("www.example.test", b"/") == "wild"
    assert t.match("x.deep.example.test", b"/") == "deeper"
    assert t.match("other.test", b"/x") == "default"


def test_longest_path_prefix_wins():
    t = table(
        {"host": "a", "path_prefix": "/", "pool": "root"},
        {"host": "a", "path_prefix": "/api", "pool": "api"},
        {"host": "a", "path_prefix": "/api/v2", "pool": "v2"},
    )
    assert t.match("a", b"/") == "root"
    assert t.match("a", b"/api/x") == "api"
    assert t.match("a", b"/api/v2/y") == "v2"


def test_no_match():
    t = table({"host": "a", "path_prefix": "/api", "pool": "api"})
    assert t.match("a", b"/other") is None
    assert t.match("b", b"/api") is None


def test_host_match_falls_through_to_any_when_path_misses():
    t = table({"host": "a", "path_prefix": "/api", "pool": "api"}, {"pool": "default"})
    assert t.match("a", b"/x") == "default"


# Envoy's overprovisioning table: with factor 1.4 a pool keeps all traffic down to ~71%
# healthy, then sheds healthy x 1.4 of it to the backup.
@pytest.mark.parametrize(
    ("healthy", "local"),
    [(1.0, 1.0), (0.8, 1.0), (0.72, 1.0), (0.5, 0.7), (1 / 3, 1.4 / 3), (0.1, 0.14), (0.0, 0.0)],
)
def test_spill_table_with_backup(healthy, local):
    plan = plan_pool(healthy, overprovisioning=1.4, panic_threshold=0.5, backup_share=1.0)
    assert plan.local_share == pytest.approx(local)
    assert not plan.panic


@pytest.mark.parametrize(
    ("healthy", "panic"),
    [(1.0, False), (0.6, False), (0.5, False), (0.49, True), (0.0, True)],
)
def test_panic_without_backup(healthy, panic):
    plan = plan_pool(healthy, overprovisioning=1.4, panic_threshold=0.5, backup_share=None)
    assert plan.panic is panic
    assert plan.local_share == 1.0


def test_dead_backup_means_panic_not_spill():
    plan = plan_pool(0.2, overprovisioning=1.4, panic_threshold=0.5, backup_share=0.0)
    assert plan.panic
    assert plan.local_share == 1.0


def test_rejects_out_of_range_share():
    with pytest.raises(ValueError, match="not in"):
        plan_pool(1.5, overprovisioning=1.4, panic_threshold=0.5, backup_share=None)


@given(
    st.floats(0, 1),
    st.floats(1, 10),
    st.floats(0, 1),
    st.one_of(st.none(), st.floats(0, 1)),
)
def test_plan_invariants(healthy, factor, panic, backup):
    plan = plan_pool(healthy, overprovisioning=factor, panic_threshold=panic, backup_share=backup)
    assert 0.0 <= plan.local_share <= 1.0
    # Traffic only leaves a pool for a backup that can take it.
    if backup is None or backup == 0.0:
        assert plan.local_share == 1.0
    # Panic only when the pool is below its threshold and nothing can help.
    if plan.panic:
        assert healthy < panic
        assert backup is None or backup == 0.0
    # More health never means less local traffic.
    better = plan_pool(
        min(1.0, healthy + 0.1), overprovisioning=factor, panic_threshold=panic, backup_share=backup
    )
    if not plan.panic and not better.panic:
        assert better.local_share >= plan.local_share


def test_all_backends_disabled_is_not_panic():
    plan = plan_pool(
        0.0, overprovisioning=1.4, panic_threshold=0.5, backup_share=None, any_enabled=False
    )
    assert not plan.panic


def test_all_backends_disabled_sends_everything_to_a_live_backup():
    plan = plan_pool(
        0.0, overprovisioning=1.4, panic_threshold=0.5, backup_share=1.0, any_enabled=False
    )
    assert plan.local_share == 0.0


@pytest.mark.parametrize(
    ("healthy", "backup_share", "reason"),
    [
        (0.2, None, "PANIC: healthy 20% < 50%, no backup configured"),
        (0.2, 0.0, "PANIC: healthy 20% < 50%, backup pool pb has no healthy backend"),
        (0.6, None, "healthy 60%, no backup configured"),
        (0.6, 0.0, "healthy 60%, backup pool pb has no healthy backend"),
    ],
)
def test_reason_tells_missing_backup_from_dead_backup(healthy, backup_share, reason):
    plan = plan_pool(
        healthy, overprovisioning=1.4, panic_threshold=0.5, backup_share=backup_share, backup="pb"
    )
    assert plan.reason == reason


def test_all_disabled_reason_names_the_dead_backup():
    plan = plan_pool(
        1.0,
        overprovisioning=1.4,
        panic_threshold=0.5,
        backup_share=0.0,
        any_enabled=False,
        backup="pb",
    )
    assert plan.reason == "no enabled backend, backup pool pb has no healthy backend"
