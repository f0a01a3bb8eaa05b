"""The VRRP state machine: every RFC 5798 §6.4 transition with explicit time, then FakeLan."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vrrp.fakelan import VIP, FakeLan
from zonegate.vrrp.machine import (
    HANDOFF_INTERVALS,
    AddVips,
    AdvertReceived,
    LinkChanged,
    Machine,
    MachineConfig,
    Notify,
    PriorityChanged,
    Quorum,
    QuorumChanged,
    RemoveVips,
    Report,
    SendAdvert,
    SendGarp,
    Shutdown,
    Startup,
    State,
    Stopped,
    TimerFired,
)
from zonegate.vrrp.packet import Advert

ME = IPv4Address("10.9.0.2")
LOWER_IP = IPv4Address("10.9.0.1")
HIGHER_IP = IPv4Address("10.9.0.3")
T0 = 1000.0
INIT, BACKUP, MASTER, FAULT = State.INITIALIZE, State.BACKUP, State.MASTER, State.FAULT


def cfg(**kw) -> MachineConfig:
    fields = {
        "vrid": 51,
        "priority": 100,
        "advert_interval_cs": 100,
        "vips": (VIP,),
        "primary_ip": ME,
        "garp_count": 5,
        "garp_spacing": 0.05,
    }
    fields.update(kw)
    return MachineConfig(**fields)


def adv(priority: int, interval_cs: int = 100) -> Advert:
    return Advert(51, priority, interval_cs, (VIP.ip,))


def kinds(actions) -> list[type]:
    return [type(a) for a in actions]


def backup(**kw) -> Machine:
    m = Machine(cfg(**kw), T0)
    m.handle(Startup(), T0)
    assert m.state is BACKUP
    return m


def master(**kw) -> Machine:
    m = backup(**kw)
    m.handle(TimerFired(), m.deadline)
    assert m.state is MASTER
    return m


def pair(first: int = 200, second: int = 100, **kw) -> FakeLan:
    """Two started nodes, 10.9.0.1 and 10.9.0.2, 5 s in: 10.9.0.1 (the higher) is master."""
    lan = FakeLan()
    lan.add("10.9.0.1", first, **kw)
    lan.add("10.9.0.2", second, **kw)
    lan.start("10.9.0.1")
    lan.start("10.9.0.2")
    lan.run(5)
    return lan


def started(priorities: list[int]) -> FakeLan:
    """Nodes 10.9.0.1.. with these priorities, all started, 6 s in."""
    lan = FakeLan()
    for i, p in enumerate(priorities):
        lan.add(f"10.9.0.{i + 1}", p)
        lan.start(f"10.9.0.{i + 1}")
    lan.run(6)
    return lan


def sent(actions) -> list[Advert]:
    return [a.advert for a in actions if isinstance(a, SendAdvert)]


# --- timers and parameters (§6.1) -----------------------------------------------------


def test_master_down_interval_and_skew():
    m = backup(priority=100)
    # Skew = (256 - 100) * 1 s / 256; Master_Down_Interval = 3 s + skew.
    assert m.skew_time == pytest.approx(156 / 256)
    assert m.master_down_interval == pytest.approx(3 + 156 / 256)
    assert m.deadline == pytest.approx(T0 + 3 + 156 / 256)


def test_higher_priority_has_shorter_skew():
    assert backup(priority=200).master_down_interval < backup(priority=100).master_down_interval


def test_initialize_has_no_deadline_and_ignores_input():
    m = Machine(cfg(), T0)
    assert m.state is INIT
    assert m.deadline is None
    assert m.handle(AdvertReceived(HIGHER_IP, adv(200)), T0) == []
    assert m.handle(TimerFired(), T0 + 10) == []


# --- Initialize (§6.4.1) --------------------------------------------------------------


def test_startup_goes_backup():
    m = Machine(cfg(), T0)
    actions = m.handle(Startup(), T0)
    assert actions == [Notify(INIT, BACKUP, "startup")]


def test_owner_startup_goes_master_at_once():
    m = Machine(cfg(priority=255), T0)
    actions = m.handle(Startup(), T0)
    assert kinds(actions) == [AddVips, SendGarp, SendAdvert, Notify]
    assert sent(actions)[0].priority == 255
    assert m.state is MASTER
    assert m.deadline == pytest.approx(T0 + 1)


def test_owner_with_startup_delay_waits():
    m = Machine(cfg(priority=255, startup_delay=10.0), T0)
    m.handle(Startup(), T0)
    assert m.state is BACKUP
    assert m.deadline == pytest.approx(T0 + 10)


# --- Backup (§6.4.2) ------------------------------------------------------------------


def test_backup_takes_over_when_master_down_timer_fires():
    m = backup()
    assert m.handle(TimerFired(), m.deadline - 0.001) == []
    actions = m.handle(TimerFired(), m.deadline)
    assert kinds(actions) == [AddVips, SendGarp, SendAdvert, Notify]
    assert actions[0] == AddVips((VIP,))
    assert actions[1] == SendGarp((VIP.ip,), 5, 0.05)
    assert sent(actions)[0] == adv(100)
    assert actions[3].old is BACKUP
    assert actions[3].new is MASTER
    assert m.master_ip == ME


def test_backup_higher_advert_resets_timer_and_learns_interval():
    m = backup(priority=100)
    t = T0 + 2
    assert m.handle(AdvertReceived(HIGHER_IP, adv(200, interval_cs=200)), t) == []
    assert m.master_adver_int_cs == 200
    assert m.master_ip == HIGHER_IP
    # 3 * 2 s + (256 - 100) * 2 s / 256
    assert m.deadline == pytest.approx(t + 6 + 2 * 156 / 256)


def test_backup_equal_advert_resets_timer():
    m = backup(priority=100)
    m.handle(AdvertReceived(LOWER_IP, adv(100)), T0 + 3)
    assert m.deadline == pytest.approx(T0 + 3 + m.master_down_interval)


def test_backup_preempts_lower_master():
    m = backup(priority=100)
    first = m.deadline
    assert m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 1) == []
    assert m.deadline == first  # discarded
    assert kinds(m.handle(TimerFired(), first))[-1] is Notify
    assert m.state is MASTER


def test_backup_without_preempt_keeps_lower_master():
    m = backup(priority=100, preempt=False)
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 1)
    assert m.deadline == pytest.approx(T0 + 1 + m.master_down_interval)
    assert m.master_ip == HIGHER_IP


def test_backup_priority_zero_cuts_timer_to_skew():
    m = backup(priority=100)
    m.handle(AdvertReceived(HIGHER_IP, adv(200)), T0 + 1)
    m.handle(AdvertReceived(HIGHER_IP, adv(0)), T0 + 2)
    assert m.deadline == pytest.approx(T0 + 2 + 156 / 256)
    notify = m.handle(TimerFired(), m.deadline)[-1]
    assert notify == Notify(BACKUP, MASTER, "the master stopped (priority 0)")


def test_preempt_delay_tolerates_lower_master_for_a_while():
    m = backup(priority=100, preempt_delay=5.0)
    for t in (1, 2, 3, 4):
        m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + t)
        assert m.deadline == pytest.approx(T0 + t + m.master_down_interval)
    stuck = m.deadline
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 6)  # 5 s after the first: preempt
    assert m.deadline == stuck
    m.handle(TimerFired(), stuck)
    assert m.state is MASTER


def test_preempt_delay_restarts_when_a_higher_master_is_seen():
    m = backup(priority=100, preempt_delay=5.0)
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 1)
    m.handle(AdvertReceived(HIGHER_IP, adv(150)), T0 + 2)
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 6.5)
    assert m.deadline == pytest.approx(T0 + 6.5 + m.master_down_interval)


def test_startup_delay_forbids_takeover_and_preemption():
    m = Machine(cfg(startup_delay=10.0), T0)
    m.handle(Startup(), T0)
    assert m.deadline == pytest.approx(T0 + 10)
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 8)
    assert m.deadline == pytest.approx(T0 + 8 + m.master_down_interval)
    m.handle(TimerFired(), T0 + 11.7)
    assert m.state is MASTER


def test_startup_delay_without_any_master():
    m = Machine(cfg(startup_delay=10.0), T0)
    m.handle(Startup(), T0)
    assert m.handle(TimerFired(), T0 + 5) == []
    m.handle(TimerFired(), T0 + 10)
    assert m.state is MASTER


def test_backup_shutdown_goes_initialize_silently():
    m = backup()
    actions = m.handle(Shutdown(), T0 + 1)
    assert actions == [Notify(BACKUP, INIT, "shutdown"), Stopped()]
    assert m.deadline is None


# --- Master (§6.4.3) ------------------------------------------------------------------


def test_master_sends_advert_every_interval():
    m = master()
    t = m.deadline
    actions = m.handle(TimerFired(), t)
    assert sent(actions) == [adv(100)]
    assert m.deadline == pytest.approx(t + 1)


def test_master_yields_to_higher_priority():
    m = master()
    t = m.deadline - 0.5
    actions = m.handle(AdvertReceived(LOWER_IP, adv(200, interval_cs=50)), t)
    assert kinds(actions) == [Report, RemoveVips, SendAdvert, Notify]
    assert actions[0].kind == "yield"
    # The winner alone is told, so that it re-announces the VIPs.
    assert actions[2] == SendAdvert(adv(0), to=LOWER_IP)
    assert m.state is BACKUP
    assert m.master_ip == LOWER_IP
    assert m.master_adver_int_cs == 50
    assert m.deadline == pytest.approx(t + 1.5 + 0.5 * 156 / 256)


def test_master_tie_broken_by_higher_address():
    m = master()
    m.handle(AdvertReceived(HIGHER_IP, adv(100)), T0 + 5)
    assert m.state is BACKUP


def test_master_tie_won_against_lower_address():
    m = master()
    actions = m.handle(AdvertReceived(LOWER_IP, adv(100)), T0 + 5)
    assert m.state is MASTER
    assert [a.kind for a in actions if isinstance(a, Report)] == ["split_brain"]
    assert sent(actions) == [adv(100)]


def test_master_answers_priority_zero_with_advert_and_garp():
    m = master()
    actions = m.handle(AdvertReceived(HIGHER_IP, adv(0)), T0 + 5)
    assert kinds(actions) == [SendAdvert, Report, SendGarp]
    assert sent(actions) == [adv(100)]
    assert m.deadline == pytest.approx(T0 + 6)
    assert m.state is MASTER


def test_master_answers_lower_advert_with_advert_and_garp():
    m = master()
    actions = m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 5)
    assert kinds(actions) == [Report, SendAdvert, SendGarp]
    assert actions[0].kind == "split_brain"


def test_master_reannounces_after_competitor_goes_quiet():
    m = master()
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 5)
    m.handle(AdvertReceived(HIGHER_IP, adv(50)), T0 + 6)  # still there: pushed back
    events = []
    t = T0 + 6
    while t < T0 + 9:
        t = m.deadline
        events += m.handle(TimerFired(), t)
    reannounced = [a for a in events if isinstance(a, Report) and a.kind == "reannounce"]
    assert len(reannounced) == 1
    i = events.index(reannounced[0])
    assert isinstance(events[i + 1], SendGarp)


def test_master_shutdown_without_handoff():
    m = master(graceful_handoff=False)
    actions = m.handle(Shutdown(), T0 + 5)
    assert kinds(actions) == [SendAdvert, RemoveVips, Notify, Stopped]
    assert sent(actions)[0].priority == 0
    assert m.state is INIT
    assert m.deadline is None


def test_priority_drop_while_master_advertises_at_once():
    m = master()
    actions = m.handle(PriorityChanged(40), T0 + 4.2)
    assert sent(actions) == [adv(40)]
    assert m.handle(PriorityChanged(60), T0 + 4.3) == []  # a rise waits for the timer


def test_priority_change_changes_backup_skew():
    m = backup(priority=100)
    m.handle(PriorityChanged(200), T0)
    assert m.skew_time == pytest.approx(56 / 256)


def test_priority_out_of_range_is_refused():
    with pytest.raises(ValueError, match="priority"):
        backup().handle(PriorityChanged(0), T0)


# --- gratuitous ARP -------------------------------------------------------------------


def test_garp_second_burst_then_refresh():
    m = master(garp_repeat=5.0, garp_refresh=10.0)
    took_over = T0 + 3 + 156 / 256
    bursts = []
    t = took_over
    while t < took_over + 26:
        t = m.deadline
        bursts += [t for a in m.handle(TimerFired(), t) if isinstance(a, SendGarp)]
    assert bursts == pytest.approx([took_over + 5, took_over + 15, took_over + 25])


def test_garp_off():
    m = backup(garp_count=0)
    actions = m.handle(TimerFired(), m.deadline)
    assert SendGarp not in kinds(actions)


# --- graceful handoff -----------------------------------------------------------------


def test_handoff_keeps_vips_until_backup_announces():
    m = master()
    t = T0 + 10
    actions = m.handle(Shutdown(), t)
    assert kinds(actions) == [SendAdvert, Report]
    assert sent(actions)[0].priority == 0
    assert m.state is MASTER  # still holding the VIPs
    # Priority-0 adverts go on every interval, in case one is lost.
    assert sent(m.handle(TimerFired(), t + 1))[0].priority == 0
    # The others' priority-0 echo does not end it; a real master's advert does.
    assert m.handle(AdvertReceived(HIGHER_IP, adv(0)), t + 1.2) == []
    actions = m.handle(AdvertReceived(HIGHER_IP, adv(90)), t + 1.6)
    assert kinds(actions) == [Report, RemoveVips, Notify, Stopped]
    assert actions[2].new is INIT


def order(actions) -> list[type]:
    """The kinds of the VIP, ARP and advert actions, in order."""
    return [k for k in kinds(actions) if k in (AddVips, SendGarp, SendAdvert)]


def test_handoff_taker_holds_vips_and_arps_before_its_advert():
    """Issue 12 item 17: the taker's advert is what makes the leaving master remove its
    VIPs, so the taker adds them and sends its first ARP before it advertises."""
    m = backup()
    m.handle(AdvertReceived(HIGHER_IP, adv(200)), T0 + 1)
    m.handle(AdvertReceived(HIGHER_IP, adv(0)), T0 + 2)  # the master hands off
    assert m.deadline == pytest.approx(T0 + 2 + m.skew_time)
    actions = m.handle(TimerFired(), m.deadline)
    assert order(actions) == [AddVips, SendGarp, SendAdvert]
    assert sent(actions)[0].priority == 100


@pytest.mark.parametrize("how", ["preempt", "owner", "link_up"])
def test_every_takeover_advertises_after_vips_and_arp(how):
    if how == "preempt":
        m = backup(priority=200)
        m.handle(AdvertReceived(LOWER_IP, adv(100)), T0 + 1)  # discarded: we preempt
        actions = m.handle(TimerFired(), m.deadline)
    elif how == "owner":
        actions = Machine(cfg(priority=255), T0).handle(Startup(), T0)
    else:
        m = Machine(cfg(priority=255), T0)
        m.handle(Startup(), T0)
        m.handle(LinkChanged(False), T0 + 1)
        actions = m.handle(LinkChanged(True), T0 + 2)
    assert order(actions) == [AddVips, SendGarp, SendAdvert]


def test_takeover_without_garp_still_adds_vips_before_the_advert():
    m = backup(garp_count=0)
    assert order(m.handle(TimerFired(), m.deadline)) == [AddVips, SendAdvert]


def test_quorum_pending_master_advertises_without_vips_then_adds_them():
    m = backup(quorum=True)
    assert order(m.handle(TimerFired(), m.deadline)) == [SendAdvert]  # no lease yet
    assert order(m.handle(QuorumChanged(True), m.deadline)) == [AddVips, SendGarp]


def test_handoff_times_out_when_no_backup():
    m = master()
    m.handle(Shutdown(), T0 + 10)
    actions = []
    while m.deadline is not None:
        actions += m.handle(TimerFired(), m.deadline)
    assert isinstance(actions[-1], Stopped)
    assert RemoveVips in kinds(actions)
    stops = [a for a in actions if isinstance(a, Notify)]
    assert stops[0].reason == "handoff timed out"
    assert sum(1 for a in sent(actions)) == HANDOFF_INTERVALS - 1


def test_second_shutdown_ends_handoff_at_once():
    m = master()
    m.handle(Shutdown(), T0 + 10)
    assert kinds(m.handle(Shutdown(), T0 + 10.1)) == [RemoveVips, Notify, Stopped]


# --- quorum -------------------------------------------------------------------------


def test_quorum_master_holds_vips_only_with_lease():
    m = backup(quorum=True)
    actions = m.handle(TimerFired(), m.deadline)
    assert kinds(actions) == [SendAdvert]  # VRRP master, but no VIP yet
    assert m.state is BACKUP
    assert m.wants_lease
    actions = m.handle(QuorumChanged(True), T0 + 4)
    assert kinds(actions) == [Report, AddVips, SendGarp, Notify]
    assert m.state is MASTER
    actions = m.handle(QuorumChanged(False), T0 + 8)
    assert kinds(actions) == [Report, SendAdvert, RemoveVips, Notify]
    assert sent(actions)[0].priority == 1
    assert m.quorum is Quorum.LOST
    assert m.state is BACKUP


def test_quorum_lost_master_is_preempted_and_yields():
    m = backup(quorum=True, priority=150)
    m.handle(TimerFired(), m.deadline)
    m.handle(QuorumChanged(False), T0 + 8)
    # A backup of priority 100 preempts the priority-1 advert and announces itself.
    m.handle(AdvertReceived(LOWER_IP, adv(100)), T0 + 12)
    assert m.role is BACKUP
    assert not m.wants_lease


def test_quorum_event_ignored_when_not_master():
    m = backup(quorum=True)
    assert m.handle(QuorumChanged(True), T0) == []


def test_quorum_event_refused_without_quorum_mode():
    with pytest.raises(ValueError, match="quorum"):
        backup().handle(QuorumChanged(True), T0)


# --- FakeLan: whole groups ----------------------------------------------------------


def test_lan_highest_priority_becomes_the_only_master():
    lan = FakeLan()
    lan.add("10.9.0.1", 100)
    lan.add("10.9.0.2", 200)
    lan.add("10.9.0.3", 150)
    for ip in ("10.9.0.1", "10.9.0.2", "10.9.0.3"):
        lan.start(ip)
    lan.run(10)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    assert [n.ip for n in lan.holders()] == [IPv4Address("10.9.0.2")]
    assert lan.arp_owner == IPv4Address("10.9.0.2")


def test_lan_equal_priorities_highest_address_wins():
    lan = FakeLan()
    for ip in ("10.9.0.5", "10.9.0.9", "10.9.0.7"):
        lan.add(ip, 100)
        lan.start(ip)
    lan.run(10)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.9")]


def test_lan_crash_takeover_within_master_down_interval():
    lan = pair()
    crash_at = lan.now
    lan.crash("10.9.0.1")
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    took = [t for t, _, new in lan.node("10.9.0.2").transitions if new is MASTER][-1]
    assert took - crash_at <= 3 + 156 / 256 + 0.01
    assert lan.vip_reachable()


def test_lan_graceful_stop_with_handoff_has_no_outage():
    lan = pair()
    t = lan.now
    lan.stop("10.9.0.1")
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    assert lan.node("10.9.0.1").stopped
    assert lan.outages(since=t) == 0.0


def test_lan_handoff_vip_answered_at_every_instant():
    """Issue 12 item 17: GARP and advert leave the taker together (same latency); the
    neighbour must point at the taker before the old master hears the advert and
    removes the VIP, not one delivery later."""
    for latency in (0.0, 0.001, 0.01):
        lan = FakeLan(latency=latency)
        lan.add("10.9.0.1", 200)
        lan.add("10.9.0.2", 100)
        lan.start("10.9.0.1")
        lan.start("10.9.0.2")
        lan.run(5)
        t = lan.now
        lan.stop("10.9.0.1")
        lan.run(5)
        assert lan.node("10.9.0.1").stopped
        assert lan.blackouts(since=t) == [], latency


def test_lan_graceful_stop_without_handoff_has_a_gap():
    lan = FakeLan()
    lan.add("10.9.0.1", 200, graceful_handoff=False)
    lan.add("10.9.0.2", 100)
    lan.start("10.9.0.1")
    lan.start("10.9.0.2")
    lan.run(5)
    t = lan.now
    lan.stop("10.9.0.1")
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    gap = lan.outages(since=t)
    assert 0 < gap <= 156 / 256 + 0.01  # Skew_Time of the backup


def test_lan_preemption_when_higher_node_returns():
    lan = FakeLan()
    lan.add("10.9.0.1", 200)
    lan.add("10.9.0.2", 100)
    lan.start("10.9.0.2")
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    lan.start("10.9.0.1")
    lan.run(10)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.1")]
    assert lan.vip_reachable()


def test_lan_split_brain_heals_without_blackhole():
    lan = pair()
    lan.partition("10.9.0.1", "10.9.0.2")
    lan.run(20)
    assert len(lan.masters()) == 2
    lan.heal()
    lan.run(10)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.1")]
    assert lan.vip_reachable()
    assert "reannounce" in {k for _, k, _ in lan.node("10.9.0.1").reports}
    assert "yield" in {k for _, k, _ in lan.node("10.9.0.2").reports}


def test_lan_tracking_moves_vip_to_backup():
    lan = pair(150)
    lan.event("10.9.0.1", PriorityChanged(50))
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]


def test_lan_quorum_at_most_one_holder_in_partition():
    lan = pair(quorum=True)
    lan.event("10.9.0.1", QuorumChanged(True))
    lan.run(1)
    assert [n.ip for n in lan.holders()] == [IPv4Address("10.9.0.1")]
    lan.partition("10.9.0.1", "10.9.0.2")
    lan.run(10)
    # The other side became VRRP master but the lease is taken: it holds nothing.
    assert lan.node("10.9.0.2").machine.wants_lease
    lan.event("10.9.0.2", QuorumChanged(False))
    lan.run(5)
    assert [n.ip for n in lan.holders()] == [IPv4Address("10.9.0.1")]


# --- the link (past the RFC: keepalived's FAULT) ---------------------------------------


LINK_DOWN = "link down (no carrier)"


def test_master_link_down_goes_fault_and_removes_vips():
    m = master()
    actions = m.handle(LinkChanged(False), T0 + 5)
    assert actions == [RemoveVips((VIP,)), Notify(MASTER, FAULT, LINK_DOWN)]
    assert m.state is FAULT
    assert m.deadline is None
    assert m.master_ip is None


def test_backup_link_down_goes_fault_silently():
    m = backup()
    assert m.handle(LinkChanged(False), T0 + 1) == [Notify(BACKUP, FAULT, LINK_DOWN)]
    assert m.deadline is None


def test_fault_ignores_adverts_timers_priority_and_quorum():
    m = backup(quorum=True)
    m.handle(TimerFired(), m.deadline)
    m.handle(QuorumChanged(True), T0 + 4)
    assert m.state is MASTER
    m.handle(LinkChanged(False), T0 + 5)
    assert m.handle(AdvertReceived(LOWER_IP, adv(50)), T0 + 6) == []
    assert m.handle(AdvertReceived(HIGHER_IP, adv(0)), T0 + 6) == []
    assert m.handle(TimerFired(), T0 + 60) == []
    assert m.handle(PriorityChanged(200), T0 + 61) == []
    assert m.handle(QuorumChanged(True), T0 + 62) == []
    assert m.state is FAULT
    assert not m.wants_lease


def test_repeated_link_state_is_no_event():
    m = master()
    assert m.handle(LinkChanged(True), T0 + 5) == []
    m.handle(LinkChanged(False), T0 + 6)
    assert m.handle(LinkChanged(False), T0 + 7) == []


def test_link_up_goes_backup_and_takes_over_after_master_down_interval():
    m = master()
    m.handle(LinkChanged(False), T0 + 5)
    assert m.handle(LinkChanged(True), T0 + 9) == [Notify(FAULT, BACKUP, "link up")]
    assert m.deadline == pytest.approx(T0 + 9 + m.master_down_interval)
    actions = m.handle(TimerFired(), m.deadline)
    assert kinds(actions) == [AddVips, SendGarp, SendAdvert, Notify]
    assert m.state is MASTER


def test_link_up_with_a_master_on_the_link_stays_backup():
    m = master(priority=100)
    m.handle(LinkChanged(False), T0 + 5)
    m.handle(LinkChanged(True), T0 + 9)
    m.handle(AdvertReceived(HIGHER_IP, adv(150)), T0 + 9.5)
    m.handle(TimerFired(), T0 + 9 + m.master_down_interval)
    assert m.state is BACKUP  # the timer was reset by the advert


def test_link_up_preempts_a_lower_master():
    m = master(priority=200)
    m.handle(LinkChanged(False), T0 + 5)
    m.handle(LinkChanged(True), T0 + 9)
    m.handle(AdvertReceived(LOWER_IP, adv(100)), T0 + 9.5)  # discarded: preempt
    m.handle(TimerFired(), m.deadline)
    assert m.state is MASTER


def test_owner_link_up_goes_master_at_once():
    m = Machine(cfg(priority=255), T0)
    m.handle(Startup(), T0)
    m.handle(LinkChanged(False), T0 + 1)
    actions = m.handle(LinkChanged(True), T0 + 2)
    assert kinds(actions) == [AddVips, SendGarp, SendAdvert, Notify]
    assert m.state is MASTER


def test_startup_with_the_link_down_waits_in_fault():
    m = Machine(cfg(), T0)
    assert m.handle(LinkChanged(False), T0) == []  # INITIALIZE: noted only
    assert m.handle(Startup(), T0) == [Notify(INIT, FAULT, "startup with the link down")]
    assert m.deadline is None
    m.handle(LinkChanged(True), T0 + 3)
    assert m.state is BACKUP
    assert m.deadline == pytest.approx(T0 + 3 + m.master_down_interval)


def test_link_down_during_handoff_stops_at_once():
    m = master(graceful_handoff=True)
    m.handle(Shutdown(), T0 + 5)
    assert m.leaving
    actions = m.handle(LinkChanged(False), T0 + 5.5)
    assert kinds(actions) == [RemoveVips, Notify, Stopped]
    assert m.state is INIT


def test_shutdown_in_fault_stops_silently():
    m = master()
    m.handle(LinkChanged(False), T0 + 5)
    assert m.handle(Shutdown(), T0 + 6) == [Notify(FAULT, INIT, "shutdown"), Stopped()]


def test_lan_master_link_down_backup_takes_over_and_master_preempts_back():
    lan = pair()
    down_at = lan.now
    lan.link("10.9.0.1", up=False)
    assert not lan.node("10.9.0.1").holds_vip  # FAULT: no VIP on the dead link
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.2")]
    took = [t for t, _, new in lan.node("10.9.0.2").transitions if new is MASTER][-1]
    assert took - down_at <= 3 + 156 / 256 + 0.01
    assert lan.vip_reachable()
    lan.link("10.9.0.1", up=True)
    lan.run(5)
    assert [n.ip for n in lan.masters()] == [IPv4Address("10.9.0.1")]
    assert [n.ip for n in lan.holders()] == [IPv4Address("10.9.0.1")]
    assert lan.vip_reachable()


# --- properties -----------------------------------------------------------------------

nodes_st = st.lists(st.tuples(st.integers(1, 254), st.floats(0, 5)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(nodes_st)
def test_property_one_master_with_the_highest_priority(nodes):
    lan = FakeLan()
    for i, (priority, _) in enumerate(nodes):
        lan.add(f"10.9.0.{i + 1}", priority)
    order = sorted(range(len(nodes)), key=lambda i: nodes[i][1])
    last = 0.0
    for i in order:
        lan.run(nodes[i][1] - last)
        last = nodes[i][1]
        lan.start(f"10.9.0.{i + 1}")
    lan.run(15)
    masters = lan.masters()
    assert len(masters) == 1
    assert masters[0].machine.priority == max(p for p, _ in nodes)
    assert len(lan.holders()) == 1
    assert lan.vip_reachable()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 254), min_size=1, max_size=5))
def test_property_simultaneous_start_ties_go_to_highest_address(priorities):
    lan = FakeLan()
    for i, p in enumerate(priorities):
        lan.add(f"10.9.0.{i + 1}", p)
    for i in range(len(priorities)):
        lan.start(f"10.9.0.{i + 1}")
    lan.run(15)
    best = max(range(len(priorities)), key=lambda i: (priorities[i], i))
    assert [n.ip for n in lan.masters()] == [IPv4Address(f"10.9.0.{best + 1}")]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 254), min_size=2, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.floats(0, 8)), max_size=4),
)
def test_property_after_any_partition_heal_one_master_and_vip_reachable(priorities, cuts):
    lan = started(priorities)
    n = len(priorities)
    for a, b, wait in cuts:
        if a % n != b % n:
            lan.partition(f"10.9.0.{a % n + 1}", f"10.9.0.{b % n + 1}")
        lan.run(wait)
    lan.heal()
    lan.run(15)
    masters = lan.masters()
    assert len(masters) == 1
    assert masters[0].machine.priority == max(priorities)
    assert len(lan.holders()) == 1
    assert lan.vip_reachable()


def test_vips_config_needs_an_address():
    with pytest.raises(ValueError, match="VIP"):
        cfg(vips=())


def test_interface_vips_keep_prefix():
    m = master(vips=(IPv4Interface("10.9.0.100/24"), IPv4Interface("10.9.0.101/32")))
    assert sent(m.handle(TimerFired(), m.deadline))[0].addresses == (
        IPv4Address("10.9.0.100"),
        IPv4Address("10.9.0.101"),
    )


def test_quorum_handoff_keeps_the_lease_and_drops_vips_if_it_is_lost():
    m = backup(quorum=True)
    m.handle(TimerFired(), m.deadline)
    m.handle(QuorumChanged(True), T0 + 4)
    m.handle(Shutdown(), T0 + 5)
    assert m.state is MASTER
    assert m.wants_lease  # renewed until the VIPs are gone
    actions = m.handle(QuorumChanged(False), T0 + 6)
    assert kinds(actions) == [RemoveVips, Notify, Stopped]
    assert not m.wants_lease


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 254), min_size=2, max_size=4),
    st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.floats(0, 6)), max_size=6),
)
def test_property_after_link_flaps_one_master_with_a_link_and_the_highest_priority(
    priorities, flaps
):
    """Whatever links go down and up, once they settle the highest-priority node with a
    carrier is the only master, the only VIP holder, and the neighbour reaches it."""
    lan = started(priorities)
    n = len(priorities)
    for who, up, wait in flaps:
        lan.link(f"10.9.0.{who % n + 1}", up)
        lan.run(wait)
    lan.run(15)
    alive = [i for i in range(n) if IPv4Address(f"10.9.0.{i + 1}") not in lan.no_carrier]
    holders = lan.holders()
    if not alive:
        assert holders == []
        return
    masters = lan.masters()
    assert len(masters) == 1
    assert masters[0].machine.priority == max(priorities[i] for i in alive)
    assert [h.ip for h in holders] == [masters[0].ip]
    assert lan.vip_reachable()
