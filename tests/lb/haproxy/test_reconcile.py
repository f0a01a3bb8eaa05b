"""reconcile: the commands it returns close the gap, and only the gap."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonegate.lb.haproxy.model import ServerAdmin, ServerDesired, ServerKey, ServerReported
from zonegate.lb.haproxy.reconcile import plan, reconcile, satisfied


def apply(reported: dict[ServerKey, ServerReported], commands: list[str]):
    """HAProxy's effect of each command on `show servers state`, as 2.6 does it.

    A fake with HAProxy's behaviour (checked against the real one in test_runtime.py):
    `state` sets the admin state exactly, `enable health` is refused without a
    configured check, `health up` makes the server run, except in maintenance, where a
    server is always down.
    """
    state = dict(reported)
    for cmd in commands:
        words = cmd.split()
        if words[:2] == ["set", "server"]:
            be, srv = words[2].split("/", 1)
            key = ServerKey(be, srv)
            cur = state[key]
            if words[3] == "state":
                admin = ServerAdmin(words[4])
                cur = dataclasses.replace(
                    cur, admin=admin, up=cur.up and admin is not ServerAdmin.MAINT
                )
            elif words[3] == "weight":
                cur = dataclasses.replace(cur, weight=int(words[4]))
            elif words[3:5] == ["health", "up"]:
                cur = dataclasses.replace(cur, up=cur.admin is not ServerAdmin.MAINT)
            else:
                raise AssertionError(f"unknown command {cmd!r}")
        elif words[0] in ("enable", "disable") and words[1] == "health":
            be, srv = words[2].split("/", 1)
            key = ServerKey(be, srv)
            cur = state[key]
            if not cur.check_configured:
                raise AssertionError(f"HAProxy refuses {cmd!r}: no check configured")
            cur = dataclasses.replace(cur, check_enabled=words[0] == "enable")
        else:
            raise AssertionError(f"unknown command {cmd!r}")
        state[key] = cur
    return state


names = st.sampled_from(["a", "b", "10.0.0.1:80", "spill:backup:c"])
backends = st.sampled_from(["be_web", "be_api"])
keys = st.builds(ServerKey, backends, names)
admins = st.sampled_from(list(ServerAdmin))
weights = st.integers(0, 256)
desired_st = st.builds(ServerDesired, admin=admins, weight=weights)


@st.composite
def reported_st(draw):
    configured = draw(st.booleans())
    return ServerReported(
        admin=draw(admins),
        weight=draw(weights),
        up=draw(st.booleans()),
        check_enabled=configured and draw(st.booleans()),
        check_configured=configured,
    )


@st.composite
def pairs(draw):
    desired = draw(st.dictionaries(keys, desired_st, max_size=6))
    reported = {k: draw(reported_st()) for k in desired}
    reported.update(draw(st.dictionaries(keys, reported_st(), max_size=3)))
    return desired, reported


@given(pairs())
def test_applying_the_commands_yields_the_desired_state(pair):
    desired, reported = pair
    after = apply(reported, reconcile(desired, reported))
    for key, want in desired.items():
        assert satisfied(want, after[key]), (key, want, after[key])
    # Servers zonegate did not mention are untouched.
    for key in reported.keys() - desired.keys():
        assert after[key] == reported[key]
    assert reconcile(desired, after) == []


@given(st.dictionaries(keys, desired_st, max_size=6))
def test_no_gap_no_commands(desired):
    reported = {
        k: ServerReported(admin=d.admin, weight=d.weight, up=True, check_enabled=True)
        for k, d in desired.items()
    }
    assert reconcile(desired, reported) == []


def test_unknown_server_is_reported_not_commanded():
    known = ServerKey("be_web", "a")
    ghost = ServerKey("be_web", "ghost")
    desired = {
        known: ServerDesired(ServerAdmin.DRAIN, 5),
        ghost: ServerDesired(ServerAdmin.READY, 10),
    }
    reported = {known: ServerReported(ServerAdmin.READY, 10, up=True, check_enabled=True)}
    p = plan(desired, reported)
    assert p.unknown == [ghost]
    assert p.commands == ["set server be_web/a state drain", "set server be_web/a weight 5"]
    assert p.fixes == ["be_web/a: admin ready -> drain, weight 10 -> 5"]


def test_checks_switched_off_by_hand_are_switched_on_again():
    key = ServerKey("be_web", "a")
    off = ServerReported(ServerAdmin.READY, 10, up=True, check_enabled=False)
    p = plan({key: ServerDesired(ServerAdmin.READY, 10)}, {key: off})
    assert p.commands == ["enable health be_web/a"]
    assert p.fixes == ["be_web/a: checks on"]


def test_server_without_check_is_never_asked_to_enable_health():
    key = ServerKey("be_web", "a")
    unchecked = ServerReported(
        ServerAdmin.READY, 10, up=True, check_enabled=False, check_configured=False
    )
    assert reconcile({key: ServerDesired(ServerAdmin.READY, 10)}, {key: unchecked}) == []


@pytest.mark.parametrize(
    ("key", "weight"),
    [
        (ServerKey("be_web", "a"), 257),
        (ServerKey("be_web", "a"), -1),
        (ServerKey("be web", "a"), 1),
        (ServerKey("be_web", "a;shutdown sessions"), 1),
    ],
)
def test_bad_names_and_weights_are_refused(key, weight):
    with pytest.raises(ValueError, match=r"weight|cannot be named"):
        reconcile({key: ServerDesired(ServerAdmin.READY, weight)}, {})
