"""Zone admin states from the control plane over probed health."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zonegate.dns.model import ZoneState
from zonegate.dns.zoneadmin import overlay_admin

UP = ZoneState(up=True, healthy=3, total=3)


def test_all_enabled_returns_the_same_mapping():
    health = {"a": UP, "b": UP}
    assert overlay_admin(health, {"a": "enabled", "b": "enabled"}, 4) is health
    assert overlay_admin(health, {}, 4) is health


def test_drained_zone_is_down_with_the_reason_and_keeps_its_counts():
    health = {"a": UP, "b": UP}
    out = overlay_admin(health, {"a": "drain"}, 7)
    assert out["b"] is UP
    assert not out["a"].up
    assert (out["a"].healthy, out["a"].total) == (3, 3)
    assert out["a"].reason == "admin: drain, control version 7"
    assert health["a"].up  # the input is not changed


def test_disabled_zone_without_probe_state_is_down():
    out = overlay_admin({}, {"c": "disabled"}, 2)
    assert out["c"] == ZoneState(up=False, reason="admin: disabled, control version 2")


def test_probe_reason_is_kept():
    probed = ZoneState(up=False, reason="connect refused")
    out = overlay_admin({"a": probed}, {"a": "disabled"}, 3)
    assert out["a"].reason == "connect refused; admin: disabled, control version 3"


@given(
    st.dictionaries(st.sampled_from("abcd"), st.booleans()),
    st.dictionaries(st.sampled_from("abcde"), st.sampled_from(["enabled", "drain", "disabled"])),
)
def test_a_zone_is_up_only_when_probed_up_and_enabled(probed, admin):
    health = {z: ZoneState(up=up) for z, up in probed.items()}
    out = overlay_admin(health, admin, 1)
    for zone in set(probed) | set(admin):
        expected = probed.get(zone, False) and admin.get(zone, "enabled") == "enabled"
        state = out.get(zone)
        assert (state is not None and state.up) == expected
