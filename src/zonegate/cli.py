"""The `zonegate` command: one subcommand per component."""

from __future__ import annotations

import argparse
import os
import sys

from zonegate import __version__
from zonegate.topology.types import parse_duration, parse_hostport


def _hostport(text: str):  # type: ignore[no-untyped-def]
    try:
        return parse_hostport(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_control_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--control, --control-cache, --control-token: shared by lb, dns and httpdns."""
    parser.add_argument(
        "--control",
        action="append",
        default=[],
        metavar="URL",
        help=f"follow this control plane (repeatable: tried in order); {what}",
    )
    parser.add_argument(
        "--control-cache",
        default=None,
        metavar="PATH",
        help="last good control state, used when no control plane answers at start",
    )
    parser.add_argument(
        "--control-token",
        default=os.environ.get("ZONEGATE_TOKEN"),
        help="read token for the control plane (default: $ZONEGATE_TOKEN)",
    )


def _control_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from zonegate.control.follow import ControlOptions

    return ControlOptions(tuple(args.control), args.control_cache, args.control_token)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zonegate",
        description="High-availability multi-datacenter access layer: "
        "load balancer, health checks, failover between zones.",
    )
    p.add_argument("--version", action="version", version=f"zonegate {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("check", help="validate a topology file (every error with file:line:col)")
    c.add_argument("file", help="topology YAML file")

    lb = sub.add_parser(
        "lb",
        help="run the L7 load balancer of one zone",
        description="Serve the HTTP listeners of one zone of the topology: reverse proxy with "
        "health checks, balancing, retries and a backup pool. SIGHUP reloads the file, "
        "SIGTERM drains and stops.",
    )
    lb.add_argument("file", help="topology YAML file")
    lb.add_argument("--zone", required=True, help="zone whose listeners to serve")
    lb.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the ports with SO_REUSEPORT (default 1)",
    )
    lb.add_argument(
        "--admin",
        type=_hostport,
        default=None,
        help="admin endpoint HOST:PORT (default: the zone's lb_admin)",
    )
    lb.add_argument(
        "--drain-timeout",
        type=_duration,
        default=30.0,
        help="longest wait for in-flight requests at stop (default 30s)",
    )
    lb.add_argument(
        "--engine",
        choices=["builtin", "haproxy"],
        default=None,
        help="data plane: builtin (Python) or haproxy (HAProxy driven by zonegate); "
        "default: the zone's lb_engine, else builtin",
    )
    lb.add_argument(
        "--print-config",
        action="store_true",
        help="haproxy engine: print the haproxy.cfg zonegate would run, and exit",
    )
    lb.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="haproxy engine: where haproxy.cfg, its sockets and state files live "
        "(default: a per-LB directory under $XDG_RUNTIME_DIR, else /tmp)",
    )
    _add_control_arguments(lb, "responses carry its version")
    lb.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    dns = sub.add_parser(
        "dns",
        help="run the GSLB authoritative DNS server (or explain an answer)",
        description="Authoritative DNS for the topology's dns.domains over UDP and TCP; GSLB "
        "names are answered by the policy chain from live zone health. "
        "`zonegate dns explain FILE NAME --client IP` shows why a client gets its answer "
        "(`zonegate dns explain --help`).",
    )
    dns.add_argument("file", help="topology YAML file (or 'explain')")
    dns.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    for flag in ("--client", "--subnet", "--device-id", "--type"):
        # `zonegate dns [OPTIONS] explain ...` is parsed again by build_explain_parser.
        dns.add_argument(flag, default=None, help=argparse.SUPPRESS)
    dns.add_argument(
        "--listen", default=None, help="HOST:PORT for UDP and TCP (default: dns.listen)"
    )
    dns.add_argument("--admin", default=None, help="admin HOST:PORT (default: dns.admin)")
    _add_control_arguments(dns, "zones it sets to drain or disabled are not answered")
    dns.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    hd = sub.add_parser(
        "httpdns",
        help="run the HTTPDNS service",
        description="GSLB answers over HTTP with the real client IP and the DeviceID: "
        "GET /d?host=NAME[,NAME]&device_id=ID&type=A|AAAA.",
    )
    hd.add_argument("file", help="topology YAML file")
    hd.add_argument("--listen", default=None, help="HOST:PORT (default: dns.httpdns_listen)")
    _add_control_arguments(hd, "its split maps and zone admin states are used")
    hd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    ctrl = sub.add_parser(
        "control",
        help="run the traffic-split control plane (REST API, versioned, audited)",
        description="Holds the desired state (split maps, zone and backend admin states) "
        "with a version, an append-only audit history and rollback. API reference: "
        "docs/control.md.",
    )
    ctrl.add_argument("file", help="topology YAML file")
    ctrl.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="sqlite:///PATH (default: DATA_DIR/control.db), memory://, or "
        "etcd://HOST:PORT,HOST:PORT[/PREFIX] (an etcd v3 cluster; docs/control.md#etcd)",
    )
    ctrl.add_argument(
        "--listen", default="127.0.0.1:9900", help="HOST:PORT (default 127.0.0.1:9900)"
    )
    ctrl.add_argument(
        "--data-dir", default=".", help="where the default SQLite store lives (default .)"
    )
    ctrl.add_argument("--tokens", default=None, help="token file: {tokens: [{name, role, sha256}]}")
    ctrl.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    ctl = sub.add_parser(
        "ctl",
        help="drive the control plane: state, history, cutover, restore, split, drain, rollback",
        add_help=False,
    )
    ctl.add_argument("args", nargs=argparse.REMAINDER)

    vr = sub.add_parser(
        "vrrp",
        help="run the VRRPv3 agent that moves a zone's VIP between LB nodes (root)",
        description="Run one node of a VRRPv3 (RFC 5798) virtual router, interoperable with "
        "keepalived: the node with the highest effective priority holds the zone's VIPs on "
        "its interface and announces them with gratuitous ARP; a backup takes over within "
        "3 x advert_interval + skew when the master dies. Tracked checks (the local "
        "`zonegate lb`, a link, a command) lower the priority; a node whose own link "
        "loses its carrier goes to Fault and drops the VIPs; optional quorum mode holds "
        "the VIPs only with a control-plane lease. SIGTERM stops gracefully (priority-0 "
        "advert; with graceful_handoff the VIPs stay until a backup is master); SIGKILL is "
        "a crash. `zonegate vrrp status --admin HOST:PORT` prints a running agent's state. "
        "Reference: docs/vrrp.md.",
    )
    vr.add_argument("file", help="topology YAML file with a vrrp section (or 'status')")
    vr.add_argument("--instance", default=None, help="vrrp.instances entry to run (this node)")
    vr.add_argument(
        "--admin",
        type=_hostport,
        default=None,
        help="admin endpoint HOST:PORT for /status and /metrics (default: the instance's admin)",
    )
    vr.add_argument(
        "--interface", default=None, help="interface to run on (default: the instance's)"
    )
    vr.add_argument(
        "--priority", type=int, default=None, help="priority 1-255 (default: the instance's)"
    )
    vr.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    be = sub.add_parser(
        "backends",
        help="start demo HTTP backends on the addresses a topology's pools name",
        description="Start one demo backend (zonegate.lab.backend: GET / answers `hello from "
        "NAME`, /healthz answers ok) on every backend address of the file's pools, of zone Z "
        "only with --zone, so the file's LBs have something to serve. Runs until Ctrl-C or "
        "SIGTERM. For trying a topology out; replace them with your services.",
    )
    be.add_argument("file", help="topology file")
    be.add_argument("--zone", default=None, help="only the pools of this zone (default: all)")

    d = sub.add_parser(
        "demo",
        help="run the example topology on loopback with demo backends and break it",
        description="Start examples/two-zones.yaml on loopback (six demo backends, two LBs, "
        "dns, httpdns, control), send SDK traffic, break backends, an LB and a zone, and "
        "report what clients saw (report.json, report.html). No root needed. docs/demo.md.",
    )
    d.add_argument(
        "--topology", default=None, help="topology file (default: the packaged two-zone example)"
    )
    d.add_argument("--quick", action="store_true", help="shorter steps (for tests)")
    d.add_argument(
        "--engine",
        choices=["builtin", "haproxy"],
        default=None,
        help="run every zone's LB on this engine (default: each zone's lb_engine, else builtin)",
    )
    d.add_argument(
        "--report",
        default=None,
        help="write the JSON report here and the HTML one next to it (default: the run dir)",
    )

    lab = sub.add_parser(
        "lab",
        help="the two-zone access layer in network namespaces with VRRP VIPs, and its drills",
        description="Root. `up` builds both zones on real addresses in network namespaces (LB "
        "node pairs sharing each zone VIP through zonegate vrrp, backends, dns, httpdns, "
        "control, a client); `drill` breaks it under SDK load (backend, VIP master, zone "
        "partition, cut-over) and writes report.json/report.html; `down` removes everything, "
        "also after a failed up. docs/lab.md.",
    )
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="up|drill|down", required=True)
    for name, what in (
        ("up", "create the namespaces and start every process"),
        ("drill", "run the drills under load and report"),
        ("down", "kill every process and delete every namespace of the lab"),
    ):
        lp = lab_sub.add_parser(name, help=what, description=what)
        lp.add_argument(
            "--dir", default="/run/zonegate-lab", help="state, logs, reports (default %(default)s)"
        )
        if name == "up":
            lp.add_argument("--prefix", default="zglab-", help="namespace name prefix")
            lp.add_argument("--advert", default="100ms", help="VRRP advert interval (100ms)")
            lp.add_argument("--dns-port", type=int, default=53, help="GSLB DNS port (53)")
            lp.add_argument("--control-port", type=int, default=9900, help="control port (9900)")
        if name == "down":
            lp.add_argument(
                "--prefix", default=None, help="namespace prefix (default: the state's, zglab-)"
            )
        if name == "drill":
            lp.add_argument("--quick", action="store_true", help="shorter steps (for tests)")
            lp.add_argument(
                "--report", default=None, help="JSON report path (default DIR/report.json)"
            )
    return p


def _vrrp_status_parser() -> argparse.ArgumentParser:
    """`zonegate vrrp status`: its own parser, so that --help describes it, not the agent."""
    p = argparse.ArgumentParser(
        prog="zonegate vrrp status",
        description="Print the state of a running `zonegate vrrp` agent, read from its admin "
        "endpoint (GET /status): state, priorities, VRID, interface, master, VIPs, "
        "transitions, adverts and drops. Exit status 0 when it answered, 1 when not. "
        "Reference: docs/vrrp.md.",
    )
    p.add_argument(
        "--admin",
        type=_hostport,
        default=None,
        metavar="HOST:PORT",
        help="the agent's admin endpoint (its instance's `admin`)",
    )
    return p


def _vrrp_status(argv: list[str]) -> int:
    parser = _vrrp_status_parser()
    args = parser.parse_args(argv)
    if args.admin is None:
        parser.print_usage(sys.stderr)
        print("zonegate vrrp status: --admin HOST:PORT is required", file=sys.stderr)
        return 2
    from zonegate.vrrp.agent import run_status

    return run_status(args.admin)


def build_explain_parser() -> argparse.ArgumentParser:
    """`zonegate dns explain`: its own parser, so that --help describes it."""
    e = argparse.ArgumentParser(
        prog="zonegate dns explain",
        description="Show how `zonegate dns FILE` answers NAME to one client: probe every "
        "zone once (as the server does before it answers), take the zone admin states of "
        "the control plane with --control (as `zonegate dns --control` does), run the GSLB "
        "chain and print each step, then the response. The running server's admin "
        "endpoint answers the same at /explain?name=&client=&subnet=&type=.",
    )
    e.add_argument("file", metavar="FILE", help="topology YAML file")
    e.add_argument("name", metavar="NAME", help="the question name")
    e.add_argument(
        "--client",
        required=True,
        metavar="IP",
        help="the resolver's address (IP/PREFIX: the ECS subnet it sends, at that address)",
    )
    e.add_argument(
        "--subnet",
        default=None,
        metavar="NET",
        help="the EDNS Client Subnet the resolver sends (e.g. 1.2.3.0/24)",
    )
    e.add_argument("--device-id", default=None, help="the DeviceID (HTTPDNS)")
    e.add_argument("--type", default="A", help="query type (default A; AAAA, MX, TXT, ...)")
    _add_control_arguments(e, "its zone admin states (drain, disabled) apply, as in the server")
    e.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return e


def _dns_explain(argv: list[str]) -> int:
    args = build_explain_parser().parse_args(argv)
    from zonegate.dns.server import run_explain
    from zonegate.lb.server import setup_logging

    setup_logging(args.log_level)
    return run_explain(
        args.file,
        args.name,
        args.client,
        args.device_id,
        args.type,
        subnet=args.subnet,
        control=_control_options(args),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["dns", "explain"]:
        return _dns_explain(argv[2:])
    if argv[:1] == ["ctl"]:
        # ctl has its own parser (zonegate.control.ctl); hand it everything, --help too.
        from zonegate.control.ctl import run_ctl

        return run_ctl(argv[1:])
    if argv[:2] == ["vrrp", "status"]:
        return _vrrp_status(argv[2:])
    args = build_parser().parse_args(argv)
    if args.command == "check":
        from zonegate.topology.check import run_check

        return run_check(args.file)
    if args.command == "backends":
        from zonegate.lab.backend import run_backends

        return run_backends(args.file, args.zone)
    if args.command == "lb":
        from zonegate.lb.server import LbOptions, run_lb, setup_logging

        if args.workers < 1:
            print("zonegate lb: --workers must be at least 1", file=sys.stderr)
            return 2
        setup_logging(args.log_level)
        return run_lb(
            LbOptions(
                path=args.file,
                zone=args.zone,
                workers=args.workers,
                admin=args.admin,
                drain_timeout=args.drain_timeout,
                control=_control_options(args),
                engine=args.engine,
                print_config=args.print_config,
                state_dir=args.state_dir,
            )
        )
    if args.command == "dns":
        from zonegate.lb.server import setup_logging

        setup_logging(args.log_level)
        if args.file == "explain":  # `zonegate dns [OPTIONS] explain ...`
            rest = list(argv[1:])
            rest.remove("explain")
            return _dns_explain(rest)
        if args.rest:
            print(f"zonegate dns: unexpected arguments {' '.join(args.rest)}", file=sys.stderr)
            return 2
        from zonegate.dns.server import run_dns

        return run_dns(args.file, args.listen, args.admin, _control_options(args))
    if args.command == "httpdns":
        from zonegate.httpdns.api import run_httpdns
        from zonegate.lb.server import setup_logging

        setup_logging(args.log_level)
        return run_httpdns(args.file, args.listen, control=_control_options(args))
    if args.command == "control":
        from zonegate.control.server import run_control
        from zonegate.lb.server import setup_logging

        setup_logging(args.log_level)
        return run_control(
            args.file,
            store_url=args.store,
            listen=args.listen,
            data_dir=args.data_dir,
            token_file=args.tokens,
        )
    if args.command == "ctl":
        from zonegate.control.ctl import run_ctl

        return run_ctl(args.args)
    if args.command == "vrrp":
        from zonegate.lb.server import setup_logging

        setup_logging(args.log_level)
        if args.file == "status":
            from zonegate.vrrp.agent import run_status

            if args.admin is None:
                print("usage: zonegate vrrp status --admin HOST:PORT", file=sys.stderr)
                return 2
            return run_status(args.admin)
        if not args.instance:
            print("zonegate vrrp: --instance NAME is required", file=sys.stderr)
            return 2
        from zonegate.vrrp.agent import AgentOptions, run_vrrp

        return run_vrrp(
            AgentOptions(
                path=args.file,
                instance=args.instance,
                admin=args.admin,
                interface=args.interface,
                priority=args.priority,
            )
        )
    if args.command == "demo":
        from zonegate.lab.demo import run_demo

        return run_demo(
            topology=args.topology, quick=args.quick, report=args.report, engine=args.engine
        )
    if args.command == "lab":
        from zonegate.lab.lab import run_lab

        return run_lab(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
