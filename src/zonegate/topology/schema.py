"""The topology file, one pydantic model per YAML section.

Every model forbids unknown keys and is frozen. Each field documents its default and
range; an invalid value is an error, never silently replaced by a default.
Cross-references (a pool's zone exists, backup pools form no cycle, split ranges tile)
are checked by `topology.validate`, which runs after this schema pass.

Section ownership: `zones` (vrrp, dns), `pools` (balance, health), `listeners` (lb),
`dns` (dns, httpdns), `split` (control, client).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from zonegate.topology.types import (
    Address,
    Duration,
    HashKey,
    HashKeySpec,
    StatusCodes,
    parse_hash_key,
    parse_status_range,
)

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Share = Annotated[float, Field(ge=0.0, le=1.0)]

Balance = Literal["random", "round_robin", "weighted", "hash", "least_conn", "least_load"]
BALANCE_ALGORITHMS: tuple[str, ...] = get_args(Balance)


class Model(BaseModel):
    """Base: unknown keys are errors, values are immutable, types are strict.

    Strict because YAML already types its scalars: `weight: true` or `retries: "3"` is
    a mistake to report, not a value to coerce (lax pydantic would take them as 1 and 3).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


IpText = Annotated[str, Field(pattern=r"^[0-9A-Fa-f:.]{2,45}$")]
"""An IPv4 or IPv6 address literal (checked as an address by topology.validate)."""


class ZoneHealthCheck(Model):
    """How the GSLB (dns, httpdns) decides that a zone can take users."""

    type: Literal["lb_status", "tcp", "http"] = "lb_status"
    """lb_status: GET the zone LB's admin /status (healthy backends, capacity, sessions).
    tcp / http: a check of `address` (default: the zone's first VIP on port 80), for
    zones served by a load balancer other than zonegate."""
    address: Address | None = None
    path: Annotated[str, Field(pattern=r"^/[^\s]*$")] = "/"
    interval: Duration = Field(default=1.0, gt=0)
    timeout: Duration = Field(default=0.5, gt=0)
    up_share: Share = 0.5
    """lb_status: the zone is up while at least this share of its pools' backends is
    available (gdnsd's up_thresh), so one dying backend does not flap the zone."""
    rise: Annotated[int, Field(ge=1, le=100)] = 1
    fall: Annotated[int, Field(ge=1, le=100)] = 2


class Zone(Model):
    """A datacenter or cloud zone."""

    region: Name | None = None
    """Region the zone serves best (used by GSLB topology policy). Default: none."""
    lb_admin: Address | None = None
    """Admin endpoint of this zone's `zonegate lb` (metrics, status, drain). Default: none;
    `zonegate lb --admin` overrides it."""
    vips: list[IpText] = []
    """Addresses users reach this zone at (IPv4 and IPv6); the GSLB answers them."""
    weight: Annotated[int, Field(ge=0, le=10000)] = 100
    """Site weight for the GSLB `weight` policy; 0 takes the zone out of weighted picks."""
    capacity: Annotated[int, Field(ge=1)] | None = None
    """Sessions (in-flight requests) the zone can hold, for the GSLB `capacity` policy.
    Default: what the zone's LB reports in /status (sum of pool capacities), if any."""
    health: ZoneHealthCheck = ZoneHealthCheck()
    lb_engine: Literal["builtin", "haproxy"] = "builtin"
    """What moves the bytes of this zone's `zonegate lb`: builtin (the Python proxy, no
    external program) or haproxy (HAProxy driven by zonegate). `zonegate lb --engine`
    overrides it; `zonegate check` refuses settings the engine cannot honour."""


class ActiveCheck(Model):
    """Active health check run against every backend of a pool."""

    type: Literal["tcp", "http"] = "tcp"
    """tcp: connect succeeds. http: GET `path` answers a status in `expect_status`."""
    path: Annotated[str, Field(pattern=r"^/[^\s]*$")] = "/"
    host: Annotated[str, Field(pattern=r"^[A-Za-z0-9.:\[\]_-]{1,255}$")] | None = None
    """Host header of the HTTP check. Default: the backend address."""
    expect_status: StatusCodes = parse_status_range("200-399")
    expect_body: str | None = None
    """A substring the first 64 KiB of the body must contain. Default: none."""
    interval: Duration = Field(default=1.0, gt=0)
    timeout: Duration = Field(default=1.0, gt=0)
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive successes that bring a down backend up."""
    fall: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that take an up backend down."""


