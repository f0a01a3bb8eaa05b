"""The VRRPv3 state machine (RFC 5798 §6), sans-IO: events and `now` in, actions out.

Theory of operation
-------------------
One `Machine` is one virtual router (VRID) on one node. It never reads the clock and
never touches a socket: the agent passes every event with the current monotonic time
to `handle`, executes the actions it returns in order, and calls
`handle(TimerFired(), now)` when `now` reaches `deadline`.

RFC roles and transitions (§6.4), with this implementation's additions in brackets::

                      Startup, priority 255
           ┌────────────────────────────────────────────────┐
           │                                                ▼
      INITIALIZE ── Startup ──► BACKUP ── Master_Down_Timer ──► MASTER
           ▲                     │  ▲   [after startup_delay]   │  │
           │    Shutdown         │  └── higher advert, or ──────┘  │
           ├─────────────────────┘      equal and higher address   │
           │                                                       │
           └──── Shutdown: advert with priority 0, VIPs removed ───┘
                 [graceful_handoff: VIPs kept until another node
                  announces itself master, at most HANDOFF_INTERVALS]

BACKUP (§6.4.2) learns Master_Adver_Interval from the master's adverts and runs
`Master_Down_Timer = 3 * Master_Adver_Interval + Skew_Time`, where `Skew_Time =
(256 - Priority) * Master_Adver_Interval / 256`, so the highest-priority backup
fires first. An advert with priority 0 (the master stops) cuts the timer to
Skew_Time. With preempt on, an advert of lower priority than ours is ignored, so our
timer fires and we take over; `preempt_delay` (keepalived's) first lets such a
master stay for that long, and `startup_delay` forbids any takeover for that long
after Startup (a booting node waits for its services).

MASTER (§6.4.3) sends an advert every Advertisement_Interval. It yields (goes BACKUP)
to an advert with a higher priority, or an equal one from a higher primary address.
On a priority-0 advert it answers at once with its own advert.

Past the RFC:

- A lower-priority advert while MASTER is a competing master (split brain, or a
  heal): it is reported, answered at once with an advert and a gratuitous ARP burst
  (as keepalived does, so the other side yields and neighbours point at us), and once
  the competitor has been silent for 1.5 of its intervals (it yielded) we send the
  burst again, in case its last ARPs overtook ours. No VIP is left blackholed.
- Gratuitous ARP: a burst of `garp_count` on takeover, again `garp_repeat` later
  (keepalived's garp_master_delay, 5 s), then every `garp_refresh` while master.
- Graceful handoff: on Shutdown a master keeps its VIPs and sends priority-0
  adverts (every interval, in case one is lost) until another node's advert with a
  non-zero priority shows it is master, or HANDOFF_INTERVALS intervals have passed.
- Takeover order: a node becoming master returns AddVips, then SendGarp, then its
  first SendAdvert (the RFC sends the advert first). That advert is what makes a
  handing-off master remove its VIPs, so by then the taker answers for them and its
  first ARP (sent at once by the agent) is on the wire ahead of the advert: the
  address is answered at every instant (issue 12 item 17).
- Effective priority: `PriorityChanged` (from tracking) changes the priority we
  advertise and compare; a master whose priority drops advertises at once.
- Link state (keepalived's FAULT): when the interface loses its carrier the machine
  goes to FAULT from BACKUP or MASTER: a master removes its VIPs (they would be
  unreachable, and must not come back with the link while another node has taken
  over), nothing is sent and adverts are ignored. When the carrier returns it goes
  BACKUP, as at Startup, and takes over only after Master_Down_Interval without a
  better master (preempting a lower one as usual). A master that loses its link while
  handing off stops at once.
- Quorum (at-most-one, optional): a MASTER holds its VIPs only while the agent
  confirms a lease (`QuorumChanged(True)`). Until the first confirmation it is
  *pending*: it advertises but holds no VIP and reports "Backup". When the lease is
  lost it drops its VIPs and advertises priority 1, so a preempting backup that can
  reach the control plane takes over. See docs/vrrp.md for the trade-off.

The reported `state` is MASTER only while VIPs are held: VRRP role MASTER, and the
lease held in quorum mode. VIP, ARP and Notify actions follow changes of `state`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from zonegate.vrrp.packet import MAX_ADVER_INT_CS, PRIORITY_OWNER, PRIORITY_STOP, Advert

ADVERT_DOWN_COUNT = 3  # RFC 5798 §6.1: Master_Down_Interval = 3 * Master_Adver_Interval + skew
SKEW_DIVISOR = 256  # RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256
HANDOFF_INTERVALS = 4
"""Graceful handoff: longest wait, in advert intervals, for a backup to announce itself.
A backup takes over Skew_Time (< 1 interval) after our priority-0 advert."""
REANNOUNCE_FACTOR = 1.5
"""A competing master silent for this many of its intervals has yielded: ARP again."""
PRIORITY_NO_QUORUM = 1
"""What a master without its lease advertises, so that any preempting backup takes over."""


class State(enum.Enum):
    """VRRP states (RFC 5798 §6.4); the value is the name in logs and /status."""

    INITIALIZE = "Initialize"
    BACKUP = "Backup"
    MASTER = "Master"
    FAULT = "Fault"
    """Past the RFC (keepalived's FAULT): the link has no carrier; no VIPs, no adverts."""


class Quorum(enum.Enum):
    """The lease of a MASTER in quorum mode."""

    PENDING = "pending"
    """Became master; the first lease confirmation has not come yet."""
    HELD = "held"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """What a machine needs of the configuration.

    Attributes:
        vrid: Virtual router id, 1-255.
        priority: Configured priority, 1-255 (255: address owner).
        advert_interval_cs: Advertisement_Interval in centiseconds, 1-4095.
        vips: The virtual addresses (with the prefix length they are added with).
        primary_ip: Our address on the link, the adverts' source; breaks ties.
        preempt: Whether a higher-priority backup takes over from a lower master.
        preempt_delay: Seconds a lower master is tolerated before preempting it.
        startup_delay: Seconds after Startup before any takeover.
        garp_count: Gratuitous ARPs per burst (0: none).
        garp_spacing: Seconds between the ARPs of a burst.
        garp_repeat: Seconds after takeover of the second burst (0: none).
        garp_refresh: Seconds between bursts while master afterwards (0: none).
        graceful_handoff: Keep the VIPs at Shutdown until another master announces.
        quorum: Hold VIPs only while the agent confirms a lease.
    """

    vrid: int
    priority: int
    advert_interval_cs: int
    vips: tuple[IPv4Interface, ...]
    primary_ip: IPv4Address
    preempt: bool = True
    preempt_delay: float = 0.0
    startup_delay: float = 0.0
    garp_count: int = 5
    garp_spacing: float = 0.05
    garp_repeat: float = 5.0
    garp_refresh: float = 10.0
    graceful_handoff: bool = True
    quorum: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid must be 1-255, got {self.vrid}")
        if not 1 <= self.priority <= PRIORITY_OWNER:
            raise ValueError(f"priority must be 1-255, got {self.priority}")
        if not 1 <= self.advert_interval_cs <= MAX_ADVER_INT_CS:
            raise ValueError(f"advert interval must be 1-4095 cs, got {self.advert_interval_cs}")
        if not self.vips:
            raise ValueError("a virtual router needs at least one VIP")


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Startup:
    """The agent is ready (RFC 5798 §6.4.1 Startup event)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop (RFC 5798 §6.4 Shutdown event); a second one ends a handoff at once."""


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """A decoded, valid advert of our VRID from `src` (never our own)."""

    src: IPv4Address
    advert: Advert


@dataclass(frozen=True, slots=True)
class TimerFired:
    """`now` reached `Machine.deadline`."""


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """Tracking changed the effective priority (1-255)."""

    priority: int


@dataclass(frozen=True, slots=True)
class QuorumChanged:
    """Quorum mode: the lease was confirmed (True) or not confirmed in time (False)."""

    held: bool


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The link of the VRRP interface lost (False) or regained (True) its carrier."""

    up: bool


Event = (
    Startup | Shutdown | AdvertReceived | TimerFired | PriorityChanged | QuorumChanged | LinkChanged
)


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send this advert: to `to` when set, else multicast (or to each unicast peer)."""

    advert: Advert
    to: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class AddVips:
    """Add the addresses to the interface."""

    vips: tuple[IPv4Interface, ...]


@dataclass(frozen=True, slots=True)
class RemoveVips:
    """Remove the addresses from the interface."""

    vips: tuple[IPv4Interface, ...]


@dataclass(frozen=True, slots=True)
class SendGarp:
    """Send `count` gratuitous ARPs for each address, `spacing` seconds apart."""

    addresses: tuple[IPv4Address, ...]
    count: int
    spacing: float


@dataclass(frozen=True, slots=True)
class Notify:
    """The reported state changed: log it, count it, run the notify hook."""

    old: State
    new: State
    reason: str


@dataclass(frozen=True, slots=True)
class Report:
    """Something to log and count that is not a transition.

    Kinds: "split_brain" (a lower master's advert while master), "yield" (we gave
    mastership to a higher advert), "reannounce" (ARPs after a competitor yielded),
    "handoff" (a handoff started or ended), "quorum" (lease confirmed or lost).
    """

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """Shutdown is complete: the agent may exit."""


Action = SendAdvert | AddVips | RemoveVips | SendGarp | Notify | Report | Stopped


@dataclass(slots=True)
class _Timers:
    down: float | None = None  # Master_Down_Timer (BACKUP)
    adver: float | None = None  # Adver_Timer (MASTER)
    garp: float | None = None  # next ARP burst while master
    reannounce: float | None = None  # ARP burst after a competitor yields
    handoff: float | None = None  # end of the graceful handoff wait

    def clear(self) -> None:
        self.down = self.adver = self.garp = self.reannounce = self.handoff = None


@dataclass(slots=True)
class _Out:
    actions: list[Action] = field(default_factory=list)
    reason: str = ""
    stopped: bool = False
    announce: bool = False  # we became master: advertise after the VIP and ARP actions


class Machine:
    """One VRRPv3 virtual router. See the module docstring.

    Args:
        cfg: The configuration.
        now: Monotonic seconds at creation; the machine starts in INITIALIZE and
            waits for `Startup`.
    """

    def __init__(self, cfg: MachineConfig, now: float) -> None:
        self.cfg = cfg
        self.created = now
        self.role = State.INITIALIZE
        self.priority = cfg.priority
        """Effective priority (configured, lowered by tracking)."""
        self.master_adver_int_cs = cfg.advert_interval_cs
        self.master_ip: IPv4Address | None = None
        """The current master as far as we know (us when MASTER)."""
        self.quorum = Quorum.PENDING
        self.leaving = False
        self.link_up = True
        """Whether the interface has carrier (`LinkChanged`); down: FAULT."""
        self._startup_end = now
        self._lower_since: float | None = None
        self._master_stopped = False
        self._t = _Timers()

    # --- views -------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The reported state: MASTER only while the VIPs are (to be) held."""
        if self.role is State.MASTER and self.cfg.quorum and self.quorum is not Quorum.HELD:
            return State.BACKUP
        return self.role

    @property
    def advert_priority(self) -> int:
        """The priority we advertise and compare with others' adverts."""
        if self.leaving:
            return PRIORITY_STOP
        if self.cfg.quorum and self.role is State.MASTER and self.quorum is Quorum.LOST:
            return PRIORITY_NO_QUORUM
        return self.priority

    @property
    def wants_lease(self) -> bool:
        """Quorum mode: whether the agent should acquire or renew the lease."""
        return self.cfg.quorum and self.role is State.MASTER

    @property
    def skew_time(self) -> float:
        """Skew_Time in seconds (RFC 5798 §6.1)."""
        return (SKEW_DIVISOR - self.priority) * self.master_adver_int_cs / SKEW_DIVISOR / 100

    @property
    def master_down_interval(self) -> float:
        """Master_Down_Interval in seconds (RFC 5798 §6.1)."""
        return ADVERT_DOWN_COUNT * self.master_adver_int_cs / 100 + self.skew_time

    @property
    def deadline(self) -> float | None:
        """When to call `handle(TimerFired(), now)`; None when no timer runs."""
        t = self._t
        if self.role is State.BACKUP:
            times = [t.down]
        elif self.role is State.MASTER:
            times = [t.adver, t.garp, t.reannounce, t.handoff]
        else:
            return None
        running = [x for x in times if x is not None]
        return min(running) if running else None

    # --- input -------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Process one event at monotonic time `now`.

        Args:
            event: What happened.
            now: Monotonic seconds; never earlier than a previous call's.

        Returns:
            Actions to execute in order.

        Raises:
            ValueError: A priority out of 1-255, or QuorumChanged without quorum mode.
        """
        before = self.state
        out = _Out()
        if isinstance(event, Startup):
            self._startup(now, out)
        elif isinstance(event, AdvertReceived):
            self._advert(event.src, event.advert, now, out)
        elif isinstance(event, TimerFired):
            self._timer(now, out)
        elif isinstance(event, Shutdown):
            self._shutdown(now, out)
        elif isinstance(event, PriorityChanged):
            self._priority(event.priority, now, out)
        elif isinstance(event, QuorumChanged):
            self._quorum(event.held, now, out)
        elif isinstance(event, LinkChanged):
            self._link(event.up, now, out)
        after = self.state
        if before is not after:
            self._state_changed(before, after, now, out)
        if out.announce:
            # After AddVips and the first ARP: our advert ends a graceful handoff (the
            # old master removes its VIPs when it hears it), so the address must be
            # answered here, and neighbours told, first (issue 12 item 17).
            out.actions.append(self._advert_action(now))
        if before is not after:
            out.actions.append(Notify(before, after, out.reason))
        if out.stopped:
            out.actions.append(Stopped())
        return out.actions

    # --- transitions -------------------------------------------------------------

    def _startup(self, now: float, out: _Out) -> None:
        if self.role is not State.INITIALIZE or self.leaving:
            return
        self._startup_end = now + self.cfg.startup_delay
        self._lower_since = None
        if not self.link_up:
            out.reason = "startup with the link down"
            self._become_fault()
        elif self.priority == PRIORITY_OWNER and self.cfg.startup_delay == 0:
            out.reason = "address owner (priority 255) at startup"
            self._become_master(now, out)  # RFC 5798 §6.4.1
        else:
            out.reason = "startup"
            self._become_backup(self.cfg.advert_interval_cs, None, now)

    def _become_backup(self, adver_int_cs: int, master: IPv4Address | None, now: float) -> None:
        self.role = State.BACKUP
        self._t.clear()
        self.quorum = Quorum.PENDING
        self.master_adver_int_cs = adver_int_cs
        self.master_ip = master
        self._master_stopped = False
        self._t.down = max(now + self.master_down_interval, self._startup_end)

    def _become_fault(self) -> None:
        self.role = State.FAULT
        self._t.clear()
        self.quorum = Quorum.PENDING
        self.master_ip = None
        self._master_stopped = False
        self._lower_since = None

    def _become_master(self, now: float, out: _Out) -> None:
        self.role = State.MASTER
        self._t.clear()
        self.quorum = Quorum.PENDING
        self.master_adver_int_cs = self.cfg.advert_interval_cs
        self.master_ip = self.cfg.primary_ip
        self._lower_since = None
        out.announce = True  # `handle` sends the advert after the VIP and ARP actions
        self._t.adver = now + self.cfg.advert_interval_cs / 100

    def _send_advert(self, now: float, out: _Out) -> None:
        out.actions.append(self._advert_action(now))

    def _advert_action(self, now: float) -> SendAdvert:
        cfg = self.cfg
        advert = Advert(
            cfg.vrid,
            self.advert_priority,
            cfg.advert_interval_cs,
            tuple(v.ip for v in cfg.vips),
        )
        self._t.adver = now + cfg.advert_interval_cs / 100
        return SendAdvert(advert)

    def _advert(self, src: IPv4Address, adv: Advert, now: float, out: _Out) -> None:
        if adv.vrid != self.cfg.vrid or src == self.cfg.primary_ip:
            return  # the decoder and the agent already drop these; be safe
        if self.role is State.BACKUP:
            self._backup_advert(src, adv, now, out)
        elif self.role is State.MASTER:
            self._master_advert(src, adv, now, out)

    def _backup_advert(self, src: IPv4Address, adv: Advert, now: float, out: _Out) -> None:
        # RFC 5798 §6.4.2
        if adv.priority == PRIORITY_STOP:
            self.master_ip = src
            self._t.down = max(now + self.skew_time, self._startup_end)
            self._master_stopped = True
            return
        self._master_stopped = False
        if self.cfg.preempt and adv.priority < self.priority:
            if self._lower_since is None:
                self._lower_since = now
            if now >= self._startup_end and now - self._lower_since >= self.cfg.preempt_delay:
                return  # discard: our Master_Down_Timer fires and we preempt
        else:
            self._lower_since = None
        self.master_adver_int_cs = adv.max_adver_int_cs
        self.master_ip = src
        self._t.down = max(now + self.master_down_interval, self._startup_end)

    def _master_advert(self, src: IPv4Address, adv: Advert, now: float, out: _Out) -> None:
        # RFC 5798 §6.4.3
        if self.leaving:
            if adv.priority != PRIORITY_STOP:
                out.actions.append(Report("handoff", f"{src} announced itself master"))
                out.reason = f"handoff to {src}"
                self._finish_stop(out)
            return
        mine = self.advert_priority
        if adv.priority == PRIORITY_STOP:
            # RFC 5798 §6.4.3. Past the RFC: the sender was a master (a competitor that
            # yielded to us after a heal, or one that stops): neighbours may still send
            # it the VIP's traffic, so ARP again.
            self._send_advert(now, out)
            if self.state is State.MASTER:
                out.actions.append(Report("reannounce", f"{src} stopped being master"))
                self._garp(out)
        elif adv.priority > mine or (adv.priority == mine and src > self.cfg.primary_ip):
            why = f"advert from {src} with priority {adv.priority} (ours {mine})"
            out.actions.append(Report("yield", why))
            out.reason = why
            self._become_backup(adv.max_adver_int_cs, src, now)
        else:
            out.actions.append(
                Report(
                    "split_brain",
                    f"advert from {src} with priority {adv.priority} while master "
                    f"(ours {mine}): answering",
                )
            )
            self._send_advert(now, out)
            if self.state is State.MASTER:
                self._garp(out)
                wait = REANNOUNCE_FACTOR * adv.max_adver_int_cs / 100
                self._t.reannounce = now + wait

    def _timer(self, now: float, out: _Out) -> None:
        t = self._t
        if self.role is State.BACKUP:
            if t.down is not None and now >= t.down:
                if now < self._startup_end:
                    t.down = self._startup_end
                    return
                out.reason = (
                    "the master stopped (priority 0)"
                    if self._master_stopped
                    else f"no advert from a master for {self.master_down_interval:g}s"
                )
                self._become_master(now, out)
            return
        if self.role is not State.MASTER:
            return
        if t.handoff is not None and now >= t.handoff:
            out.actions.append(Report("handoff", "no backup announced itself: stopping"))
            out.reason = "handoff timed out"
            self._finish_stop(out)
            return
        if t.adver is not None and now >= t.adver:
            self._send_advert(now, out)
        if t.garp is not None and now >= t.garp:
            self._garp(out)
            t.garp = now + self.cfg.garp_refresh if self.cfg.garp_refresh > 0 else None
        if t.reannounce is not None and now >= t.reannounce:
            t.reannounce = None
            if self.state is State.MASTER:
                out.actions.append(Report("reannounce", "competing master went quiet"))
                self._garp(out)

    def _garp(self, out: _Out) -> None:
        if self.cfg.garp_count > 0:
            out.actions.append(
                SendGarp(
                    tuple(v.ip for v in self.cfg.vips), self.cfg.garp_count, self.cfg.garp_spacing
                )
            )

    def _shutdown(self, now: float, out: _Out) -> None:
        out.reason = "shutdown"
        if self.role is State.MASTER:
            if self.leaving:
                self._finish_stop(out)
                return
            if self.cfg.graceful_handoff and self.state is State.MASTER:
                self.leaving = True
                self._t.garp = self._t.reannounce = None
                self._send_advert(now, out)  # priority 0: a backup takes over after Skew_Time
                interval = self.cfg.advert_interval_cs / 100
                self._t.handoff = now + HANDOFF_INTERVALS * interval
                out.actions.append(Report("handoff", "keeping the VIPs until a backup takes over"))
                return
            self.leaving = True  # advert_priority is now 0
            self._send_advert(now, out)
        self._finish_stop(out)

    def _finish_stop(self, out: _Out) -> None:
        self.role = State.INITIALIZE
        self.leaving = False
        self._t.clear()
        self.master_ip = None
        out.stopped = True

    def _priority(self, priority: int, now: float, out: _Out) -> None:
        if not 1 <= priority <= PRIORITY_OWNER:
            raise ValueError(f"priority must be 1-255, got {priority}")
        old = self.advert_priority
        self.priority = priority
        if self.role is State.MASTER and not self.leaving and self.advert_priority < old:
            self._send_advert(now, out)  # let a higher backup preempt without waiting

    def _quorum(self, held: bool, now: float, out: _Out) -> None:
        if not self.cfg.quorum:
            raise ValueError("QuorumChanged without quorum mode")
        if self.role is not State.MASTER:
            return  # a late answer to a lease request made while master
        if self.leaving:
            if not held:  # at most one: no VIP without the lease, handoff or not
                out.reason = "lease not confirmed in time during the handoff"
                self._finish_stop(out)
            return
        new = Quorum.HELD if held else Quorum.LOST
        if new is self.quorum:
            return
        old_priority = self.advert_priority
        self.quorum = new
        out.reason = "lease confirmed" if held else "lease not confirmed in time"
        out.actions.append(Report("quorum", out.reason))
        if self.advert_priority != old_priority:
            self._send_advert(now, out)  # lost: priority 1, so a backup with quorum may try

    def _link(self, up: bool, now: float, out: _Out) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        if not up:
            if self.role is State.MASTER and self.leaving:
                out.reason = "link down during the handoff"
                self._finish_stop(out)  # nobody can take over through a dead link
            elif self.role in (State.BACKUP, State.MASTER):
                out.reason = "link down (no carrier)"
                self._become_fault()
            return
        if self.role is not State.FAULT:
            return
        if self.priority == PRIORITY_OWNER and now >= self._startup_end:
            out.reason = "link up, address owner (priority 255)"
            self._become_master(now, out)
        else:
            # As at startup: wait Master_Down_Interval for a master before taking over.
            out.reason = "link up"
            self._become_backup(self.cfg.advert_interval_cs, None, now)

    def _state_changed(self, before: State, after: State, now: float, out: _Out) -> None:
        vips = self.cfg.vips
        if after is State.MASTER:
            out.actions.append(AddVips(vips))
            self._garp(out)
            if self.cfg.garp_count > 0 and self.cfg.garp_repeat > 0:
                self._t.garp = now + self.cfg.garp_repeat
            elif self.cfg.garp_count > 0 and self.cfg.garp_refresh > 0:
                self._t.garp = now + self.cfg.garp_refresh
        elif before is State.MASTER:
            out.actions.append(RemoveVips(vips))
            self._t.garp = self._t.reannounce = None
            winner = self.master_ip
            if self.role is State.BACKUP and winner is not None and winner != self.cfg.primary_ip:
                # We yielded. The winner may never have heard us (a partition just
                # healed, and its first advert made us yield): tell it, with a priority-0
                # advert sent to it alone, so it re-announces the VIPs with ARP
                # (no backup sees it, so none cuts its timer to Skew_Time).
                notice = Advert(
                    self.cfg.vrid,
                    PRIORITY_STOP,
                    self.cfg.advert_interval_cs,
                    tuple(v.ip for v in vips),
                )
                out.actions.append(SendAdvert(notice, to=winner))


__all__ = [
    "ADVERT_DOWN_COUNT",
    "HANDOFF_INTERVALS",
    "PRIORITY_NO_QUORUM",
    "Action",
    "AddVips",
    "AdvertReceived",
    "Event",
    "LinkChanged",
    "Machine",
    "MachineConfig",
    "Notify",
    "PriorityChanged",
    "Quorum",
    "QuorumChanged",
    "RemoveVips",
    "Report",
    "SendAdvert",
    "SendGarp",
    "Shutdown",
    "Startup",
    "State",
    "Stopped",
    "TimerFired",
]