class PassiveCheck(Model):
    """Outlier ejection from live traffic (connect failures, resets, 5xx answers)."""

    consecutive_failures: Annotated[int, Field(ge=0, le=1000)] = 5
    """Failures in a row that eject a backend; 0 disables passive ejection."""
    consecutive_5xx: bool = True
    """Whether 5xx answers count as failures (connect errors and resets always do)."""
    base_ejection: Duration = Field(default=5.0, gt=0)
    """First ejection time; doubles with each ejection in a row, up to max_ejection."""
    max_ejection: Duration = Field(default=300.0, gt=0)
    max_ejected_percent: Annotated[int, Field(ge=0, le=100)] = 50
    """Never eject more than this share of a pool's backends at once."""


class Health(Model):
    """How a pool decides which backends are healthy."""

    active: ActiveCheck | None = ActiveCheck()
    """Active checks; null disables them (backends are then up unless ejected)."""
    passive: PassiveCheck = PassiveCheck()
    slow_start: Duration = Field(default=0.0, ge=0)
    """A backend that comes back ramps its weight from 10% to 100% over this time."""


class Backend(Model):
    """One server of a pool."""

    address: Address
    name: Name | None = None
    """Default: the address."""
    weight: Annotated[int, Field(ge=0, le=10000)] = 1
    state: Literal["enabled", "drain", "disabled"] = "enabled"
    """Admin state: drain takes no new requests but finishes in-flight ones."""

    @property
    def id(self) -> str:
        return self.name or str(self.address)


class PoolTimeouts(Model):
    connect: Duration = Field(default=1.0, gt=0)
    """Time to open a TCP connection to a backend."""
    read: Duration = Field(default=30.0, gt=0)
    """Longest silence from a backend while a response is expected (504 before the
    first byte, connection closed after)."""


class Pool(Model):
    """A set of backends in one zone, with a balancing algorithm and health checks."""

    zone: Name
    backends: Annotated[list[Backend], Field(min_length=1)]
    balance: Balance = "weighted"
    hash_key: HashKeySpec = parse_hash_key("client_ip")
    """For `balance: hash`: client_ip, header:NAME, cookie:NAME or query:NAME."""
    hash_balance_factor: Annotated[float, Field(ge=1.0, le=10.0)] = 1.25
    """Bounded loads: no backend takes more than this factor times the mean in-flight."""
    health: Health = Health()
    backup: Name | None = None
    """Pool (usually in another zone) that takes traffic this pool cannot serve."""
    overprovisioning: Annotated[float, Field(ge=1.0, le=10.0)] = 1.4
    """Spill starts when healthy share x overprovisioning < 1 (Envoy's factor)."""
    panic_threshold: Share = 0.5
    """Below this healthy share, with no backup able to help, use every backend."""
    capacity: Annotated[int, Field(ge=1)] | None = None
    """In-flight requests above which new ones spill to the backup. Default: unlimited."""
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    timeouts: PoolTimeouts = PoolTimeouts()
    keepalive: Annotated[int, Field(ge=0, le=10000)] = 128
    """Idle upstream connections kept per backend."""
    keepalive_timeout: Duration = Field(default=60.0, gt=0)


class Route(Model):
    """Sends requests for a Host (and path prefix) to a pool."""

    host: str | None = None
    """Exact host, or '*.example.test' for any subdomain; null matches any host."""
    path_prefix: Annotated[str, Field(pattern=r"^/")] = "/"
    pool: Name


class ListenerTimeouts(Model):
    header: Duration = Field(default=10.0, gt=0)
    """Total time to receive a request's line and headers (slowloris defence)."""
    client_idle: Duration = Field(default=60.0, gt=0)
    """Idle keep-alive time, and longest silence while a request body is read."""
    total: Duration | None = None
    """Optional cap on a whole request/response exchange. Default: none."""


class ListenerLimits(Model):
    header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 16384
    """Request header block size; larger gets 431."""
    request_line_bytes: Annotated[int, Field(ge=256, le=1 << 20)] = 8192
    """Request line size; larger gets 414."""
    max_connections: Annotated[int, Field(ge=1)] = 20000


Alpn = Literal["h2", "http/1.1"]


class ListenerTls(Model):
    """TLS termination on a listener (haproxy engine only)."""

    certificate: Annotated[str, Field(min_length=1)]
    """PEM file with the certificate chain (server certificate first)."""
    key: Annotated[str, Field(min_length=1)]
    """PEM file with the certificate's private key."""
    alpn: Annotated[list[Alpn], Field(min_length=1)] = ["h2", "http/1.1"]
    """Protocols offered by ALPN, in order of preference."""


class Listener(Model):
    """A socket `zonegate lb` accepts on, with its routes."""

    zone: Name
    bind: Address
    protocol: Literal["http", "tcp"] = "http"
    """http: L7 reverse proxy. tcp: L4 proxy to the single route's pool."""
    routes: Annotated[list[Route], Field(min_length=1)]
    timeouts: ListenerTimeouts = ListenerTimeouts()
    limits: ListenerLimits = ListenerLimits()
    forwarded_headers: bool = True
    """Add X-Forwarded-For, X-Forwarded-Proto and Via."""
    version_header: str | None = "X-Zonegate-Version"
    """Response header carrying the config version; null disables it."""
    tls: ListenerTls | None = None
    """Terminate TLS with this certificate (haproxy engine only). Default: plain TCP."""


class SplitZone(Model):
    """One zone's share of a domain: hash(DeviceID) % sharding in [lower, upper)."""

    lower: Annotated[int, Field(ge=0)]
    upper: Annotated[int, Field(ge=0)]
    domain: str


class SplitMap(Model):
    """A domain's traffic split over zones."""

    sharding: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    zones: Annotated[dict[Name, SplitZone], Field(min_length=1)]


DnsName = Annotated[str, Field(min_length=1, max_length=254)]
"""A DNS name; relative names in `dns.domains.*.records` are under the domain, '@' is
the domain itself. Checked as a DNS name by topology.validate."""

GslbMethod = Literal[
    "topology",
    "weight",
    "ip_weight",
    "capacity",
    "available_sessions",
    "active_servers",
    "rtt",
    "admin",
    "least_selected",
    "round_robin",
    "all",
]
"""GSLB load-balancing methods; see docs/dns.md for what each keeps or orders."""


class Soa(Model):
    mname: DnsName | None = None
    """Primary name server. Default: the first of `ns`."""
    rname: DnsName = "hostmaster"
    """Mailbox of the zone's admin as a name (hostmaster = hostmaster.DOMAIN)."""
    refresh: Duration = 3600.0
    retry: Duration = 600.0
    expire: Duration = 604800.0
    minimum: Duration = 60.0
    """Negative-caching TTL (RFC 2308)."""


class StaticRecord(Model):
    """One static resource record."""

    type: Literal["A", "AAAA", "CNAME", "TXT", "NS", "MX"]
    value: str
    """A/AAAA: an address; CNAME/NS: a name; TXT: the text; MX: 'PREFERENCE NAME'."""
    ttl: Duration | None = None
    """Default: the domain's ttl."""


class GslbRecord(Model):
    """A name whose answer is decided per query by the GSLB policy chain.

    The chain: health (drop zones that cannot take users) -> `preferred` methods; if they
    leave no zone, `alternate` (on the zones health kept); if that leaves none too, every
    zone health kept. `fallback` applies only when health keeps no zone. Each is a list
    of methods applied in order, each keeping or ordering the candidates it receives
    (dns.policy; docs/dns.md "GSLB policy").
    """

    zones: list[Name] = []
    """Candidate zones (their `vips`). Default: every zone with VIPs."""
    preferred: Annotated[list[GslbMethod], Field(min_length=1)] = ["topology", "weight"]
    alternate: list[GslbMethod] = ["weight"]
    fallback: Literal["all", "none", "addresses"] = "all"
    """When every zone is down: answer all candidates (the default: better than
    nothing), NXDOMAIN-free NODATA (none), or `fallback_addresses`."""
    fallback_addresses: list[IpText] = []
    answers: Annotated[int, Field(ge=1, le=16)] = 1
    """Addresses per answer (from the chosen zones, in order)."""
    ttl: Duration = 30.0
    changing_ttl: Duration = 5.0
    """TTL while a candidate zone's health is changing, and of fallback answers, so
    resolvers come back sooner (never longer than `ttl`)."""
    ecs_scope: Annotated[int, Field(ge=0, le=32)] = 24
    """EDNS Client Subnet scope prefix returned for IPv4 clients (RFC 7871 §7.2)."""
    ecs_scope_v6: Annotated[int, Field(ge=0, le=128)] = 56
    cname: DnsName | None = None
    """Answer a CNAME to this next-level GSLB name instead of addresses. Relative to
    the domain unless it ends with '.' or already ends with the domain."""
    admin_order: list[Name] = []
    """Zone order for the `admin` method."""
    capacity_threshold: Share = 0.9
    """`capacity` drops a zone whose sessions / capacity exceeds this."""
    ip_weights: dict[IpText, Annotated[int, Field(ge=0, le=10000)]] = {}
    """Per-address weights for `ip_weight` (default 1 each)."""


class DnsDomain(Model):
    """A DNS zone zonegate dns is authoritative for."""

    ns: Annotated[list[DnsName], Field(min_length=1)]
    soa: Soa = Soa()
    ttl: Duration = 300.0
    records: dict[DnsName, list[StaticRecord]] = {}
    gslb: dict[DnsName, GslbRecord] = {}


class Region(Model):
    """Clients of a region, and the zones that serve it best (in order)."""

    prefixes: list[Annotated[str, Field(pattern=r"^[0-9A-Fa-f:.]+/\d{1,3}$")]] = []
    """Client networks (CIDR) of this region; longest prefix match across regions."""
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = []
    """ISO country codes mapped to this region through the MaxMind database."""
    zones: list[Name] = []
    """Preferred zones for this region. Default: the zones whose `region` is this one."""


class HttpdnsAccount(Model):
    """An HTTPDNS account for signed requests."""

    secret: Annotated[str, Field(min_length=16)]
    """HMAC-SHA256 key; at least 16 characters."""


class Dns(Model):
    """The GSLB: authoritative DNS and HTTPDNS over one policy engine."""

    listen: Address | None = None
    """Where `zonegate dns` answers (UDP and TCP). `--listen` overrides it."""
    admin: Address | None = None
    """Admin endpoint: /metrics, /status, /explain."""
    httpdns_listen: Address | None = None
    """Where `zonegate httpdns` answers. `--listen` overrides it."""
    domains: dict[DnsName, DnsDomain] = {}
    regions: dict[Name, Region] = {}
    default_region: Name | None = None
    """Region of clients that match no prefix (nor a country). Default: none: the
    topology method fails for them, and the chain goes on with `alternate`."""
    geoip_db: str | None = None
    """Path to a MaxMind GeoLite2/GeoIP2 Country database (optional)."""
    trusted_proxies: list[Annotated[str, Field(pattern=r"^[0-9A-Fa-f:.]+/\d{1,3}$")]] = []
    """httpdns: peers whose X-Forwarded-For is believed for the client IP."""
    accounts: dict[Name, HttpdnsAccount] = {}
    """httpdns signed mode: requests must carry account, expiry and signature."""
    require_signature: bool = False
    signature_max_validity: Duration = Field(default=3600.0, gt=0)
    """httpdns: how far in the future a signed request's `expiry` may lie (default 1 h):
    a signature is a bearer token, so one "valid for 10 years" is refused (403)."""
    rate_limit: Annotated[int, Field(ge=0)] = 0
    """httpdns: requests per second per client IP (0: unlimited)."""
    rrl: Annotated[int, Field(ge=0)] = 0
    """dns: response rate limit, responses per second per client /24 (/56) and answer
    (0: off); over the limit every `rrl_slip`-th answer is sent truncated, the rest dropped."""
    rrl_slip: Annotated[int, Field(ge=0, le=10)] = 2
    tcp_max_connections: Annotated[int, Field(ge=1)] = 1000
    tcp_idle: Duration = Field(default=10.0, gt=0)


class VrrpGarp(Model):
    """Gratuitous ARPs a new master sends for its VIPs (docs/vrrp.md)."""

    count: Annotated[int, Field(ge=0, le=100)] = 5
    """ARPs per burst, for each VIP (keepalived: 5); 0 sends none."""
    spacing: Duration = Field(default=0.05, ge=0, le=10.0)
    """Time between the ARPs of a burst."""
    repeat: Duration = Field(default=5.0, ge=0)
    """A second burst this long after takeover (keepalived's garp_master_delay); 0: none."""
    refresh: Duration = Field(default=10.0, ge=0)
    """Then a burst this often while master, for neighbours that missed the first; 0: none."""


class VrrpTrack(Model):
    """A check that lowers the priority by `weight` while it fails (docs/vrrp.md)."""

    type: Literal["lb", "interface", "command"]
    """lb: GET /healthz of a `zonegate lb` admin endpoint answers 200. interface: the
    link `name` is up and running. command: `command` (run by /bin/sh) exits 0."""
    weight: Annotated[int, Field(ge=0, le=254)]
    address: Address | None = None
    """lb: the admin endpoint. Default: the zone's `lb_admin`."""
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")] | None = None
    """interface: the interface name."""
    command: Annotated[str, Field(min_length=1)] | None = None
    """command: a shell command line."""
    interval: Duration = Field(default=1.0, gt=0)
    timeout: Duration | None = Field(default=None, gt=0)
    """Longest wait for one probe. Default: `interval`."""
    rise: Annotated[int, Field(ge=1, le=100)] = 2
    """Passed probes in a row that bring a failed check back."""
    fall: Annotated[int, Field(ge=1, le=100)] = 2
    """Failed probes in a row that fail the check."""


class VrrpQuorum(Model):
    """At-most-one mode: hold the VIPs only while holding a control-plane lease."""

    control: Annotated[list[Annotated[str, Field(pattern=r"^https?://\S+$")]], Field(min_length=1)]
    """Control plane URLs, tried in order."""
    lease_ttl: Duration = Field(default=3.0, gt=0)
    """Lease lifetime; renewed every lease_ttl / 3. At most 10s (the control plane's
    limit, which is also how long it refuses new holders after it starts)."""
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """Environment variable holding an operator token. Default: none (open API)."""
    lease: Name | None = None
    """Lease name. Default: `vrrp-ZONE-VRID`."""


class VrrpInstance(Model):
    """One node of a VRRPv3 virtual router (`zonegate vrrp FILE --instance NAME`)."""

    zone: Name
    """The zone whose VIPs this virtual router holds."""
    interface: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")]
    """Adverts are sent on it and the VIPs are added to it."""
    vrid: Annotated[int, Field(ge=1, le=255)]
    """Virtual router id, the same on every node of the group."""
    priority: Annotated[int, Field(ge=1, le=255)] = 100
    """1-254; 255 only for the address owner."""
    advert_interval: Duration = 1.0
    """10ms to 40.95s, in whole centiseconds (RFC 5798's Max Adver Int)."""
    preempt: bool = True
    preempt_delay: Duration = Field(default=0.0, ge=0)
    """Tolerate a lower-priority master this long before preempting it."""
    startup_delay: Duration = Field(default=0.0, ge=0)
    """Stay Backup this long after start: no takeover, no preemption."""
    vips: list[str] = []
    """IPv4 addresses with an optional prefix length (10.9.0.100/24). Default: the
    zone's IPv4 `vips`, as /32."""
    unicast_peers: list[IpText] = []
    """Send adverts to these IPv4 addresses instead of multicast 224.0.0.18."""
    source: IpText | None = None
    """Source address of adverts. Default: the interface's first IPv4 address."""
    garp: VrrpGarp = VrrpGarp()
    graceful_handoff: bool = True
    """On a graceful stop, keep the VIPs until a backup announces itself master."""
    admin: Address | None = None
    """/status and /metrics. Default: none; `--admin` overrides it."""
    notify: Annotated[str, Field(min_length=1)] | None = None
    """A command run as `notify STATE INSTANCE` on each state change."""
    track: list[VrrpTrack] = []
    quorum: VrrpQuorum | None = None


class Vrrp(Model):
    """The VRRPv3 agents (`zonegate vrrp`): one instance per LB node."""

    instances: dict[Name, VrrpInstance] = {}


class Topology(Model):
    """The whole topology file."""

    zones: Annotated[dict[Name, Zone], Field(min_length=1)]
    pools: dict[Name, Pool] = {}
    listeners: dict[Name, Listener] = {}
    dns: Dns = Dns()
    split: dict[str, SplitMap] = {}
    vrrp: Vrrp = Vrrp()


__all__ = [
    "BALANCE_ALGORITHMS",
    "ActiveCheck",
    "Backend",
    "HashKey",
    "Health",
    "Listener",
    "ListenerLimits",
    "ListenerTimeouts",
    "ListenerTls",
    "PassiveCheck",
    "Pool",
    "PoolTimeouts",
    "Route",
    "SplitMap",
    "SplitZone",
    "Topology",
    "Zone",
]
